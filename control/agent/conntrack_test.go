package agent

import (
	"context"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
)

// conntrackHas reports whether the conntrack table of n has a flow of the
// family of ip with ip as original source or destination.
func conntrackHas(t *testing.T, n *topo.Netns, ip netip.Addr) bool {
	t.Helper()
	fam := netlink.InetFamily(netlink.FAMILY_V4)
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	flows, err := n.Netlink().ConntrackTableList(netlink.ConntrackTable, fam)
	if err != nil {
		t.Fatalf("list conntrack in %s: %v", n.Name, err)
	}
	for _, f := range flows {
		src, _ := netip.AddrFromSlice(f.Forward.SrcIP)
		dst, _ := netip.AddrFromSlice(f.Forward.DstIP)
		if src.Unmap() == ip || dst.Unmap() == ip {
			return true
		}
	}
	return false
}

// udpExchange sends a datagram from namespace from to to:port, where
// namespace at answers it, and waits for the answer.
func udpExchange(t *testing.T, from, at *topo.Netns, to netip.Addr, port int) {
	t.Helper()
	network := "udp4"
	if to.Is6() {
		network = "udp6"
	}
	dst := netip.AddrPortFrom(to, uint16(port))
	var srv net.PacketConn
	if err := at.Do(func() (err error) {
		srv, err = net.ListenPacket(network, dst.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 100)
		srv.SetDeadline(time.Now().Add(5 * time.Second))
		n, addr, err := srv.ReadFrom(buf)
		if err == nil {
			srv.WriteTo(buf[:n], addr)
		}
	}()
	var c net.Conn
	if err := from.Do(func() (err error) {
		c, err = net.Dial(network, dst.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("conntrack")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 100)); err != nil {
		t.Fatalf("UDP %s -> %s: no answer: %v", from.Name, dst, err)
	}
}

// metricValue returns the value of one sample of the agent's /metrics.
func metricValue(t *testing.T, a *Agent, sample string) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+a.Addr("metrics")+"/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in /metrics", sample)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestKernelConntrackAfterDelete: with the kernel dataplane, deleting a
// local endpoint through the endpoint API deletes the conntrack entries of
// its addresses (IPv4 and IPv6, flows the node forwarded for it), and
// leaves the others.
//
//	peer p0 192.168.50.2 fd00:50::2 ── up0 node tabpod1 ── pod0 pod (10.65.x.y, fd00:65::z)
func TestKernelConntrackAfterDelete(t *testing.T) {
	l := newLab(t)
	run := func(n *topo.Netns, args ...string) {
		t.Helper()
		if out, err := n.Run(args[0], args[1:]...); err != nil {
			t.Fatalf("%s: %v: %s", n.Name, err, out)
		}
	}
	run(l.node, "ip", "-6", "addr", "add", "fd00:50::1/64", "dev", "up0", "nodad")
	run(l.peer, "ip", "-6", "addr", "add", "fd00:50::2/64", "dev", "p0", "nodad")
	srv := etcdtest.Server(t)
	a := l.startAgent(t, l.agentFlags(t, srv.Endpoints(), etcdtest.Prefix(t), map[string]string{"dataplane": "kernel",
		"interfaces": "up0", "ipv6-pool-cidr": "fd00:65::/48"}))
	waitReady(t, a, 200, 20*time.Second)
	ctx := context.Background()
	resp, err := NewClient(a.Addr("cni")).AddEndpoint(ctx, EndpointRequest{ContainerID: "ct-1", Namespace: "shop",
		Pod: "web-1", InterfaceName: "tabpod1", IPv4: 1, IPv6: 1})
	if err != nil {
		t.Fatal(err)
	}
	var pod4, pod6 netip.Addr
	for _, s := range resp.IPs {
		if a := netip.MustParsePrefix(s).Addr(); a.Is4() {
			pod4 = a
		} else {
			pod6 = a
		}
	}
	if !pod4.IsValid() || !pod6.IsValid() {
		t.Fatalf("addresses %v, want one of each family", resp.IPs)
	}
	// What the CNI plugin would do, with on-link default routes (the node
	// answers for the peer by proxy ARP and proxy NDP).
	run(l.pod, "ip", "addr", "add", pod4.String()+"/32", "dev", "pod0")
	run(l.pod, "ip", "-6", "addr", "add", pod6.String()+"/128", "dev", "pod0", "nodad")
	run(l.pod, "ip", "route", "add", "default", "dev", "pod0")
	run(l.pod, "ip", "-6", "route", "add", "default", "dev", "pod0")
	run(l.node, "sysctl", "-qw", "net.ipv4.conf.tabpod1.proxy_arp=1", "net.ipv6.conf.tabpod1.proxy_ndp=1")
	run(l.node, "ip", "-6", "neigh", "add", "proxy", "fd00:50::2", "dev", "tabpod1")
	run(l.node, "ip", "route", "add", pod4.String()+"/32", "dev", "tabpod1")
	run(l.node, "ip", "-6", "route", "add", pod6.String()+"/128", "dev", "tabpod1")
	run(l.peer, "ip", "route", "add", "10.65.0.0/16", "via", "192.168.50.1")
	run(l.peer, "ip", "-6", "route", "add", "fd00:65::/48", "via", "fd00:50::1")

	// Real traffic the node forwards (it forwards because the kernel
	// dataplane set ip_forward and IPv6 forwarding), and a flow of the
	// peer with the node itself that must survive.
	udpExchange(t, l.pod, l.peer, netip.MustParseAddr("192.168.50.2"), 7001)
	udpExchange(t, l.pod, l.peer, netip.MustParseAddr("fd00:50::2"), 7002)
	udpExchange(t, l.peer, l.node, netip.MustParseAddr("192.168.50.1"), 7003)
	for _, ip := range []netip.Addr{pod4, pod6, netip.MustParseAddr("192.168.50.2")} {
		if !conntrackHas(t, l.node, ip) {
			t.Fatalf("no conntrack entry of %s in the node after traffic", ip)
		}
	}
	before4 := metricValue(t, a, `tabby_dataplane_conntrack_deleted_total{family="ipv4"}`)
	before6 := metricValue(t, a, `tabby_dataplane_conntrack_deleted_total{family="ipv6"}`)

	if _, err := NewClient(a.Addr("cni")).DeleteEndpoint(ctx, "ct-1"); err != nil {
		t.Fatal(err)
	}
	// The reply comes after the reconciler's flush, which deleted them.
	for _, ip := range []netip.Addr{pod4, pod6} {
		if conntrackHas(t, l.node, ip) {
			t.Errorf("conntrack entry of %s left after the endpoint was deleted", ip)
		}
	}
	if !conntrackHas(t, l.node, netip.MustParseAddr("192.168.50.2")) {
		t.Error("the peer's flow with the node was deleted too")
	}
	after4 := metricValue(t, a, `tabby_dataplane_conntrack_deleted_total{family="ipv4"}`)
	after6 := metricValue(t, a, `tabby_dataplane_conntrack_deleted_total{family="ipv6"}`)
	if after4-before4 < 1 || after6-before6 < 1 {
		t.Errorf("tabby_dataplane_conntrack_deleted_total: ipv4 %v -> %v, ipv6 %v -> %v, want +1 each",
			before4, after4, before6, after6)
	}
	if v := metricValue(t, a, "tabby_dataplane_conntrack_delete_errors_total"); v != 0 {
		t.Errorf("tabby_dataplane_conntrack_delete_errors_total %v", v)
	}
}
