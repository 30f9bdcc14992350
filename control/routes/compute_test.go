package routes

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/control/resources"
)

func pool(name, cidr string, ipip, vxlan resources.EncapMode) *resources.IPPool {
	p := &resources.IPPool{ObjectMeta: resources.ObjectMeta{Name: name},
		Spec: resources.IPPoolSpec{CIDR: cidr, IPIPMode: ipip, VXLANMode: vxlan}}
	p.Default()
	return p
}

func testNode(name, ip, vtep, mac string) *resources.Node {
	return &resources.Node{ObjectMeta: resources.ObjectMeta{Name: name}, Spec: resources.NodeSpec{
		BGP:                 &resources.NodeBGPSpec{IPv4Address: ip},
		IPv4VXLANTunnelAddr: vtep, VXLANTunnelMACAddr: mac}}
}

// line renders a route compactly: "dst kind [via gw] [onlink] [vtep ip mac] [node] [pool]".
func line(r Route) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Dst, r.Kind)
	if r.Gateway.IsValid() {
		fmt.Fprintf(&b, " via %s", r.Gateway)
	}
	if r.OnLink {
		b.WriteString(" onlink")
	}
	if r.VTEP.IsValid() {
		fmt.Fprintf(&b, " vtep %s %s", r.VTEP, r.VTEPMAC)
	}
	if r.Node != "" {
		fmt.Fprintf(&b, " node %s", r.Node)
	}
	if r.Pool != "" {
		fmt.Fprintf(&b, " pool %s", r.Pool)
	}
	return b.String()
}

func lines(t Table) []string {
	var out []string
	for _, r := range t.Sorted() {
		out = append(out, line(r))
	}
	return out
}

// TestComputeModes covers every pool mode × same/other subnet × BGP or not,
// for one remote block.
func TestComputeModes(t *testing.T) {
	nodes := []*resources.Node{
		testNode("me", "192.0.2.1/24", "10.99.0.1", "66:00:00:00:00:01"),
		testNode("same", "192.0.2.2/24", "10.99.0.2", "66:00:00:00:00:02"),
		testNode("other", "198.51.100.3/24", "10.99.0.3", "66:00:00:00:00:03"),
	}
	const (
		vtepSame  = " vtep 10.99.0.2 66:00:00:00:00:02"
		vtepOther = " vtep 10.99.0.3 66:00:00:00:00:03"
	)
	modes := []struct {
		name        string
		ipip, vxlan resources.EncapMode
	}{
		{"never", resources.EncapNever, resources.EncapNever},
		{"ipip-always", resources.EncapAlways, resources.EncapNever},
		{"ipip-crosssubnet", resources.EncapCrossSubnet, resources.EncapNever},
		{"vxlan-always", resources.EncapNever, resources.EncapAlways},
		{"vxlan-crosssubnet", resources.EncapNever, resources.EncapCrossSubnet},
	}
	// want[mode][remote][bgp] is the route line for the remote block
	// (suffix after "10.65.1.0/26 "), "" for none.
	want := map[string]map[string][2]string{
		"never": {
			"same":  {"direct via 192.0.2.2 onlink node same", "direct via 192.0.2.2 onlink node same"},
			"other": {"", "direct via 198.51.100.3 node other"},
		},
		"ipip-always": {
			"same":  {"ipip via 192.0.2.2 onlink node same", "ipip via 192.0.2.2 onlink node same"},
			"other": {"ipip via 198.51.100.3 node other", "ipip via 198.51.100.3 node other"},
		},
		"ipip-crosssubnet": {
			"same":  {"direct via 192.0.2.2 onlink node same", "direct via 192.0.2.2 onlink node same"},
			"other": {"ipip via 198.51.100.3 node other", "ipip via 198.51.100.3 node other"},
		},
		"vxlan-always": {
			"same":  {"vxlan via 192.0.2.2 onlink" + vtepSame + " node same", "vxlan via 192.0.2.2 onlink" + vtepSame + " node same"},
			"other": {"vxlan via 198.51.100.3" + vtepOther + " node other", "vxlan via 198.51.100.3" + vtepOther + " node other"},
		},
		"vxlan-crosssubnet": {
			"same":  {"direct via 192.0.2.2 onlink node same", "direct via 192.0.2.2 onlink node same"},
			"other": {"vxlan via 198.51.100.3" + vtepOther + " node other", "vxlan via 198.51.100.3" + vtepOther + " node other"},
		},
	}
	for _, m := range modes {
		for _, remote := range []string{"same", "other"} {
			for i, bgp := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s-subnet/bgp=%v", m.name, remote, bgp)
				t.Run(name, func(t *testing.T) {
					ip := map[string]string{"same": "192.0.2.2", "other": "198.51.100.3"}[remote]
					in := Input{
						Node:   "me",
						Pools:  []*resources.IPPool{pool("p", "10.65.0.0/16", m.ipip, m.vxlan)},
						Nodes:  nodes,
						Blocks: []Block{{netip.MustParsePrefix("10.65.0.0/26"), "me"}, {netip.MustParsePrefix("10.65.1.0/26"), remote}},
						BGP:    bgp,
					}
					if bgp {
						// What the remote node advertises (and, reflected, our own).
						in.Learned = []Learned{
							{netip.MustParsePrefix("10.65.1.0/26"), netip.MustParseAddr(ip)},
							{netip.MustParsePrefix("10.65.0.0/26"), netip.MustParseAddr("192.0.2.1")},
						}
					}
					got := lines(Compute(in))
					exp := []string{"10.65.0.0/26 local-block pool p"}
					if w := want[m.name][remote][i]; w != "" {
						exp = append(exp, "10.65.1.0/26 "+w+" pool p")
					}
					if !slices.Equal(got, exp) {
						t.Errorf("\n got %q\nwant %q", got, exp)
					}
				})
			}
		}
	}
}

func TestCompute(t *testing.T) {
	nodes := []*resources.Node{
		testNode("me", "192.0.2.1/24", "10.99.0.1", "66:00:00:00:00:01"),
		testNode("b", "192.0.2.2/24", "10.99.0.2", "66:00:00:00:00:02"),
		testNode("c", "198.51.100.3/24", "", ""), // no VTEP yet
		{ObjectMeta: resources.ObjectMeta{Name: "d"}, Spec: resources.NodeSpec{
			Addresses: []resources.NodeAddress{{Address: "198.51.100.4/24"}}}}, // address only, no BGP
	}
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	tests := []struct {
		name string
		in   Input
		want []string
	}{
		{
			name: "no pools: own blocks still blackholed, remote blocks skipped",
			in:   Input{Node: "me", Nodes: nodes, Blocks: []Block{{pfx("10.65.0.0/26"), "me"}, {pfx("10.65.0.64/26"), "b"}}},
			want: []string{"10.65.0.0/26 local-block"},
		},
		{
			name: "vxlan route waits for the remote VTEP",
			in: Input{Node: "me", Nodes: nodes, Pools: []*resources.IPPool{pool("vx", "10.66.0.0/16", "", resources.EncapAlways)},
				Blocks: []Block{{pfx("10.66.0.0/26"), "b"}, {pfx("10.66.0.64/26"), "c"}}},
			want: []string{"10.66.0.0/26 vxlan via 192.0.2.2 onlink vtep 10.99.0.2 66:00:00:00:00:02 node b pool vx"},
		},
		{
			name: "learned routes: node next hop, external next hop, outside every pool, inside a vxlan pool",
			in: Input{Node: "me", Nodes: nodes, BGP: true,
				Pools: []*resources.IPPool{
					pool("ipip", "10.65.0.0/16", resources.EncapCrossSubnet, ""),
					pool("vx", "10.66.0.0/16", "", resources.EncapAlways),
				},
				Blocks: []Block{{pfx("10.66.0.0/26"), "b"}},
				Learned: []Learned{
					{pfx("10.65.3.0/26"), addr("198.51.100.3")},   // node c, other subnet: ipip
					{pfx("10.65.4.0/26"), addr("198.51.100.4")},   // node d (address from spec.addresses)
					{pfx("10.65.5.7/32"), addr("192.0.2.2")},      // borrowed address on b
					{pfx("203.0.113.0/24"), addr("192.0.2.254")},  // from a ToR
					{pfx("10.66.0.0/26"), addr("192.0.2.2")},      // vxlan pool: datastore wins
					{pfx("10.66.0.128/26"), addr("198.51.100.3")}, // vxlan pool, no VTEP: ignored
				}},
			want: []string{
				"10.65.3.0/26 ipip via 198.51.100.3 node c pool ipip",
				"10.65.4.0/26 ipip via 198.51.100.4 node d pool ipip",
				"10.65.5.7/32 direct via 192.0.2.2 onlink node b pool ipip",
				"10.66.0.0/26 vxlan via 192.0.2.2 onlink vtep 10.99.0.2 66:00:00:00:00:02 node b pool vx",
				"203.0.113.0/24 direct via 192.0.2.254 onlink",
			},
		},
		{
			name: "own block wins over a learned route for it",
			in: Input{Node: "me", Nodes: nodes, BGP: true, Pools: []*resources.IPPool{pool("p", "10.65.0.0/16", "", "")},
				Blocks:  []Block{{pfx("10.65.0.0/26"), "me"}},
				Learned: []Learned{{pfx("10.65.0.0/26"), addr("192.0.2.2")}}},
			want: []string{"10.65.0.0/26 local-block pool p"},
		},
		{
			name: "most specific pool decides",
			in: Input{Node: "me", Nodes: nodes, Pools: []*resources.IPPool{
				pool("wide", "10.64.0.0/12", resources.EncapAlways, ""),
				pool("narrow", "10.65.0.0/16", resources.EncapNever, ""),
			}, Blocks: []Block{{pfx("10.65.0.0/26"), "b"}, {pfx("10.70.0.0/26"), "b"}}},
			want: []string{
				"10.65.0.0/26 direct via 192.0.2.2 onlink node b pool narrow",
				"10.70.0.0/26 ipip via 192.0.2.2 onlink node b pool wide",
			},
		},
		{
			name: "IPv6 pool routed natively via the learned next hop",
			in: Input{Node: "me", Nodes: nodes, BGP: true, Pools: []*resources.IPPool{pool("v6", "fd00:65::/48", "", "")},
				Learned: []Learned{{pfx("fd00:65::40/122"), addr("2001:db8::2")}}},
			want: []string{"fd00:65::40/122 direct via 2001:db8::2 pool v6"},
		},
		{
			name: "blocks from IPAM and affinities",
			in: Input{Node: "me", Nodes: nodes, Pools: []*resources.IPPool{pool("p", "10.65.0.0/16", resources.EncapAlways, "")},
				Blocks: append(BlocksFromIPAM([]*resources.IPAMBlock{
					{Spec: resources.IPAMBlockSpec{CIDR: "10.65.0.0/26", Affinity: "host:me"}},
					{Spec: resources.IPAMBlockSpec{CIDR: "10.65.0.64/26"}}, // released: no route
				}), BlocksFromAffinities([]*resources.BlockAffinity{
					{Spec: resources.BlockAffinitySpec{State: resources.AffinityConfirmed, Node: "b", CIDR: "10.65.1.0/26"}},
					{Spec: resources.BlockAffinitySpec{State: resources.AffinityPending, Node: "b", CIDR: "10.65.2.0/26"}},
				})...)},
			want: []string{
				"10.65.0.0/26 local-block pool p",
				"10.65.1.0/26 ipip via 192.0.2.2 onlink node b pool p",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := lines(Compute(tt.in))
			if !slices.Equal(got, tt.want) {
				t.Errorf("\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestFIBMatchesCompute drives a FIB and a Userspace programmer through a
// seeded random sequence of learned-route and resource changes; after every
// step the FIB's table equals Compute of the same inputs, and the tables
// programmed from the deltas equal the FIB's table.
func TestFIBMatchesCompute(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	nodes := []*resources.Node{
		testNode("me", "192.0.2.1/24", "10.99.0.1", "66:00:00:00:00:01"),
		testNode("b", "192.0.2.2/24", "10.99.0.2", "66:00:00:00:00:02"),
		testNode("c", "198.51.100.3/24", "10.99.0.3", "66:00:00:00:00:03"),
	}
	hops := []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("198.51.100.3"), netip.MustParseAddr("192.0.2.254"), netip.MustParseAddr("192.0.2.1")}
	modes := []resources.EncapMode{resources.EncapNever, resources.EncapAlways, resources.EncapCrossSubnet}
	randPrefix := func() netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + rng.IntN(4)), byte(rng.IntN(4)), byte(rng.IntN(4) << 6)}), 26)
	}
	randInput := func() Input {
		in := Input{Node: "me", Nodes: nodes, BGP: rng.IntN(4) != 0}
		for i, cidr := range []string{"10.64.0.0/16", "10.65.0.0/16", "10.66.0.0/16"} {
			ip, vx := modes[rng.IntN(3)], resources.EncapNever
			if rng.IntN(3) == 0 {
				ip, vx = resources.EncapNever, modes[rng.IntN(3)]
			}
			in.Pools = append(in.Pools, pool(fmt.Sprintf("p%d", i), cidr, ip, vx))
		}
		for range 6 {
			in.Blocks = append(in.Blocks, Block{randPrefix(), []string{"me", "b", "c"}[rng.IntN(3)]})
		}
		return in
	}
	nb := StaticNeighbors{}
	for _, h := range hops {
		nb[h] = Neighbor{Port: 1, SrcMAC: macUplink, DstMAC: macB}
	}
	u, _ := newUserspace(t, nb)
	in := randInput()
	learned := map[netip.Prefix]Learned{}
	f := NewFIB(in)
	if _, err := u.ApplyDelta(Delta{Set: f.Table().Sorted()}); err != nil {
		t.Fatal(err)
	}
	for step := range 500 {
		var d Delta
		if rng.IntN(10) == 0 {
			in = randInput()
			d = f.SetInput(in)
		} else {
			var set []Learned
			var gone []netip.Prefix
			touched := map[netip.Prefix]bool{} // one change per prefix and call
			for range 1 + rng.IntN(4) {
				p := randPrefix()
				if touched[p] {
					continue
				}
				touched[p] = true
				if _, ok := learned[p]; ok && rng.IntN(2) == 0 {
					delete(learned, p)
					gone = append(gone, p)
					continue
				}
				l := Learned{Prefix: p, NextHop: hops[rng.IntN(len(hops))]}
				learned[p] = l
				set = append(set, l)
			}
			d = f.UpdateLearned(set, gone)
		}
		full := in
		full.Learned = nil
		for _, l := range learned {
			full.Learned = append(full.Learned, l)
		}
		want := Compute(full)
		if got := f.Table(); !maps.Equal(got, want) {
			t.Fatalf("step %d: FIB table\n%q\nCompute\n%q", step, lines(got), lines(want))
		}
		if _, err := u.ApplyDelta(d); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if got := u.Installed(); !maps.Equal(got, want) {
			t.Fatalf("step %d: programmed\n%q\nwant\n%q", step, lines(got), lines(want))
		}
	}
}
