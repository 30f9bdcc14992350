package datapath

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/acl"
)

// enforcePolicy compiles st (incrementally, with the node's compiler, as
// the agent does) and turns policy on in the test node.
func (n *testNode) enforcePolicy(st *acl.State) {
	n.t.Helper()
	if n.compiler == nil {
		n.compiler = acl.NewCompiler(acl.Options{})
	}
	for _, ns := range st.Namespaces {
		n.compiler.SetNamespace(ns)
	}
	for _, e := range st.Endpoints {
		if err := n.compiler.SetEndpoint(e); err != nil {
			n.t.Fatal(err)
		}
	}
	for _, p := range st.Policies {
		if err := n.compiler.SetPolicy(p); err != nil {
			n.t.Fatal(err)
		}
	}
	c, _ := n.compiler.Compile()
	if err := n.tables.SetPolicy(c); err != nil {
		n.t.Fatal(err)
	}
	node := n.tables.Load().Node
	node.EnforcePolicy = true
	if err := n.tables.SetNode(node); err != nil {
		n.t.Fatal(err)
	}
}

// policyState: pods "web" (10.244.1.5, role=web) and "client" (10.244.1.7,
// role=client) in namespace "demo"; web admits TCP 80 from role=client only.
func policyState() *acl.State {
	return &acl.State{
		Namespaces: []acl.Namespace{{Name: "demo"}},
		Endpoints: []acl.Endpoint{
			{Name: "web", Namespace: "demo", Labels: map[string]string{"role": "web"},
				IPs: []netip.Addr{netip.MustParseAddr("10.244.1.5")}},
			{Name: "client", Namespace: "demo", Labels: map[string]string{"role": "client"},
				IPs: []netip.Addr{netip.MustParseAddr("10.244.1.7")}},
		},
		Policies: []acl.Policy{{
			Name: "web-allow-client", Namespace: "demo", Selector: "role == 'web'",
			Types: []acl.Direction{acl.Ingress},
			Ingress: []acl.Rule{{
				Action: acl.Allow, Protocol: acl.ProtoTCP,
				Source:      acl.EntityRule{Selector: "role == 'client'"},
				Destination: acl.EntityRule{Ports: []acl.Port{{Min: 80, Max: 80}}},
			}},
		}},
	}
}

func TestPolicyEnforced(t *testing.T) {
	n := newTestNode(t)
	n.enforcePolicy(policyState())
	var traces []string
	n.w.SetTrace(func(r *TraceRecord) { traces = append(traces, r.String()) })

	// Allowed: client -> web tcp/80.
	out := n.run(portPods, buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.5", proto: "tcp", sport: 40000, dport: 80}))
	only(t, out, portPods)
	// Denied: client -> web tcp/22, and an outsider (from another node) -> web tcp/80.
	n.run(portPods, buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.5", proto: "tcp", sport: 40001, dport: 22}))
	n.run(portUplink, buildPacket(t, pktSpec{src: "10.244.2.9", dst: "10.244.1.5", proto: "tcp", sport: 40002, dport: 80}))
	c := n.w.Counters()
	if c.Drops[DropPolicy] != 2 || c.TxPackets != 1 {
		t.Fatalf("counters %+v", c)
	}
	// Return traffic of the allowed flow passes (conntrack), although web
	// has no egress rule naming the client... web has no egress policy at
	// all, so check the reverse of a denied flow instead: web -> outsider
	// is allowed (no egress policy), so conntrack must carry the reply
	// web:80 -> client:40000.
	out = n.run(portPods, buildPacket(t, pktSpec{src: "10.244.1.5", dst: "10.244.1.7", proto: "tcp", sport: 80, dport: 40000}))
	only(t, out, portPods)
	if st := n.w.PolicyStats(); st.Established == 0 {
		t.Fatalf("reply not matched by conntrack: %+v", st)
	}
	if len(traces) != 4 {
		t.Fatalf("%d trace records, want 4: %q", len(traces), traces)
	}
	if !strings.Contains(traces[0], "web-allow-client") || !strings.Contains(traces[1], "drop=policy") {
		t.Fatalf("traces do not name the policy and the drop:\n%s", strings.Join(traces, "\n"))
	}
	p := decode(t, out[portPods][0])
	if tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP); tcp == nil || tcp.SrcPort != 80 {
		t.Fatalf("reply %v", p)
	}
}

func TestPolicyRevokedOnChange(t *testing.T) {
	n := newTestNode(t)
	st := policyState()
	n.enforcePolicy(st)
	flow := buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.5", proto: "tcp", sport: 40000, dport: 80})
	only(t, n.run(portPods, flow), portPods)
	// The policy now allows port 8080 only: the established flow must stop.
	st.Policies[0].Ingress[0].Destination.Ports = []acl.Port{{Min: 8080, Max: 8080}}
	n.enforcePolicy(st)
	n.run(portPods, flow)
	if c := n.w.Counters(); c.Drops[DropPolicy] != 1 {
		t.Fatalf("established flow not revoked after the policy change: %+v", c)
	}
}

func TestPolicyFailClosedWithoutCompile(t *testing.T) {
	n := newTestNode(t)
	node := n.tables.Load().Node
	node.EnforcePolicy = true
	if err := n.tables.SetNode(node); err != nil {
		t.Fatal(err)
	}
	n.run(portPods, buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.5"}))
	// Host traffic (ARP, the node's own) is not subject to workload policy.
	n.run(portUplink, buildPacket(t, pktSpec{src: "192.168.1.2", dst: "192.168.0.1", proto: "tcp", dport: 179}))
	if c := n.w.Counters(); c.Drops[DropPolicy] != 1 || c.ToHost != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestPolicyLogRecords(t *testing.T) {
	n := newTestNode(t)
	st := policyState()
	st.Policies[0].Ingress = append([]acl.Rule{{Action: acl.Log, Protocol: acl.ProtoTCP}}, st.Policies[0].Ingress...)
	n.enforcePolicy(st)
	only(t, n.run(portPods, buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.5", proto: "tcp", sport: 40000, dport: 80})), portPods)
	var recs []acl.LogRecord
	n.w.DrainPolicyLogs(func(r *acl.LogRecord) { recs = append(recs, *r) })
	if len(recs) != 1 || recs[0].Packet.DstPort != 80 || recs[0].Verdict != acl.Allowed {
		t.Fatalf("log records %+v", recs)
	}
	if st := n.w.PolicyStats(); st.Logged != 1 {
		t.Fatalf("policy stats %+v", st)
	}
}
