package routes

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

var (
	macUplink = header.MAC{0x02, 0, 0, 0, 0, 0x01}
	macB      = header.MAC{0x02, 0, 0, 0, 0, 0x02}
	macRouter = header.MAC{0x02, 0, 0, 0, 0, 0xfe}
)

// lookup4 returns the next hop of addr in the current snapshot.
func lookup4(t *testing.T, tb *datapath.Tables, addr string) (datapath.NextHop, bool) {
	t.Helper()
	s := tb.Load()
	a := netip.MustParseAddr(addr).As4()
	id, ok := s.Routes4.Lookup(binary.BigEndian.Uint32(a[:]))
	if !ok {
		return datapath.NextHop{}, false
	}
	return s.NextHops[id], true
}

func newUserspace(t *testing.T, nb Neighbors) (*Userspace, *datapath.Tables) {
	t.Helper()
	tb, err := datapath.NewTables(datapath.NodeConfig{TunnelIPv4: netip.MustParseAddr("192.0.2.1")})
	if err != nil {
		t.Fatal(err)
	}
	u, err := NewUserspace(UserspaceConfig{Tables: tb, Neighbors: nb, UnderlayIPv4: netip.MustParseAddr("192.0.2.1"),
		VTEPMAC: MAC{0x66, 0, 0, 0, 0, 1}, FirstNextHop: 10, NextHops: 100})
	if err != nil {
		t.Fatal(err)
	}
	return u, tb
}

func table(rs ...Route) Table {
	t := Table{}
	for _, r := range rs {
		t[r.Dst] = r
	}
	return t
}

func TestUserspace(t *testing.T) {
	nb := StaticNeighbors{
		netip.MustParseAddr("192.0.2.2"):    {Port: 1, SrcMAC: macUplink, DstMAC: macB},
		netip.MustParseAddr("198.51.100.3"): {Port: 1, SrcMAC: macUplink, DstMAC: macRouter, MTU: 9000},
	}
	u, tb := newUserspace(t, nb)
	pfx := netip.MustParsePrefix
	gw := netip.MustParseAddr
	local := Route{Dst: pfx("10.65.0.0/26"), Kind: LocalBlock}
	directB := Route{Dst: pfx("10.65.1.0/26"), Kind: Direct, Node: "b", Gateway: gw("192.0.2.2"), OnLink: true}
	directB2 := Route{Dst: pfx("10.65.2.0/26"), Kind: Direct, Node: "b", Gateway: gw("192.0.2.2"), OnLink: true}
	ipipC := Route{Dst: pfx("10.65.3.0/26"), Kind: IPIP, Node: "c", Gateway: gw("198.51.100.3")}
	vxlanC := Route{Dst: pfx("10.66.3.0/26"), Kind: VXLAN, Node: "c", Gateway: gw("198.51.100.3"),
		VTEP: gw("10.99.0.3"), VTEPMAC: MAC{0x66, 0, 0, 0, 0, 3}}
	unresolved := Route{Dst: pfx("10.65.4.0/26"), Kind: Direct, Node: "d", Gateway: gw("192.0.2.4"), OnLink: true}

	st, err := u.Apply(table(local, directB, directB2, ipipC, vxlanC, unresolved))
	if err != nil {
		t.Fatal(err)
	}
	if st.Added != 5 || st.Pending != 1 || st.NextHopsAdded != 4 {
		t.Errorf("first apply: %+v: want 5 added (4 next hops: blackhole, b, ipip c, vxlan c), 1 pending", st)
	}
	if nh, ok := lookup4(t, tb, "10.65.0.9"); !ok || nh.Kind != datapath.NextHopBlackhole {
		t.Errorf("own block: %+v %v", nh, ok)
	}
	nh, ok := lookup4(t, tb, "10.65.1.9")
	if !ok || nh.Kind != datapath.NextHopRemote || nh.Encap != datapath.EncapNone || nh.DstMAC != macB || nh.SrcMAC != macUplink || nh.Port != 1 {
		t.Errorf("direct: %+v %v", nh, ok)
	}
	id1, _ := u.NextHopID(directB.Dst)
	id2, _ := u.NextHopID(directB2.Dst)
	if id1 != id2 || id1 < 10 || id1 >= 110 {
		t.Errorf("routes to one node: next hops %d and %d, want one shared id in 10..109", id1, id2)
	}
	nh, _ = lookup4(t, tb, "10.65.3.1")
	if nh.Encap != datapath.EncapIPIP || nh.Tunnel == nil || nh.MTU != 9000-encap.IPIPOverhead ||
		nh.Tunnel.Config().Dst != [4]byte{198, 51, 100, 3} || nh.Tunnel.Config().NextHopMAC != macRouter {
		t.Errorf("ipip: %+v", nh)
	}
	nh, _ = lookup4(t, tb, "10.66.3.1")
	if c := nh.Tunnel.Config(); nh.Encap != datapath.EncapVXLAN || c.VNI != 4096 || c.Port != 4789 ||
		c.RemoteVTEPMAC != (header.MAC{0x66, 0, 0, 0, 0, 3}) || c.VTEPMAC != (header.MAC{0x66, 0, 0, 0, 0, 1}) {
		t.Errorf("vxlan: %+v %+v", nh, nh.Tunnel.Config())
	}
	if _, ok := lookup4(t, tb, "10.65.4.1"); ok {
		t.Error("route through an unresolved neighbour installed")
	}

	// The same table again: nothing written but the pending retry.
	gen := tb.Load().Generation
	st, err = u.Apply(table(local, directB, directB2, ipipC, vxlanC, unresolved))
	if err != nil || st.Changes() != 0 || st.Unchanged != 5 || st.Pending != 1 {
		t.Errorf("second apply: %+v %v: want no change", st, err)
	}
	if g := tb.Load().Generation; g != gen {
		t.Errorf("no-op apply published %d snapshots", g-gen)
	}

	// The neighbour resolves: the pending route goes in.
	nb[netip.MustParseAddr("192.0.2.4")] = Neighbor{Port: 2, SrcMAC: macUplink, DstMAC: header.MAC{2, 0, 0, 0, 0, 4}}
	st, _ = u.Apply(table(local, directB, directB2, ipipC, vxlanC, unresolved))
	if st.Added != 1 || st.Pending != 0 || st.NextHopsAdded != 1 {
		t.Errorf("after resolution: %+v", st)
	}

	// Node c goes (both its routes and next hops), b's second block goes
	// (its next hop stays), and b's MAC changes (a new next hop for b).
	nb[netip.MustParseAddr("192.0.2.2")] = Neighbor{Port: 1, SrcMAC: macUplink, DstMAC: header.MAC{2, 0, 0, 0, 0, 0x22}}
	directB.OnLink = false // any change of the route re-resolves it
	st, err = u.Apply(table(local, directB, unresolved))
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted != 3 || st.Changed != 1 || st.NextHopsAdded != 1 || st.NextHopsRemoved != 3 {
		t.Errorf("removal: %+v: want 3 deleted, 1 changed, next hops +1 -3", st)
	}
	if v4, _ := tb.Routes(); v4 != 3 {
		t.Errorf("%d routes left, want 3", v4)
	}
	if _, ok := lookup4(t, tb, "10.66.3.1"); ok {
		t.Error("vxlan route to the removed node still installed")
	}
	// Freed ids are reused lowest first.
	st, _ = u.Apply(table(local, directB, unresolved, ipipC))
	if id, _ := u.NextHopID(ipipC.Dst); st.NextHopsAdded != 1 || id != 11 {
		t.Errorf("re-added next hop id %d (%+v), want the lowest free id 11", id, st)
	}
	// Empty table: everything goes.
	st, _ = u.Apply(Table{})
	if v4, _ := tb.Routes(); v4 != 0 || len(u.nhs) != 0 || st.Deleted != 4 {
		t.Errorf("after emptying: %d routes, %d next hops, %+v", v4, len(u.nhs), st)
	}
}
