package acltest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/tabbynet/tabby/acl"
)

// TargetNode is the node of the target endpoint of RuleScale worlds.
const TargetNode = "bench"

var commonPorts = []uint16{22, 25, 53, 80, 110, 143, 443, 465, 587, 993, 995, 1433, 1521, 2049, 2379, 3000, 3306,
	3389, 5000, 5432, 5672, 6379, 6443, 7000, 8000, 8080, 8081, 8443, 8888, 9000, 9090, 9092, 9200, 9300, 9418,
	10250, 11211, 15672, 27017, 50051}

// RuleScale builds a world in which one local endpoint (10.255.0.1, node
// TargetNode) has n ingress rules, in policies of 10 rules. Every rule names
// its peers, so a packet no rule allows walks all of them in a first-match
// evaluator: selectors over 2,000 pods of 200 apps (60%) or CIDRs from a
// pool of n/10 (at most 5,000; 40%); destination ports from 40 common ports
// (70%), a pool of 50 ranges (20%) or any; mostly TCP; 70% Allow, 25% Deny, a few Log
// and Pass. TargetPackets aim at the target from pods, CIDR borders and
// random addresses.
func RuleScale(seed uint64, n int) *World {
	r := rand.New(rand.NewPCG(seed, 42))
	w := &World{}
	const pods, apps, nss = 2000, 200, 10
	for i := 0; i < nss; i++ {
		w.Namespaces = append(w.Namespaces, acl.Namespace{Name: fmt.Sprintf("ns%d", i), Labels: map[string]string{"team": fmt.Sprintf("t%d", i%4)}})
	}
	for i := 0; i < pods; i++ {
		a := r.IntN(apps)
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 2})
		w.Endpoints = append(w.Endpoints, acl.Endpoint{Name: fmt.Sprintf("pod%d", i), Namespace: fmt.Sprintf("ns%d", a%nss),
			Node: "other", Labels: map[string]string{"app": fmt.Sprintf("app%d", a), "tier": tierNames[a%3]}, IPs: []netip.Addr{ip}})
		w.Addrs4 = append(w.Addrs4, ip)
		w.podAddrs = append(w.podAddrs, ip)
	}
	target := netip.AddrFrom4([4]byte{10, 255, 0, 1})
	w.Endpoints = append(w.Endpoints, acl.Endpoint{Name: "target", Namespace: "ns0", Node: TargetNode,
		Labels: map[string]string{"role": "target"}, IPs: []netip.Addr{target}})
	nc := min(max(n/10, 4), 5000)
	cidrs := make([]string, nc)
	for i := range cidrs {
		bits := 16 + r.IntN(17)
		pf := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + r.IntN(200)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}), bits).Masked()
		cidrs[i] = pf.String()
		w.Addrs4 = append(w.Addrs4, pf.Addr(), lastAddr(pf))
		w.borderAddrs = append(w.borderAddrs, pf.Addr(), lastAddr(pf))
	}
	for i := 0; i < 200; i++ {
		a := netip.AddrFrom4([4]byte{byte(1 + r.IntN(223)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		w.Addrs4 = append(w.Addrs4, a)
		w.randomAddrs = append(w.randomAddrs, a)
	}
	w.Ports = commonPorts
	// Port ranges come from a pool, as in real policy sets (ephemeral
	// ranges, NodePorts, application blocks).
	ranges := []acl.Port{{Min: 1024, Max: 65535}, {Min: 30000, Max: 32767}, {Min: 8000, Max: 8999}, {Min: 49152, Max: 65535},
		{Min: 6000, Max: 6063}, {Min: 10000, Max: 20000}, {Min: 2000, Max: 3000}, {Min: 5000, Max: 5100}}
	for len(ranges) < 50 {
		lo := uint16(1024 + r.IntN(40000))
		ranges = append(ranges, acl.Port{Min: lo, Max: lo + uint16(r.IntN(2000))})
	}
	for made := 0; made < n; {
		p := acl.Policy{Name: fmt.Sprintf("p%05d", len(w.Policies)), Selector: "role == 'target'",
			Order: ptr(float64(len(w.Policies))), Types: []acl.Direction{acl.Ingress}}
		for j := 0; j < 10 && made < n; j, made = j+1, made+1 {
			ru := acl.Rule{Action: acl.Allow, Protocol: acl.ProtoTCP}
			switch x := r.IntN(100); {
			case x < 25:
				ru.Action = acl.Deny
			case x < 28:
				ru.Action = acl.Log
			case x < 30:
				ru.Action = acl.Pass
			}
			switch x := r.IntN(20); {
			case x < 2:
				ru.Protocol = acl.ProtoUDP
			case x < 3:
				ru.Protocol = acl.ProtoICMP
			}
			if r.IntN(10) < 6 {
				ru.Source.Selector = fmt.Sprintf("app == 'app%d'", r.IntN(apps))
				if r.IntN(4) == 0 {
					ru.Source.Selector = fmt.Sprintf("app in {'app%d', 'app%d'} && tier != 'data'", r.IntN(apps), r.IntN(apps))
				}
				ru.Source.NamespaceSelector = "all()"
			} else {
				ru.Source.Nets = []string{cidrs[r.IntN(nc)]}
			}
			if ru.Protocol != acl.ProtoICMP {
				switch x := r.IntN(10); {
				case x < 7:
					ru.Destination.Ports = []acl.Port{{Min: commonPorts[r.IntN(len(commonPorts))]}}
					ru.Destination.Ports[0].Max = ru.Destination.Ports[0].Min
				case x < 9:
					ru.Destination.Ports = []acl.Port{ranges[r.IntN(len(ranges))]}
				}
			}
			p.Ingress = append(p.Ingress, ru)
		}
		w.Policies = append(w.Policies, p)
	}
	return w
}

// TargetPackets returns n packets to the RuleScale target, whatever the
// rule count from the same mix of sources: 50% pods, 40% borders of the
// rules' CIDRs, 10% random addresses.
func (w *World) TargetPackets(seed uint64, n int) []acl.Packet {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]acl.Packet, n)
	for i := range out {
		p := &out[i]
		pool := w.podAddrs
		switch x := r.IntN(10); {
		case x >= 9:
			pool = w.randomAddrs
		case x >= 5:
			pool = w.borderAddrs
		}
		s := pool[r.IntN(len(pool))].As4()
		p.Family = acl.IPv4
		p.Src4 = uint32(s[0])<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3])
		p.Dst4 = 10<<24 | 255<<16 | 1
		p.Proto = []uint8{6, 6, 6, 6, 6, 6, 17, 1}[r.IntN(8)]
		p.SrcPort = uint16(1024 + r.IntN(60000))
		p.DstPort = commonPorts[r.IntN(len(commonPorts))]
		if r.IntN(4) == 0 {
			p.DstPort = uint16(r.IntN(65536))
		}
	}
	return out
}

// Cluster builds a cluster-scale world: endpoints pods in 50 namespaces and
// endpoints/20 apps (pods of an app share labels, a few are canaries),
// nPolicies namespaced policies of 1-4 rules per direction (selectors of
// apps, namespaces, CIDRs, named and numeric ports) and a few global ones.
func Cluster(seed uint64, endpoints, nPolicies int) *World {
	r := rand.New(rand.NewPCG(seed, 3))
	w := &World{}
	const nss = 50
	apps := max(endpoints/20, 1)
	for i := 0; i < nss; i++ {
		w.Namespaces = append(w.Namespaces, acl.Namespace{Name: fmt.Sprintf("ns%d", i),
			Labels: map[string]string{"team": fmt.Sprintf("t%d", i%10), "env": envs[i%3]}})
	}
	appNS := func(a int) string { return fmt.Sprintf("ns%d", a%nss) }
	for i := 0; i < endpoints; i++ {
		a := i % apps
		l := map[string]string{"app": fmt.Sprintf("app%d", a), "tier": tierNames[a%3], "version": "v1"}
		if i%97 == 0 {
			l["canary"] = "true"
		}
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 14), byte(i >> 6), byte(i<<2 | 1)})
		w.Endpoints = append(w.Endpoints, acl.Endpoint{Name: fmt.Sprintf("pod%d", i), Namespace: appNS(a),
			Labels: l, IPs: []netip.Addr{ip},
			Ports: []acl.NamedPort{{Name: "http", Protocol: acl.ProtoTCP, Port: uint16(8000 + a%4)}}})
		w.Addrs4 = append(w.Addrs4, ip)
	}
	for i := 0; i < nPolicies; i++ {
		a := r.IntN(apps)
		p := acl.Policy{Name: fmt.Sprintf("np%d", i), Namespace: appNS(a), Selector: fmt.Sprintf("app == 'app%d'", a)}
		if i%10 == 0 {
			p.Selector = ""
		}
		if i%50 == 0 {
			p = acl.Policy{Name: fmt.Sprintf("gnp%d", i), Selector: fmt.Sprintf("tier == '%s'", tierNames[r.IntN(3)]),
				Order: ptr(float64(100 + r.IntN(10)))}
		}
		for d := 0; d < 2; d++ {
			k := 1 + r.IntN(4)
			for j := 0; j < k; j++ {
				ru := acl.Rule{Action: acl.Allow, Protocol: acl.ProtoTCP}
				peer := &ru.Source
				if d == 1 {
					peer = &ru.Destination
				}
				switch x := r.IntN(10); {
				case x < 5:
					peer.Selector = fmt.Sprintf("app == 'app%d'", r.IntN(apps))
					if r.IntN(3) == 0 {
						peer.NamespaceSelector = fmt.Sprintf("team == 't%d'", r.IntN(10))
					}
				case x < 7:
					peer.NamespaceSelector = fmt.Sprintf("env == '%s'", envs[r.IntN(3)])
				case x < 9:
					peer.Nets = []string{netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + r.IntN(200)), byte(r.IntN(256)), 0, 0}), 16).String()}
				}
				switch x := r.IntN(4); {
				case x < 2:
					ru.Destination.Ports = []acl.Port{{Min: commonPorts[r.IntN(len(commonPorts))], Max: 0}}
					ru.Destination.Ports[0].Max = ru.Destination.Ports[0].Min
				case x < 3:
					ru.Destination.Ports = []acl.Port{{Name: "http"}}
				}
				if r.IntN(10) == 0 {
					ru.Action = acl.Deny
				}
				if d == 0 {
					p.Ingress = append(p.Ingress, ru)
				} else {
					p.Egress = append(p.Egress, ru)
				}
			}
		}
		w.Policies = append(w.Policies, p)
	}
	w.Ports = commonPorts
	return w
}
