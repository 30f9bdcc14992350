package datapath

import (
	"net/netip"
	"testing"
)

// TestPortSlots: a port added to a running worker (a new slot) receives and
// is routed to; removing it drops what is still routed to it as
// bad_next_hop without touching the other ports; Tables.PortInUse tells
// when the slot may be reused; a reused slot carries the new port's
// traffic; Poll stays allocation-free after the changes.
func TestPortSlots(t *testing.T) {
	n := newTestNode(t)
	const slot PortID = 3
	extra := n.pool.NewPort("extra", slot)
	if err := n.w.SetPort(slot, extra); err != nil {
		t.Fatal(err)
	}
	if n.w.Slots() != 4 || n.w.Port(slot) != Port(extra) {
		t.Fatalf("slots %d", n.w.Slots())
	}
	const nhExtra = 20
	macExtra := macPod
	macExtra[5] = 0x33
	if err := n.tables.SetNextHop(nhExtra, NextHop{Kind: NextHopLocal, Port: slot, SrcMAC: macNode, DstMAC: macExtra}); err != nil {
		t.Fatal(err)
	}
	if err := n.tables.AddRoute(netip.MustParsePrefix("10.244.1.33/32"), nhExtra); err != nil {
		t.Fatal(err)
	}
	if !n.tables.PortInUse(slot) || !n.tables.PortInUse(portPods) || !n.tables.PortInUse(portHost) || n.tables.PortInUse(7) {
		t.Fatal("PortInUse wrong")
	}

	// To the new port, and from it to a pod on the old ones.
	poll := func() {
		for n.w.Poll() > 0 {
		}
	}
	if err := n.ports[portPods].Inject(buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.33"})); err != nil {
		t.Fatal(err)
	}
	if err := extra.Inject(buildPacket(t, pktSpec{src: "10.244.1.33", dst: "10.244.1.5"})); err != nil {
		t.Fatal(err)
	}
	poll()
	if got := extra.Sent(); len(got) != 1 {
		t.Fatalf("new port sent %d frames, want 1", len(got))
	}
	if got := n.ports[portPods].Sent(); len(got) != 1 {
		t.Fatalf("pods port sent %d frames, want 1 from the new port", len(got))
	}

	// Removed while a route still names it: dropped, others unaffected.
	if p := n.w.RemovePort(slot); p != Port(extra) || n.w.Slots() != 3 {
		t.Fatalf("RemovePort returned %v, %d slots", p, n.w.Slots())
	}
	if n.w.RemovePort(slot) != nil || n.w.RemovePort(100) != nil {
		t.Fatal("removing an empty slot returned a port")
	}
	before := n.w.Counters()
	for _, dst := range []string{"10.244.1.33", "10.244.1.5"} {
		if err := n.ports[portPods].Inject(buildPacket(t, pktSpec{src: "10.244.1.7", dst: dst})); err != nil {
			t.Fatal(err)
		}
	}
	poll()
	c := n.w.Counters()
	if c.Drops[DropBadNextHop]-before.Drops[DropBadNextHop] != 1 || c.ToLocal-before.ToLocal != 1 {
		t.Fatalf("after removal: bad_next_hop +%d, to_local +%d; want +1 each",
			c.Drops[DropBadNextHop]-before.Drops[DropBadNextHop], c.ToLocal-before.ToLocal)
	}
	if len(n.ports[portPods].Sent()) != 1 || len(extra.Sent()) != 0 {
		t.Fatal("frames went where they should not")
	}

	// The slot is free once no next hop names it; reuse it.
	if err := n.tables.DeleteRoute(netip.MustParsePrefix("10.244.1.33/32")); err != nil {
		t.Fatal(err)
	}
	if err := n.tables.RemoveNextHop(nhExtra); err != nil {
		t.Fatal(err)
	}
	if n.tables.PortInUse(slot) {
		t.Fatal("slot still in use after its next hop was removed")
	}
	again := n.pool.NewPort("again", slot)
	if err := n.w.SetPort(slot, again); err != nil {
		t.Fatal(err)
	}
	if err := n.tables.SetNextHop(nhExtra, NextHop{Kind: NextHopLocal, Port: slot, SrcMAC: macNode, DstMAC: macExtra}); err != nil {
		t.Fatal(err)
	}
	if err := n.tables.AddRoute(netip.MustParsePrefix("10.244.1.34/32"), nhExtra); err != nil {
		t.Fatal(err)
	}
	if err := n.ports[portPods].Inject(buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.34"})); err != nil {
		t.Fatal(err)
	}
	if err := again.Inject(buildPacket(t, pktSpec{src: "10.244.1.34", dst: "10.244.1.5"})); err != nil {
		t.Fatal(err)
	}
	if n.w.PollPort(slot) != 1 || n.w.PollPort(9) != 0 {
		t.Fatal("PollPort")
	}
	poll()
	if len(again.Sent()) != 1 || len(n.ports[portPods].Sent()) != 1 {
		t.Fatal("reused slot does not forward")
	}
	if err := n.w.SetPort(NoPort, again); err == nil {
		t.Fatal("SetPort accepted NoPort")
	}
	if err := n.w.SetPort(5, nil); err == nil {
		t.Fatal("SetPort accepted a nil port")
	}
	if got := n.pool.FreeFrames(); got != 512 {
		t.Fatalf("frame leak: %d of 512 free", got)
	}

	// Still no allocation per batch.
	for _, p := range append(n.ports, again) {
		p.SetSink(true)
	}
	n.ports[portPods].SetReplay([][]byte{buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.34", payload: 18})})
	again.SetReplay([][]byte{buildPacket(t, pktSpec{src: "10.244.1.34", dst: "10.244.1.5", payload: 18})})
	if allocs := testing.AllocsPerRun(100, func() { n.w.Poll() }); allocs != 0 {
		t.Fatalf("Poll allocates %.1f times per batch after port changes", allocs)
	}
}
