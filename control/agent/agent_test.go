package agent

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/datapath"
)

// udpCheck classifies a UDP packet from the peer to dst:port with the
// published policy.
func udpCheck(a *Agent, dst netip.Addr, port uint16) acl.Verdict {
	p := &acl.Packet{Family: acl.IPv4, Proto: 17, SrcPort: 40000, DstPort: port,
		Src4: binary.BigEndian.Uint32([]byte{192, 168, 50, 2}), Dst4: binary.BigEndian.Uint32(dst.AsSlice())}
	return a.Tables().Load().Policy.Check(p).Verdict
}

func applyYAML(t *testing.T, s *Store, doc string) {
	t.Helper()
	objs, err := Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, _, err := s.Apply(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
}

const webIngressPolicy = `
apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: web-ingress
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: UDP
    destination:
      ports: [7000]
`

// TestAgentEndToEnd runs an agent with the afxdp dataplane in a namespace
// on a real etcd: registration, the endpoint API (IPAM, policy published
// before the reply), packets through the engine allowed and denied by a
// policy applied to the datastore, DELETE releasing, /metrics, /v1/status,
// and a graceful shutdown that leaves no XDP program and no goroutine.
func TestAgentEndToEnd(t *testing.T) {
	l := newLab(t)
	srv := etcdtest.Server(t)
	a := l.startAgent(t, l.agentFlags(t, srv.Endpoints(), etcdtest.Prefix(t), nil))
	waitReady(t, a, 200, 20*time.Second)
	ctx := context.Background()
	store := a.Store()

	// Registration and bootstrap.
	n, err := datastore.Get[*resources.Node](ctx, store.DS, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Spec.Addresses) != 1 || n.Spec.Addresses[0].Address != "192.168.50.1/24" {
		t.Errorf("node addresses %+v", n.Spec.Addresses)
	}
	if _, err := datastore.Get[*resources.IPPool](ctx, store.DS, "default-ipv4-ippool"); err != nil {
		t.Errorf("default pool: %v", err)
	}

	// ADD: an address from a block of this node, the endpoint compiled in.
	cli := NewClient(a.Addr("cni"))
	req := EndpointRequest{ContainerID: "c1", Namespace: "shop", Pod: "web-1", InterfaceName: "tabpod1",
		MAC: l.podMAC.String(), Labels: map[string]string{"app": "web"}}
	resp, err := cli.AddEndpoint(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.IPs) != 1 || resp.Gateway4 != Gateway4 || resp.Node != "n1" {
		t.Fatalf("add: %+v", resp)
	}
	ip := netip.MustParsePrefix(resp.IPs[0]).Addr()
	blocks, _, err := datastore.ListOf[*resources.IPAMBlock](ctx, store.DS)
	if err != nil || len(blocks) != 1 {
		t.Fatalf("blocks: %v %d", err, len(blocks))
	}
	if !blocks[0].Prefix().Contains(ip) || blocks[0].AffineNode() != "n1" {
		t.Errorf("address %s not in the node's block %s (affinity %q)", ip, blocks[0].Spec.CIDR, blocks[0].Spec.Affinity)
	}
	snap := a.Tables().Load()
	if snap.Policy == nil || snap.Policy.Generation < resp.PolicyGeneration {
		t.Fatalf("policy not published before the reply (reply generation %d)", resp.PolicyGeneration)
	}
	idx, ok := snap.Policy.EndpointOf(ip)
	if !ok || snap.Policy.Endpoint(idx).Labels["app"] != "web" || snap.Policy.Endpoint(idx).Namespace != "shop" {
		t.Fatalf("endpoint %s not in the compiled policy", ip)
	}
	again, err := cli.AddEndpoint(ctx, req)
	if err != nil || !slices.Equal(again.IPs, resp.IPs) {
		t.Errorf("repeated ADD: %v %v, want %v", err, again.IPs, resp.IPs)
	}
	if eps, err := cli.Endpoints(ctx); err != nil || len(eps) != 1 || eps[0].ContainerID != "c1" {
		t.Errorf("GET /v1/endpoints: %v %+v", err, eps)
	}
	if _, err := cli.AddEndpoint(ctx, EndpointRequest{ContainerID: "bad id"}); err == nil ||
		!strings.Contains(err.Error(), "invalid") {
		t.Errorf("bad container ID: %v", err)
	}

	// Packets from the peer to the pod, through the engine.
	podRaw, peerRaw := l.raw(l.pod, "pod0"), l.raw(l.peer, "p0")
	send := func(port uint16, payload string) {
		t.Helper()
		if err := peerRaw.Send(l.udpFrame(t, ip, port, payload)); err != nil {
			t.Fatal(err)
		}
	}
	delivered := func(payload string, within time.Duration) bool {
		_, err := podRaw.Recv(within, hasPayload(payload))
		return err == nil
	}
	send(7001, "open-1")
	if !delivered("open-1", 5*time.Second) {
		t.Fatalf("no policy: packet not delivered; counters %+v", a.Status(ctx).Drops)
	}

	// A policy: only UDP 7000 in.
	gen := a.Tables().Load().Policy.Generation
	applyYAML(t, store, webIngressPolicy)
	waitFor(t, "policy published", 5*time.Second, func() bool { return a.Tables().Load().Policy.Generation > gen })
	if v := udpCheck(a, ip, 7000); v != acl.Allowed {
		t.Errorf("port 7000: %v, want allow", v)
	}
	if v := udpCheck(a, ip, 7001); v != acl.Denied {
		t.Errorf("port 7001: %v, want deny", v)
	}
	dropsBefore := a.dp.(*afxdpDataplane).eng.Counters().Drops[datapath.DropPolicy]
	send(7000, "allowed-1")
	send(7001, "denied-1")
	if !delivered("allowed-1", 5*time.Second) {
		t.Error("allowed packet not delivered")
	}
	if delivered("denied-1", 300*time.Millisecond) {
		t.Error("denied packet delivered")
	}
	waitFor(t, "a policy drop", 5*time.Second, func() bool {
		return a.dp.(*afxdpDataplane).eng.Counters().Drops[datapath.DropPolicy] > dropsBefore
	})

	// Deleting the policy opens the port again.
	gen = a.Tables().Load().Policy.Generation
	if _, err := store.Delete(ctx, resources.Key{Kind: KindGlobalNetworkPolicy, Name: "web-ingress"}, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "policy published", 5*time.Second, func() bool { return a.Tables().Load().Policy.Generation > gen })
	send(7001, "open-2")
	if !delivered("open-2", 5*time.Second) {
		t.Error("packet not delivered after the policy was deleted")
	}

	// Status and metrics. The worker publishes its counters after the
	// batch, so they may lag the delivery a moment.
	waitFor(t, "counters", 5*time.Second, func() bool { return a.Status(ctx).Counters["toLocal"] >= 3 })
	st, err := cli.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Ready || st.Endpoints.Local != 1 || len(st.Blocks) != 1 || st.Blocks[0].InUse != 1 || st.Routes.IPv4 < 2 ||
		st.Counters["toLocal"] < 3 || st.Drops["policy"] < 1 {
		t.Errorf("status: %+v", st)
	}
	code, metrics := httpGet(t, "http://"+a.Addr("metrics")+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, m := range []string{
		`tabby_dataplane_drops_total{reason="no_route"}`, `tabby_dataplane_drops_total{reason="policy"} `,
		`tabby_dataplane_packets_total{direction="rx"}`, `tabby_datastore_synced{kind="IPPool"} 1`,
		`tabby_dataplane_socket_drops_total{reason="rx_dropped"} `, "tabby_dataplane_socket_kicks_total ",
		`tabby_datastore_ready 1`, "tabby_reconcile_total ", "tabby_reconcile_duration_seconds_count ",
		"tabby_ipam_blocks 1", "tabby_ipam_addresses_in_use 1", `tabby_fib_routes{family="ipv4"} `,
		"tabby_policy_compile_duration_seconds_count ", "tabby_policy_generation ",
		`tabby_cni_requests_total{code="200",method="POST"} 2`, `tabby_cni_requests_total{code="400",method="POST"} 1`,
	} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if code, body := httpGet(t, "http://"+a.Addr("health")+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d %s", code, body)
	}

	// DEL releases, idempotently, and unroutes the address.
	dr, err := cli.DeleteEndpoint(ctx, "c1")
	if err != nil || !slices.Equal(dr.Released, []string{ip.String()}) || len(dr.Endpoints) != 1 {
		t.Fatalf("delete: %v %+v", err, dr)
	}
	if dr, err := cli.DeleteEndpoint(ctx, "c1"); err != nil || len(dr.Released) != 0 || len(dr.Endpoints) != 0 {
		t.Errorf("second delete: %v %+v", err, dr)
	}
	if _, ok := a.Tables().Load().Policy.EndpointOf(ip); ok {
		t.Error("deleted endpoint still in the policy")
	}
	if addrs, err := a.ipam.IPsByHandle(ctx, "c1"); err != nil || len(addrs) != 0 {
		t.Errorf("handle after delete: %v %v", err, addrs)
	}
	send(7000, "gone-1")
	if delivered("gone-1", 300*time.Millisecond) {
		t.Error("packet to a deleted endpoint delivered")
	}

	// Graceful shutdown: no XDP program, no socket, no goroutine left.
	if !l.xdpAttached(l.node, "up0") {
		t.Fatal("no XDP program on the uplink while running")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ifn := range []string{"up0", "tabpod1"} {
		if l.xdpAttached(l.node, ifn) {
			t.Errorf("XDP program left on %s", ifn)
		}
	}
	if _, err := os.Stat(a.Addr("cni")); !os.IsNotExist(err) {
		t.Errorf("CNI socket left: %v", err)
	}
	var left []string
	deadline := time.Now().Add(5 * time.Second)
	for left = agentGoroutines(); len(left) > 0 && time.Now().Before(deadline); left = agentGoroutines() {
		time.Sleep(50 * time.Millisecond)
	}
	for _, g := range left {
		t.Errorf("goroutine left after Close:\n%s", g)
	}
}
