package datapath

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentTablesUpdate runs the worker while the control plane churns
// routes and next hops, as the agent does: under -race this checks the
// snapshot/LPM publication contract; in any mode, that every packet is either
// forwarded to one of the ports its route may lead to or dropped as no_route,
// never misrouted and never leaked.
func TestConcurrentTablesUpdate(t *testing.T) {
	n := newTestNode(t)
	for _, p := range n.ports {
		p.SetSink(true)
	}
	pkt := buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.5.9", payload: 18})
	n.ports[portPods].SetReplay([][]byte{pkt})
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p := netip.MustParsePrefix("10.244.5.0/24")
		for i := 0; !stop.Load() && i < 2000; i++ {
			// Alternate the route between a local pod and a VXLAN node,
			// and rewrite the next hop itself.
			nh := uint32(nhPod)
			if i%2 == 1 {
				nh = nhVXLAN
			}
			if err := n.tables.AddRoute(p, nh); err != nil {
				t.Error(err)
				return
			}
			if i%3 == 0 {
				if err := n.tables.DeleteRoute(p); err != nil {
					t.Error(err)
					return
				}
			}
			if err := n.tables.SetNextHop(nhPod, NextHop{Kind: NextHopLocal, Port: portPods, SrcMAC: macNode, DstMAC: macPod}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 300; i++ {
		n.w.Poll()
	}
	stop.Store(true)
	wg.Wait()
	c := n.w.Counters()
	if c.RxPackets == 0 || c.RxPackets != c.TxPackets+c.Drops[DropNoRoute] || c.Dropped() != c.Drops[DropNoRoute] {
		t.Fatalf("packets misrouted or lost under churn: %+v", c)
	}
	if c.ToHost != 0 || n.ports[portHost].TxPackets != 0 {
		t.Fatalf("packets went to the host: %+v", c)
	}
	if n.pool.FreeFrames() != 512 {
		t.Fatalf("frame leak: %d free", n.pool.FreeFrames())
	}
}
