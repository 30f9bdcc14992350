package agent

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
	"github.com/tabbynet/tabby/control/ipam"
	"github.com/tabbynet/tabby/control/resources"
)

// TestAgentKernelDataplane runs the agent with the kernel dataplane in a
// namespace: control/routes' kernel programmer installs this node's block
// (blackhole) and a route to another node's block, the policy becomes an
// nftables table naming the local endpoint, and both stay after the agent
// stops (a restart does not flap them).
func TestAgentKernelDataplane(t *testing.T) {
	l := newLab(t)
	srv := etcdtest.Server(t)
	flags := l.agentFlags(t, srv.Endpoints(), etcdtest.Prefix(t), map[string]string{"dataplane": "kernel",
		"interfaces": "up0"})
	a := l.startAgent(t, flags)
	waitReady(t, a, 200, 20*time.Second)
	ctx := context.Background()
	ds := a.Store().DS

	// Another node on the same subnet, with a block.
	n2 := &resources.Node{ObjectMeta: resources.ObjectMeta{Name: "n2"},
		Spec: resources.NodeSpec{Addresses: []resources.NodeAddress{{Address: "192.168.50.2/24"}}}}
	if _, err := datastore.Create(ctx, ds, n2); err != nil {
		t.Fatal(err)
	}
	im, err := ipam.New(ds, ipam.Config{Node: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	as, err := im.AutoAssign(ctx, ipam.AssignArgs{Handle: "n2-pod", Num4: 1})
	if err != nil {
		t.Fatal(err)
	}
	remoteBlock, _ := as.IPv4[0].Prefix(26)

	resp, err := NewClient(a.Addr("cni")).AddEndpoint(ctx, EndpointRequest{ContainerID: "k1", Namespace: "shop",
		Pod: "web-1", InterfaceName: "tabpod1", Labels: map[string]string{"app": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParsePrefix(resp.IPs[0]).Addr()
	localBlock, _ := ip.Prefix(26)
	applyYAML(t, a.Store(), webIngressPolicy)

	routesHave := func() string {
		out, err := l.node.Run("ip", "route", "show", "proto", "116")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	wantRoutes := []string{"blackhole " + localBlock.String(), remoteBlock.String() + " via 192.168.50.2 dev up0"}
	waitFor(t, "kernel routes", 10*time.Second, func() bool {
		out := routesHave()
		for _, w := range wantRoutes {
			if !strings.Contains(out, w) {
				return false
			}
		}
		return true
	})
	nft := func() string {
		out, _ := l.node.Run("nft", "list", "table", "inet", "tabby")
		return out
	}
	waitFor(t, "nftables policy", 10*time.Second, func() bool {
		out := nft()
		return strings.Contains(out, ip.String()) && strings.Contains(out, "7000")
	})
	// The node forwards (the lab left ip_forward 0); no IPv6 pool, so
	// IPv6 forwarding is left alone.
	if v := sysctlIn(t, l.node, "net.ipv4.ip_forward"); v != "1" {
		t.Errorf("net.ipv4.ip_forward = %s, want 1", v)
	}
	if v := sysctlIn(t, l.node, "net.ipv6.conf.all.forwarding"); v != "0" {
		t.Errorf("net.ipv6.conf.all.forwarding = %s without an IPv6 pool, want 0", v)
	}
	st := a.Status(ctx)
	if !st.Ready || st.Dataplane != "kernel" || st.Routes.IPv4 < 2 {
		t.Errorf("status: %+v", st)
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	out := routesHave()
	for _, w := range wantRoutes {
		if !strings.Contains(out, w) {
			t.Errorf("route %q gone after the agent stopped:\n%s", w, out)
		}
	}
	if !strings.Contains(nft(), ip.String()) {
		t.Error("nftables policy gone after the agent stopped")
	}
}

// sysctlIn reads a sysctl in namespace n.
func sysctlIn(t *testing.T, n *topo.Netns, key string) string {
	t.Helper()
	var v []byte
	err := n.Do(func() (err error) {
		v, err = os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

// TestKernelForwardingSysctls: the kernel dataplane turns IPv4 forwarding
// on at start in its namespace, and IPv6 forwarding when an IPv6 pool
// exists; a sysctl it cannot set fails the start naming it.
func TestKernelForwardingSysctls(t *testing.T) {
	l := newLab(t)
	if err := l.node.Sysctl("net.ipv6.conf.all.forwarding", "0"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if v := sysctlIn(t, l.node, k); v != "0" {
			t.Fatalf("fresh node namespace: %s = %s, want 0", k, v)
		}
	}
	srv := etcdtest.Server(t)
	a := l.startAgent(t, l.agentFlags(t, srv.Endpoints(), etcdtest.Prefix(t), map[string]string{"dataplane": "kernel",
		"interfaces": "up0", "ipv6-pool-cidr": "fd00:65::/48"}))
	waitReady(t, a, 200, 20*time.Second)
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if v := sysctlIn(t, l.node, k); v != "1" {
			t.Errorf("kernel dataplane with an IPv6 pool: %s = %s, want 1", k, v)
		}
	}
	// Idempotent: set again, nothing to change.
	if err := enableForwarding(l.node.Handle(), "/proc/sys", true, testLogger(t)); err != nil {
		t.Error(err)
	}
	// A sysctl that cannot be read or set is named.
	err := enableForwarding(l.node.Handle(), filepath.Join(t.TempDir(), "missing"), false, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "net.ipv4.ip_forward") {
		t.Errorf("missing sysctl tree: %v, want an error naming net.ipv4.ip_forward", err)
	}
}
