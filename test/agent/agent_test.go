package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/ipam"
	"github.com/tabbynet/tabby/control/resources"
)

// vteps returns each node's VXLAN tunnel address from its Node object,
// checking the registration: address, VTEP in the pool, VTEP MAC.
func vteps(t *testing.T, e *env) map[string]netip.Addr {
	t.Helper()
	nodes, _, err := datastore.ListOf[*resources.Node](context.Background(), e.kds)
	must(t, err)
	out := map[string]netip.Addr{}
	for _, rn := range nodes {
		out[rn.Name] = netip.Addr{}
		n := e.node(rn.Name)
		if len(rn.Spec.Addresses) != 1 || rn.Spec.Addresses[0].Address != n.addr.String() {
			t.Errorf("node %s: addresses %+v, want %s", rn.Name, rn.Spec.Addresses, n.addr)
		}
		vtep, err := netip.ParseAddr(rn.Spec.IPv4VXLANTunnelAddr)
		if err != nil || !netip.MustParsePrefix(poolCIDR).Contains(vtep) || rn.Spec.VXLANTunnelMACAddr == "" {
			t.Errorf("node %s: VTEP %q MAC %q", rn.Name, rn.Spec.IPv4VXLANTunnelAddr, rn.Spec.VXLANTunnelMACAddr)
		}
		out[rn.Name] = vtep
	}
	if len(out) != len(e.nodes) {
		t.Fatalf("nodes registered: %v, want %d", out, len(e.nodes))
	}
	return out
}

// blockOf returns the IPAM block holding ip, checking that it and its
// BlockAffinity are affine to node.
func blockOf(t *testing.T, e *env, ip netip.Addr, node string) netip.Prefix {
	t.Helper()
	ctx := context.Background()
	blocks, _, err := datastore.ListOf[*resources.IPAMBlock](ctx, e.kds)
	must(t, err)
	for _, b := range blocks {
		if !b.Prefix().Contains(ip) {
			continue
		}
		if b.AffineNode() != node {
			t.Fatalf("block %s of %s is affine to %q, want %s", b.Spec.CIDR, ip, b.AffineNode(), node)
		}
		affs, _, err := datastore.ListOf[*resources.BlockAffinity](ctx, e.kds)
		must(t, err)
		for _, a := range affs {
			if a.Spec.CIDR == b.Spec.CIDR {
				if a.Spec.Node != node || a.Spec.State != resources.AffinityConfirmed {
					t.Fatalf("affinity of %s: %+v", b.Spec.CIDR, a.Spec)
				}
				return b.Prefix()
			}
		}
		t.Fatalf("block %s has no BlockAffinity", b.Spec.CIDR)
	}
	t.Fatalf("no IPAM block holds %s", ip)
	return netip.Prefix{}
}

// TestTwoNodesVXLAN: two agents (VXLAN, no BGP) on the apiserver register
// their Nodes with VTEPs, the first creates the default pool, endpoints
// added through each agent's socket get addresses from a block affine to
// their node, each node's kernel routes the other's block through the
// VXLAN device (and traffic flows), and a delete releases the address.
func TestTwoNodesVXLAN(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	n1, n2 := e.node("n1"), e.node("n2")
	e.start(n1, nil)
	e.start(n2, nil)
	ctx := context.Background()

	vt := vteps(t, e)
	pools, _, err := datastore.ListOf[*resources.IPPool](ctx, e.kds)
	must(t, err)
	if len(pools) != 1 || pools[0].Name != "default-ipv4-ippool" || pools[0].Spec.CIDR != poolCIDR ||
		pools[0].Spec.VXLANMode != resources.EncapAlways {
		t.Fatalf("pools: %+v", pools)
	}

	ns := e.namespace("tabby-vx", nil)
	p1 := e.addPod(n1, ns, "p1", map[string]string{"app": "a"})
	p2 := e.addPod(n2, ns, "p2", map[string]string{"app": "b"})
	if p1.resp.Node != "n1" || p2.resp.Node != "n2" || p1.resp.Name != "p1" {
		t.Errorf("replies: %+v %+v", p1.resp, p2.resp)
	}
	b1, b2 := blockOf(t, e, p1.ip, "n1"), blockOf(t, e, p2.ip, "n2")
	if b1 == b2 {
		t.Fatalf("both pods in block %s", b1)
	}
	// Each kernel: its own block blackholed, the other's via the VTEP.
	for _, c := range []struct {
		n            *node
		local, other netip.Prefix
		otherVTEP    netip.Addr
	}{{n1, b1, b2, vt["n2"]}, {n2, b2, b1, vt["n1"]}} {
		want := []string{"blackhole " + c.local.String(),
			fmt.Sprintf("%s via %s dev %s", c.other, c.otherVTEP, vxlanDev)}
		waitFor(t, c.n.name+" routes", 15*time.Second, func() bool {
			out := protoRoutes(t, c.n)
			for _, w := range want {
				if !strings.Contains(out, w) {
					return false
				}
			}
			return true
		})
		t.Logf("%s routes:\n%s", c.n.name, protoRoutes(t, c.n))
	}
	// Traffic across the VXLAN tunnel, both ways.
	p1.serve(t, 8080)
	p2.serve(t, 8080)
	expectTraffic(t, p1, p2, 8080, true)
	expectTraffic(t, p2, p1, 8080, true)
	st := n1.a.Status(ctx)
	if !st.Ready || st.Endpoints.Local != 1 || st.Endpoints.Total != 2 || st.Routes.IPv4 < 2 {
		t.Errorf("n1 status: ready %v endpoints %+v routes %+v", st.Ready, st.Endpoints, st.Routes)
	}

	// DEL releases the address and the handle.
	dr, err := agent.NewClient(n1.a.Addr("cni")).DeleteEndpoint(ctx, p1.containerID)
	must(t, err)
	if len(dr.Released) != 1 || dr.Released[0] != p1.ip.String() {
		t.Errorf("delete: %+v", dr)
	}
	im, err := ipam.New(e.kds, ipam.Config{Node: "n1"})
	must(t, err)
	if ips, err := im.IPsByHandle(ctx, p1.containerID); err != nil || len(ips) != 0 {
		t.Errorf("handle %s after delete: %v %v", p1.containerID, ips, err)
	}
	if _, err := e.kds.Get(ctx, resources.Key{Kind: resources.KindIPAMHandle, Name: p1.containerID}); !datastore.IsNotFound(err) {
		t.Errorf("IPAMHandle after delete: %v", err)
	}
	waitFor(t, "n1 forgets the endpoint", 10*time.Second, func() bool { return n1.a.Status(ctx).Endpoints.Local == 0 })
}

// TestPolicyTraffic: Kubernetes Pods, a networking.k8s.io NetworkPolicy
// and a Tabby GlobalNetworkPolicy custom resource become the kernel
// dataplane's nftables rules on both nodes; real TCP connections between
// pod namespaces are allowed and denied accordingly, and deleting the
// policies restores them.
func TestPolicyTraffic(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	n1, n2 := e.node("n1"), e.node("n2")
	e.start(n1, nil)
	e.start(n2, nil)
	ctx := context.Background()

	ns := e.namespace("tabby-pol", map[string]string{"team": "shop"})
	web := e.addPod(n2, ns, "web", map[string]string{"app": "web"})
	client := e.addPod(n1, ns, "client", map[string]string{"app": "client"})
	other := e.addPod(n1, ns, "other", map[string]string{"app": "other"})
	web.serve(t, 8080)
	web.serve(t, 9090)
	expectTraffic(t, client, web, 8080, true)
	expectTraffic(t, other, web, 8080, true)

	// A Kubernetes NetworkPolicy: web admits only the clients, on 8080.
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(8080)
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		}}
	_, err := e.cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{})
	must(t, err)
	expectTraffic(t, other, web, 8080, false)
	expectTraffic(t, client, web, 8080, true)
	expectTraffic(t, client, web, 9090, false)
	// n2 enforces it: web's ingress program names the client's address.
	nft, err := n2.ns.Run("nft", "-j", "list", "table", "inet", acl.NftablesTable)
	must(t, err)
	contains(t, "n2 nftables", nft, web.ip.String(), client.ip.String())

	// A Tabby GlobalNetworkPolicy (a custom resource through the agent's
	// object store) denies the clients' egress to 8080: enforced on n1.
	applyYAML(t, e.store, `apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: client-no-8080}
spec:
  order: 10
  selector: app == 'client'
  types: [Egress]
  egress:
  - action: Deny
    protocol: TCP
    destination: {ports: [8080]}
  - action: Allow
`)
	expectTraffic(t, client, web, 8080, false)
	if st := n1.a.Status(ctx); len(st.Policy.Errors) > 0 || !st.Ready {
		t.Errorf("n1 policy status: %+v", st.Policy)
	}
	// Deleting it restores the clients' traffic.
	_, err = e.store.Delete(ctx, resources.Key{Kind: agent.KindGlobalNetworkPolicy, Name: "client-no-8080"}, "")
	must(t, err)
	expectTraffic(t, client, web, 8080, true)
	// Deleting the NetworkPolicy opens web again.
	must(t, e.cs.NetworkingV1().NetworkPolicies(ns).Delete(ctx, "web", metav1.DeleteOptions{}))
	expectTraffic(t, other, web, 8080, true)
	expectTraffic(t, client, web, 9090, true)
}

// TestTabbyNetworkPolicy: a namespaced Tabby NetworkPolicy and its Tier
// as custom resources, next to a Kubernetes NetworkPolicy of the same
// name in the same namespace: both apply, and deleting one leaves the
// other in force (their compiled names differ).
func TestTabbyNetworkPolicy(t *testing.T) {
	e := newEnv(t, "n1")
	n1 := e.node("n1")
	e.start(n1, nil)
	ctx := context.Background()
	ns := e.namespace("tabby-np", nil)
	web := e.addPod(n1, ns, "web", map[string]string{"app": "web"})
	client := e.addPod(n1, ns, "client", map[string]string{"app": "client"})
	web.serve(t, 8080)
	web.serve(t, 9090)
	expectTraffic(t, client, web, 9090, true)

	// Tier "security" (order 100) before the default tier: its policy
	// denies 9090 to web and passes the rest on.
	applyYAML(t, e.store, fmt.Sprintf(`apiVersion: tabby.dev/v1
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata: {name: web, namespace: %s}
spec:
  tier: security
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [9090]}
  - action: Pass
`, ns))
	expectTraffic(t, client, web, 9090, false)
	expectTraffic(t, client, web, 8080, true)
	// A Kubernetes NetworkPolicy "web" too: only 8080 from clients.
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(8080)
	_, err := e.cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}}},
	}, metav1.CreateOptions{})
	must(t, err)
	waitFor(t, "both policies in n1's status", 10*time.Second, func() bool {
		st := n1.a.Status(ctx)
		return st.Policy.Policies >= 2
	})
	// Deleting the Tabby policy leaves the Kubernetes one: 9090 stays
	// closed (now by the NetworkPolicy), 8080 open.
	_, err = e.store.Delete(ctx, resources.Key{Kind: agent.KindNetworkPolicy, Namespace: ns, Name: "web"}, "")
	must(t, err)
	waitFor(t, "the Tabby policy gone from n1's status", 10*time.Second, func() bool {
		return n1.a.Status(ctx).Policy.Policies == 1
	})
	expectTraffic(t, client, web, 9090, false)
	expectTraffic(t, client, web, 8080, true)
	must(t, e.cs.NetworkingV1().NetworkPolicies(ns).Delete(ctx, "web", metav1.DeleteOptions{}))
	expectTraffic(t, client, web, 9090, true)
}
