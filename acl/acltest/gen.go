// Package acltest generates random but realistic policy worlds and packets
// for acl's differential tests and benchmarks. Everything is a pure
// function of a seed.
package acltest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/tabbynet/tabby/acl"
)

// Params shape a generated world.
type Params struct {
	Namespaces int
	// Apps is the number of distinct app labels (pods of an app share
	// labels, as pods of one Deployment do).
	Apps      int
	Endpoints int
	// HostEndpoints are added on top of Endpoints.
	HostEndpoints int
	Policies      int
	// RulesPerPolicy is the mean number of rules per direction.
	RulesPerPolicy int
	// CIDRs is the size of the pool of external CIDRs rules draw from.
	CIDRs int
	// IPv6 gives endpoints an IPv6 address too and rules IPv6 nets.
	IPv6 bool
	// Tiers adds two tiers before the default one.
	Tiers bool
	// Nodes spreads endpoints over node-0..node-(Nodes-1) (0: one node).
	Nodes int
}

// Small is a world small enough for 100k-packet differential runs.
var Small = Params{Namespaces: 3, Apps: 8, Endpoints: 40, HostEndpoints: 2, Policies: 14, RulesPerPolicy: 3, CIDRs: 12, IPv6: true, Tiers: true, Nodes: 2}

// World is a generated state plus the pools its packets draw from.
type World struct {
	acl.State
	// Addrs are interesting addresses: endpoint addresses, CIDR borders
	// and neighbours, and random ones.
	Addrs4, Addrs6 []netip.Addr
	// Ports are interesting port values (rule borders and neighbours).
	Ports []uint16

	// RuleScale source pools.
	podAddrs, borderAddrs, randomAddrs []netip.Addr
}

var (
	appNames  = []string{"web", "api", "db", "cache", "queue", "auth", "search", "batch", "front", "mail", "log", "dns"}
	envs      = []string{"prod", "staging", "dev"}
	tierNames = []string{"frontend", "backend", "data"}
)

func app(i int) string {
	if i < len(appNames) {
		return appNames[i]
	}
	return fmt.Sprintf("app%d", i)
}

// Generate builds a world.
func Generate(seed uint64, p Params) *World {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	w := &World{}
	portSet := map[uint16]bool{0: true, 1: true, 65535: true, 65534: true}
	addPort := func(v uint16) {
		portSet[v] = true
		if v > 0 {
			portSet[v-1] = true
		}
		if v < 65535 {
			portSet[v+1] = true
		}
	}
	if p.Tiers {
		w.Tiers = []acl.Tier{
			{Name: "security", Order: ptr(100.0)},
			{Name: "platform", Order: ptr(200.0), DefaultPass: r.IntN(2) == 0},
		}
	}
	for i := 0; i < p.Namespaces; i++ {
		w.Namespaces = append(w.Namespaces, acl.Namespace{Name: fmt.Sprintf("ns%d", i),
			Labels: map[string]string{"team": fmt.Sprintf("t%d", i%3), "env": envs[i%len(envs)]}})
	}
	// Apps: fixed label sets and named ports per app.
	type appSpec struct {
		labels map[string]string
		ports  []acl.NamedPort
		ns     string
	}
	apps := make([]appSpec, p.Apps)
	for i := range apps {
		l := map[string]string{"app": app(i), "tier": tierNames[r.IntN(len(tierNames))], "env": envs[r.IntN(len(envs))]}
		if r.IntN(3) == 0 {
			l["role"] = "admin"
		}
		var ports []acl.NamedPort
		if r.IntN(2) == 0 {
			ports = append(ports, acl.NamedPort{Name: "http", Protocol: acl.ProtoTCP, Port: []uint16{80, 8080, 8443}[r.IntN(3)]})
		}
		if r.IntN(3) == 0 {
			ports = append(ports, acl.NamedPort{Name: "metrics", Protocol: acl.ProtoTCP, Port: 9090 + uint16(r.IntN(3))})
		}
		if r.IntN(4) == 0 {
			ports = append(ports, acl.NamedPort{Name: "dns", Protocol: acl.ProtoUDP, Port: 53})
		}
		for _, np := range ports {
			addPort(np.Port)
		}
		apps[i] = appSpec{labels: l, ports: ports, ns: fmt.Sprintf("ns%d", r.IntN(max(1, p.Namespaces)))}
	}
	nodes := max(1, p.Nodes)
	for i := 0; i < p.Endpoints; i++ {
		a := apps[r.IntN(len(apps))]
		if r.IntN(8) == 0 {
			a = apps[i%len(apps)]
		}
		l := map[string]string{}
		for k, v := range a.labels {
			l[k] = v
		}
		if r.IntN(10) == 0 {
			l["canary"] = "true"
		}
		ip4 := netip.AddrFrom4([4]byte{10, byte(i >> 14), byte(i >> 6), byte(i<<2 | 1)})
		ep := acl.Endpoint{Name: fmt.Sprintf("pod%d", i), Namespace: a.ns, Node: fmt.Sprintf("node-%d", i%nodes),
			Labels: l, IPs: []netip.Addr{ip4}, Ports: a.ports}
		if p.IPv6 {
			ep.IPs = append(ep.IPs, netip.AddrFrom16([16]byte{0: 0xfd, 1: 0, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}))
		}
		w.Endpoints = append(w.Endpoints, ep)
	}
	for i := 0; i < p.HostEndpoints; i++ {
		ep := acl.Endpoint{Name: fmt.Sprintf("node-%d-eth0", i), Host: true, Node: fmt.Sprintf("node-%d", i%nodes),
			Labels: map[string]string{"node-role": []string{"worker", "master"}[i%2], "host": "true"},
			IPs:    []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 0, byte(10 + i)})}}
		if p.IPv6 {
			ep.IPs = append(ep.IPs, netip.AddrFrom16([16]byte{0: 0xfd, 1: 0xff, 15: byte(10 + i)}))
		}
		w.Endpoints = append(w.Endpoints, ep)
	}
	for _, e := range w.Endpoints {
		for _, a := range e.IPs {
			if a.Is4() {
				w.Addrs4 = append(w.Addrs4, a)
			} else {
				w.Addrs6 = append(w.Addrs6, a)
			}
		}
	}
	// CIDR pool: some covering pod space, some external, /0 and /32.
	var cidrs []string
	for i := 0; i < p.CIDRs; i++ {
		var pf netip.Prefix
		switch r.IntN(6) {
		case 0:
			bits := 8 + r.IntN(25)
			pf = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(2)), byte(r.IntN(256)), byte(r.IntN(256))}), bits).Masked()
		case 1:
			pf = netip.PrefixFrom(netip.AddrFrom4([4]byte{0, 0, 0, 0}), 0)
		case 2:
			if len(w.Addrs4) > 0 {
				pf = netip.PrefixFrom(w.Addrs4[r.IntN(len(w.Addrs4))], 32)
			} else {
				pf = netip.MustParsePrefix("10.0.0.1/32")
			}
		case 3:
			if p.IPv6 {
				bits := []int{0, 8, 64, 120, 128}[r.IntN(5)]
				pf = netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(r.IntN(256)), 14: byte(r.IntN(2))}), bits).Masked()
				break
			}
			fallthrough
		default:
			bits := 8 + r.IntN(25)
			pf = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + r.IntN(200)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}), bits).Masked()
		}
		cidrs = append(cidrs, pf.String())
		first := pf.Addr()
		last := lastAddr(pf)
		for _, a := range []netip.Addr{first, first.Prev(), last, last.Next()} {
			if !a.IsValid() {
				continue
			}
			if a.Is4() {
				w.Addrs4 = append(w.Addrs4, a)
			} else {
				w.Addrs6 = append(w.Addrs6, a)
			}
		}
	}
	for i := 0; i < 20; i++ {
		w.Addrs4 = append(w.Addrs4, netip.AddrFrom4([4]byte{byte(1 + r.IntN(223)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}))
		if p.IPv6 {
			var b [16]byte
			b[0] = 0x20
			for j := 1; j < 16; j++ {
				b[j] = byte(r.IntN(256))
			}
			w.Addrs6 = append(w.Addrs6, netip.AddrFrom16(b))
		}
	}
	g := &policyGen{r: r, w: w, p: p, apps: len(apps), cidrs: cidrs, addPort: addPort}
	for i := 0; i < p.Policies; i++ {
		w.Policies = append(w.Policies, g.policy(i))
	}
	for v := range portSet {
		w.Ports = append(w.Ports, v)
	}
	return w
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	host := len(b)*8 - p.Bits()
	for i := len(b) - 1; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func ptr[T any](v T) *T { return &v }

type policyGen struct {
	r       *rand.Rand
	w       *World
	p       Params
	apps    int
	cidrs   []string
	addPort func(uint16)
}

func (g *policyGen) pick(s []string) string { return s[g.r.IntN(len(s))] }

func (g *policyGen) selector() string {
	r := g.r
	switch r.IntN(12) {
	case 0:
		return ""
	case 1:
		return "all()"
	case 2:
		return fmt.Sprintf("app in {'%s', '%s'}", app(r.IntN(g.apps)), app(r.IntN(g.apps)))
	case 3:
		return "has(role)"
	case 4:
		return "!has(role) && env != 'prod'"
	case 5:
		return fmt.Sprintf("tier == '%s' || canary == 'true'", g.pick(tierNames))
	case 6:
		return fmt.Sprintf("app not in {'%s'}", app(r.IntN(g.apps)))
	case 7:
		return "node-role == 'worker'"
	case 8:
		return "has(host)"
	default:
		return fmt.Sprintf("app == '%s'", app(r.IntN(g.apps)))
	}
}

func (g *policyGen) nsSelector(global bool) string {
	switch g.r.IntN(5) {
	case 0:
		if global {
			return "global()"
		}
		return "all()"
	case 1:
		return "env == 'prod'"
	case 2:
		return fmt.Sprintf("team in {'t%d'}", g.r.IntN(3))
	default:
		return "all()"
	}
}

func (g *policyGen) policy(i int) acl.Policy {
	r := g.r
	p := acl.Policy{Name: fmt.Sprintf("p%d", i), Selector: g.selector()}
	global := r.IntN(3) == 0 || g.p.Namespaces == 0
	if !global {
		p.Namespace = fmt.Sprintf("ns%d", r.IntN(g.p.Namespaces))
	} else if r.IntN(4) == 0 {
		p.NamespaceSelector = g.nsSelector(true)
	}
	if g.p.Tiers {
		p.Tier = []string{"", "", "security", "platform"}[r.IntN(4)]
	}
	switch r.IntN(4) {
	case 0:
	default:
		p.Order = ptr(float64(r.IntN(5) * 10))
	}
	nIn := r.IntN(2*g.p.RulesPerPolicy + 1)
	nEg := r.IntN(2*g.p.RulesPerPolicy + 1)
	switch r.IntN(6) {
	case 0:
		p.Types = []acl.Direction{acl.Ingress}
		nEg = 0
	case 1:
		p.Types = []acl.Direction{acl.Egress}
		nIn = 0
	case 2:
		p.Types = []acl.Direction{acl.Ingress, acl.Egress}
	}
	for j := 0; j < nIn; j++ {
		p.Ingress = append(p.Ingress, g.rule(global))
	}
	for j := 0; j < nEg; j++ {
		p.Egress = append(p.Egress, g.rule(global))
	}
	return p
}

// Rule generates one random rule.
func (g *policyGen) rule(global bool) acl.Rule {
	r := g.r
	var ru acl.Rule
	ru.Action = []acl.Action{acl.Allow, acl.Allow, acl.Allow, acl.Deny, acl.Deny, acl.Pass, acl.Log}[r.IntN(7)]
	switch r.IntN(10) {
	case 0, 1, 2:
	case 3, 4, 5:
		ru.Protocol = acl.ProtoTCP
	case 6, 7:
		ru.Protocol = acl.ProtoUDP
	case 8:
		ru.Protocol = []acl.Protocol{acl.ProtoICMP, acl.ProtoICMPv6}[r.IntN(2)]
	case 9:
		ru.Protocol = acl.ProtoSCTP
	}
	if ru.Protocol == 0 && r.IntN(6) == 0 {
		ru.NotProtocol = []acl.Protocol{acl.ProtoTCP, acl.ProtoUDP, acl.ProtoICMP}[r.IntN(3)]
	}
	if r.IntN(12) == 0 {
		ru.IPVersion = []int{4, 6}[r.IntN(2)]
		if ru.Protocol == acl.ProtoICMP && ru.IPVersion == 6 || ru.Protocol == acl.ProtoICMPv6 && ru.IPVersion == 4 {
			ru.IPVersion = 0
		}
	}
	if ru.Protocol == acl.ProtoICMP || ru.Protocol == acl.ProtoICMPv6 {
		if r.IntN(2) == 0 {
			m := &acl.ICMPMatch{Type: []int{0, 3, 8, 11, 128, 254}[r.IntN(6)]}
			if r.IntN(2) == 0 {
				m.Code = ptr([]int{0, 1, 4, 255}[r.IntN(4)])
			}
			if r.IntN(3) == 0 {
				ru.NotICMP = m
			} else {
				ru.ICMP = m
			}
		}
	}
	for s, side := range []*acl.EntityRule{&ru.Source, &ru.Destination} {
		g.side(side, &ru, global, s == 1)
	}
	return ru
}

func (g *policyGen) side(e *acl.EntityRule, ru *acl.Rule, global, dst bool) {
	r := g.r
	fam := func(c string) bool {
		pf := netip.MustParsePrefix(c)
		return ru.IPVersion == 0 || (ru.IPVersion == 4) == pf.Addr().Is4()
	}
	pickNets := func() []string {
		var out []string
		for k := r.IntN(3) + 1; k > 0; k-- {
			if c := g.cidrs[r.IntN(len(g.cidrs))]; fam(c) {
				out = append(out, c)
			}
		}
		return out
	}
	if len(g.cidrs) > 0 {
		if r.IntN(5) == 0 {
			e.Nets = pickNets()
		}
		if r.IntN(8) == 0 {
			e.NotNets = pickNets()
		}
	}
	if r.IntN(3) == 0 {
		e.Selector = g.selector()
		if e.Selector == "" {
			e.Selector = "all()"
		}
	}
	if r.IntN(6) == 0 {
		e.NamespaceSelector = g.nsSelector(global)
	}
	if r.IntN(8) == 0 {
		e.NotSelector = g.selector()
		if e.NotSelector == "" {
			e.NotSelector = "has(role)"
		}
	}
	hasPorts := ru.Protocol == acl.ProtoTCP || ru.Protocol == acl.ProtoUDP || ru.Protocol == acl.ProtoSCTP
	if !hasPorts {
		return
	}
	// Mostly destination ports.
	if (dst && r.IntN(3) != 0) || (!dst && r.IntN(8) == 0) {
		e.Ports = g.ports()
	}
	if r.IntN(8) == 0 {
		e.NotPorts = g.ports()
	}
}

func (g *policyGen) ports() []acl.Port {
	r := g.r
	var out []acl.Port
	for k := r.IntN(3) + 1; k > 0; k-- {
		switch r.IntN(6) {
		case 0:
			lo := uint16(r.IntN(65536))
			hi := lo + uint16(r.IntN(int(65535-lo)+1))
			g.addPort(lo)
			g.addPort(hi)
			out = append(out, acl.Port{Min: lo, Max: hi})
		case 1:
			out = append(out, acl.Port{Name: []string{"http", "metrics", "dns"}[r.IntN(3)]})
		case 2:
			out = append(out, acl.Port{Min: 1000, Max: 2000})
			g.addPort(1000)
			g.addPort(2000)
		default:
			v := []uint16{22, 53, 80, 443, 8080, 9090, 6379, 5432}[r.IntN(8)]
			g.addPort(v)
			out = append(out, acl.Port{Min: v, Max: v})
		}
	}
	return out
}

// Packets generates n packets between the world's interesting addresses.
func (w *World) Packets(seed uint64, n int) []acl.Packet {
	r := rand.New(rand.NewPCG(seed, ^seed))
	out := make([]acl.Packet, n)
	for i := range out {
		w.Packet(r, &out[i])
	}
	return out
}

// Packet fills p with a random packet.
func (w *World) Packet(r *rand.Rand, p *acl.Packet) {
	*p = acl.Packet{}
	v6 := len(w.Addrs6) > 0 && r.IntN(4) == 0
	pick := func(as []netip.Addr) netip.Addr { return as[r.IntN(len(as))] }
	if v6 {
		p.Family = acl.IPv6
		p.Src6, p.Dst6 = pick(w.Addrs6).As16(), pick(w.Addrs6).As16()
	} else {
		p.Family = acl.IPv4
		s, d := pick(w.Addrs4).As4(), pick(w.Addrs4).As4()
		p.Src4 = uint32(s[0])<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3])
		p.Dst4 = uint32(d[0])<<24 | uint32(d[1])<<16 | uint32(d[2])<<8 | uint32(d[3])
	}
	switch r.IntN(10) {
	case 0, 1, 2, 3:
		p.Proto = 6
	case 4, 5:
		p.Proto = 17
	case 6:
		p.Proto = 1
		if v6 {
			p.Proto = 58
		}
	case 7:
		p.Proto = []uint8{1, 58}[r.IntN(2)]
	case 8:
		p.Proto = 132
	default:
		p.Proto = uint8(r.IntN(256))
	}
	port := func() uint16 {
		if r.IntN(5) == 0 {
			return uint16(r.IntN(65536))
		}
		return w.Ports[r.IntN(len(w.Ports))]
	}
	p.SrcPort, p.DstPort = port(), port()
	if p.Proto == 1 || p.Proto == 58 {
		t := []uint16{0, 3, 8, 11, 128, 254, 255, uint16(r.IntN(256))}[r.IntN(8)]
		c := []uint16{0, 1, 4, 255, uint16(r.IntN(256))}[r.IntN(5)]
		p.DstPort = t<<8 | c
	}
	p.TCPFlags = uint8(r.IntN(256))
}
