package routes

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// kernelNode is a namespace with an underlay interface eth0 at 192.0.2.1/24
// (a veth to a second namespace) and a route to 198.51.100.0/24 through
// 192.0.2.254.
func kernelNode(t *testing.T) (*topo.Netns, int) {
	t.Helper()
	tp := topo.ForTest(t, "rt")
	n, err := tp.Namespace("node")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := tp.Namespace("peer")
	if err != nil {
		t.Fatal(err)
	}
	idx, _, err := tp.Veth(n, "eth0", peer, "eth0", 1500)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.AddAddr("eth0", netip.MustParsePrefix("192.0.2.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := n.AddRoute(netip.MustParsePrefix("198.51.100.0/24"), netip.MustParseAddr("192.0.2.254"), "eth0"); err != nil {
		t.Fatal(err)
	}
	return n, idx
}

func run(t *testing.T, n *topo.Netns, args ...string) string {
	t.Helper()
	out, err := n.Run(args[0], args[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wantLines checks that every line of want appears in out and no line of
// unwanted does.
func wantLines(t *testing.T, what, out string, want, unwanted []string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: missing %q in:\n%s", what, w, out)
		}
	}
	for _, u := range unwanted {
		if strings.Contains(out, u) {
			t.Errorf("%s: unexpected %q in:\n%s", what, u, out)
		}
	}
}

// watchNetlink counts route, neighbour (FDB included) and link
// notifications in the namespace until stop is called.
func watchNetlink(t *testing.T, h netns.NsHandle) (count func() int, stop func()) {
	t.Helper()
	done := make(chan struct{})
	rch := make(chan netlink.RouteUpdate, 1024)
	nch := make(chan netlink.NeighUpdate, 1024)
	lch := make(chan netlink.LinkUpdate, 1024)
	if err := netlink.RouteSubscribeWithOptions(rch, done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.NeighSubscribeWithOptions(nch, done, netlink.NeighSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSubscribeWithOptions(lch, done, netlink.LinkSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatal(err)
	}
	var n int
	counted := make(chan int)
	go func() {
		for {
			select {
			case <-rch:
				n++
			case <-nch:
				n++
			case <-lch:
				n++
			case <-done:
				counted <- n
				return
			}
		}
	}()
	var once bool
	stop = func() {
		if !once {
			once = true
			close(done)
		}
	}
	count = func() int { stop(); return <-counted }
	t.Cleanup(stop)
	return count, stop
}

func TestKernel(t *testing.T) {
	n, eth0 := kernelNode(t)
	pfx := netip.MustParsePrefix
	gw := netip.MustParseAddr
	vx := &VXLANDevice{Local: gw("192.0.2.1"), ParentIndex: eth0, MAC: MAC{0x66, 0, 0, 0, 0, 1}, Addr: gw("10.99.0.1")}
	newKernel := func() *Kernel {
		k, err := NewKernel(KernelConfig{Handle: n.Netlink(), VXLAN: vx})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	macC, macD := MAC{0x66, 0, 0, 0, 0, 3}, MAC{0x66, 0, 0, 0, 0, 4}
	local := Route{Dst: pfx("10.65.0.0/26"), Kind: LocalBlock}
	local6 := Route{Dst: pfx("fd00:65::/122"), Kind: LocalBlock}
	directB := Route{Dst: pfx("10.65.1.0/26"), Kind: Direct, Node: "b", Gateway: gw("192.0.2.2"), OnLink: true}
	directC := Route{Dst: pfx("10.65.3.0/26"), Kind: Direct, Node: "c", Gateway: gw("198.51.100.3")}
	ipipE := Route{Dst: pfx("10.65.5.0/26"), Kind: IPIP, Node: "e", Gateway: gw("198.51.100.5")}
	vxlanC := Route{Dst: pfx("10.66.3.0/26"), Kind: VXLAN, Node: "c", Gateway: gw("198.51.100.3"), VTEP: gw("10.99.0.3"), VTEPMAC: macC}
	vxlanD := Route{Dst: pfx("10.66.4.0/26"), Kind: VXLAN, Node: "d", Gateway: gw("192.0.2.4"), OnLink: true, VTEP: gw("10.99.0.4"), VTEPMAC: macD}

	// Left behind by an earlier run (ours: deleted) and by someone else
	// (static: kept).
	run(t, n, "ip", "route", "add", "blackhole", "10.65.9.0/26", "proto", "116")
	run(t, n, "ip", "route", "add", "10.77.0.0/24", "via", "192.0.2.2", "proto", "static")

	st, err := newKernel().Apply(table(local, local6, directB, directC, ipipE, vxlanC, vxlanD))
	if err != nil {
		t.Fatal(err)
	}
	if st.Added != 6 || st.Deleted != 1 || st.Pending != 1 {
		t.Errorf("first apply: %+v: want 6 added, the leaked route deleted, ipip pending (no tunl0)", st)
	}
	routes := run(t, n, "ip", "route", "show", "proto", "116")
	wantLines(t, "ip route", routes, []string{
		"blackhole 10.65.0.0/26",
		"10.65.1.0/26 via 192.0.2.2 dev eth0",
		"10.65.3.0/26 via 192.0.2.254 dev eth0", // resolved through the underlay router
		"10.66.3.0/26 via 10.99.0.3 dev vxlan.tabby onlink",
		"10.66.4.0/26 via 10.99.0.4 dev vxlan.tabby onlink",
	}, []string{"10.65.9.0", "10.65.5.0"})
	wantLines(t, "ip -6 route", run(t, n, "ip", "-6", "route", "show", "proto", "116"), []string{"blackhole fd00:65::/122"}, nil)
	wantLines(t, "static route", run(t, n, "ip", "route", "show", "proto", "static"), []string{"10.77.0.0/24 via 192.0.2.2"}, nil)
	wantLines(t, "vxlan device", run(t, n, "ip", "-d", "addr", "show", "vxlan.tabby"), []string{
		"mtu 1450", "link/ether 66:00:00:00:00:01", "vxlan id 4096", "local 192.0.2.1", "dev eth0", "dstport 4789", "nolearning", "inet 10.99.0.1/32",
	}, nil)
	wantLines(t, "neighbours", run(t, n, "ip", "neigh", "show", "dev", "vxlan.tabby"), []string{
		"10.99.0.3 lladdr 66:00:00:00:00:03 PERMANENT", "10.99.0.4 lladdr 66:00:00:00:00:04 PERMANENT",
	}, nil)
	wantLines(t, "fdb", run(t, n, "bridge", "fdb", "show", "dev", "vxlan.tabby"), []string{
		"66:00:00:00:00:03 dst 198.51.100.3 self permanent", "66:00:00:00:00:04 dst 192.0.2.4 self permanent",
	}, nil)

	// Restart: a new programmer with the same table changes nothing, and
	// the kernel sends no notification.
	count, _ := watchNetlink(t, n.Handle())
	st, err = newKernel().Apply(table(local, local6, directB, directC, ipipE, vxlanC, vxlanD))
	if err != nil || st.Changes() != 0 || st.Unchanged != 6 {
		t.Errorf("re-apply after restart: %+v %v: want no change", st, err)
	}
	time.Sleep(300 * time.Millisecond)
	if c := count(); c != 0 {
		t.Errorf("re-apply after restart: %d netlink notifications, want 0", c)
	}

	// Drift is repaired: the device's MTU, a deleted neighbour, a changed
	// route.
	run(t, n, "ip", "link", "set", "vxlan.tabby", "mtu", "1400")
	run(t, n, "ip", "neigh", "del", "10.99.0.4", "dev", "vxlan.tabby")
	run(t, n, "ip", "route", "replace", "10.65.1.0/26", "via", "192.0.2.3", "proto", "116")
	k := newKernel()
	count, _ = watchNetlink(t, n.Handle())
	st, err = k.Apply(table(local, local6, directB, directC, ipipE, vxlanC, vxlanD))
	if err != nil || st.Changed != 1 || st.NextHopsAdded != 2 {
		t.Errorf("repair: %+v %v: want the route replaced, mtu and neighbour rewritten", st, err)
	}
	time.Sleep(100 * time.Millisecond)
	if c := count(); c < 3 {
		t.Errorf("repair: %d netlink notifications, want at least 3 (the watch works)", c)
	}
	wantLines(t, "repaired", run(t, n, "ip", "route", "show", "proto", "116"), []string{"10.65.1.0/26 via 192.0.2.2 dev eth0"}, nil)
	wantLines(t, "repaired", run(t, n, "ip", "link", "show", "vxlan.tabby"), []string{"mtu 1450"}, nil)

	// Node c goes: its routes, neighbour and FDB entry go; d's stay.
	st, err = k.Apply(table(local, local6, directB, ipipE, vxlanD))
	if err != nil || st.Deleted != 2 || st.NextHopsRemoved != 2 {
		t.Errorf("remove node c: %+v %v: want 2 routes, 1 neighbour, 1 fdb entry removed", st, err)
	}
	wantLines(t, "after removal", run(t, n, "ip", "route", "show", "proto", "116"), []string{"10.66.4.0/26 via 10.99.0.4"},
		[]string{"10.66.3.0", "10.65.3.0"})
	wantLines(t, "after removal", run(t, n, "ip", "neigh", "show", "dev", "vxlan.tabby"), []string{"10.99.0.4"}, []string{"10.99.0.3"})
	wantLines(t, "after removal", run(t, n, "bridge", "fdb", "show", "dev", "vxlan.tabby"), []string{"66:00:00:00:00:04"}, []string{"66:00:00:00:00:03"})

	// Nothing desired: every route of ours goes, the static one stays.
	if _, err := k.Apply(Table{}); err != nil {
		t.Fatal(err)
	}
	if out := run(t, n, "ip", "route", "show", "proto", "116") + run(t, n, "ip", "-6", "route", "show", "proto", "116"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left:\n%s", out)
	}
	wantLines(t, "static route", run(t, n, "ip", "route", "show", "proto", "static"), []string{"10.77.0.0/24 via 192.0.2.2"}, nil)
	if out := run(t, n, "bridge", "fdb", "show", "dev", "vxlan.tabby"); strings.Contains(out, "dst") {
		t.Errorf("fdb entries left:\n%s", out)
	}
}
