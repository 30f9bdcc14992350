package acl_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/acl"
)

func ip4(s string) uint32 {
	b := netip.MustParseAddr(s).As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// twoPods: web (10.0.0.1) may receive tcp/80 from client (10.0.0.2) only.
func twoPods(t testing.TB, allowPort uint16) *acl.Compiler {
	c := acl.NewCompiler(acl.Options{})
	for _, e := range []acl.Endpoint{
		{Name: "web", Namespace: "a", Labels: map[string]string{"app": "web"}, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		{Name: "client", Namespace: "a", Labels: map[string]string{"app": "client"}, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.2")}},
	} {
		if err := c.SetEndpoint(e); err != nil {
			t.Fatal(err)
		}
	}
	setWebPolicy(t, c, allowPort)
	// client accepts nothing: replies reach it only through conntrack.
	if err := c.SetPolicy(acl.Policy{Name: "client", Namespace: "a", Selector: "app == 'client'", Types: []acl.Direction{acl.Ingress}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func setWebPolicy(t testing.TB, c *acl.Compiler, port uint16) {
	err := c.SetPolicy(acl.Policy{Name: "web", Namespace: "a", Selector: "app == 'web'", Ingress: []acl.Rule{
		{Action: acl.Log, Protocol: acl.ProtoTCP, Source: acl.EntityRule{Selector: "app == 'client'"}},
		{Action: acl.Allow, Protocol: acl.ProtoTCP, Source: acl.EntityRule{Selector: "app == 'client'"},
			Destination: acl.EntityRule{Ports: []acl.Port{{Min: port, Max: port}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
}

func tcp(src, dst string, sp, dp uint16, flags uint8) acl.Packet {
	return acl.Packet{Family: acl.IPv4, Proto: 6, Src4: ip4(src), Dst4: ip4(dst), SrcPort: sp, DstPort: dp, TCPFlags: flags}
}

// stepper returns a function that runs one packet through f under pol and
// returns its decision, for tests that follow a flow packet by packet.
func stepper(f *acl.Filter, pol *acl.Compiled) func(p acl.Packet, now int64) acl.Decision {
	out := make([]acl.Decision, 1)
	return func(p acl.Packet, now int64) acl.Decision {
		f.Process(pol, []acl.Packet{p}, out, now)
		return out[0]
	}
}

func TestFilterConntrack(t *testing.T) {
	c := twoPods(t, 80)
	pol, _ := c.Compile()
	f := acl.NewFilter(acl.FilterConfig{})
	step := stepper(f, pol)
	out := make([]acl.Decision, 1)
	// The reply direction is denied by policy (client has no rule for web's
	// source port) but allowed as part of the flow.
	if d := step(tcp("10.0.0.1", "10.0.0.2", 80, 5555, 0x12), 0); d.Verdict != acl.Denied || d.Check.Ingress.Kind != acl.MatchEndOfTier {
		t.Fatalf("unsolicited reply: %+v", d)
	}
	if d := step(tcp("10.0.0.2", "10.0.0.1", 5555, 80, 0x02), 1); d.Verdict != acl.Allowed || d.Reason != acl.ReasonPolicy {
		t.Fatalf("SYN: %+v", d)
	}
	if d := step(tcp("10.0.0.1", "10.0.0.2", 80, 5555, 0x12), 2); d.Verdict != acl.Allowed || d.Reason != acl.ReasonEstablished {
		t.Fatalf("SYN-ACK: %+v", d)
	}
	// Denied port from client, then an ICMP error about the allowed flow.
	if d := step(tcp("10.0.0.2", "10.0.0.1", 5556, 81, 0x02), 3); d.Verdict != acl.Denied {
		t.Fatalf("port 81: %+v", d)
	}
	q := tcp("10.0.0.2", "10.0.0.1", 5555, 80, 0)
	icmpErr := acl.Packet{Family: acl.IPv4, Proto: 1, Src4: ip4("10.0.0.1"), Dst4: ip4("10.0.0.2"), DstPort: 3 << 8, Quoted: &q}
	if d := step(icmpErr, 4); d.Verdict != acl.Allowed || d.Reason != acl.ReasonRelated {
		t.Fatalf("related ICMP: %+v", d)
	}
	// Policy change: port 80 no longer allowed. The open flow is revoked at
	// its next packet, in either direction.
	setWebPolicy(t, c, 8080)
	pol2, _ := c.Compile()
	f.Process(pol2, []acl.Packet{tcp("10.0.0.1", "10.0.0.2", 80, 5555, 0x10)}, out, 5)
	if out[0].Verdict != acl.Denied || out[0].Reason != acl.ReasonRevoked {
		t.Fatalf("after policy change: %+v", out[0])
	}
	f.Process(pol2, []acl.Packet{tcp("10.0.0.2", "10.0.0.1", 5555, 80, 0x10)}, out, 6)
	if out[0].Verdict != acl.Denied {
		t.Fatalf("revoked flow still open: %+v", out[0])
	}
	// A flow still allowed after a change is revalidated and kept.
	f.Process(pol2, []acl.Packet{tcp("10.0.0.2", "10.0.0.1", 6000, 8080, 0x02)}, out, 7)
	setWebPolicy(t, c, 8080)
	pol3, _ := c.Compile()
	f.Process(pol3, []acl.Packet{tcp("10.0.0.1", "10.0.0.2", 8080, 6000, 0x12)}, out, 8)
	if out[0].Verdict != acl.Allowed || out[0].Reason != acl.ReasonEstablished {
		t.Fatalf("revalidated flow: %+v", out[0])
	}
	if got := pol3.Trace(out[0]); got != "allow established; egress allow no-policy; ingress allow rule default/a/web[1] (logs 1)" {
		t.Errorf("trace %q", got)
	}
	st := f.Stats()
	if st.Revoked != 1 || st.Revalidated < 2 || st.Related != 1 || st.Logged == 0 {
		t.Fatalf("stats %+v", st)
	}
	n := 0
	f.DrainLogs(func(r *acl.LogRecord) {
		n++
		if refs := pol.LogRules(r.Ingress.Logs); len(refs) != 1 || refs[0].Policy != "a/web" {
			t.Errorf("log record rules %+v", refs)
		}
	})
	if n == 0 {
		t.Fatal("no flow records")
	}
	// Expiry: a SYN-only flow is gone after 20 s.
	f.Process(pol3, []acl.Packet{tcp("10.0.0.2", "10.0.0.1", 7000, 8080, 0x02)}, out, 10)
	f.Process(pol3, []acl.Packet{tcp("10.0.0.1", "10.0.0.2", 8080, 7000, 0x12)}, out, 10+int64(21*time.Second))
	if out[0].Verdict != acl.Denied {
		t.Fatalf("expired flow still open: %+v", out[0])
	}
	if f.Process(nil, []acl.Packet{tcp("10.0.0.2", "10.0.0.1", 1, 80, 2)}, out, 11); out[0].Verdict != acl.Denied || out[0].Reason != acl.ReasonNoPolicy {
		t.Fatalf("nil policy: %+v", out[0])
	}
}

func TestLogRateLimit(t *testing.T) {
	c := twoPods(t, 80)
	pol, _ := c.Compile()
	f := acl.NewFilter(acl.FilterConfig{LogRate: 10, LogBurst: 5, LogRing: 4})
	pkts := make([]acl.Packet, 20)
	for i := range pkts {
		pkts[i] = tcp("10.0.0.2", "10.0.0.1", uint16(1000+i), 81, 2) // denied, logged, no flow
	}
	out := make([]acl.Decision, len(pkts))
	f.Process(pol, pkts, out, 1)
	st := f.Stats()
	if st.Logged != 20 || st.LogSuppressed != 15 || st.LogOverwritten != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNoAllocs(t *testing.T) {
	c := twoPods(t, 80)
	pol, _ := c.Compile()
	f := acl.NewFilter(acl.FilterConfig{})
	pkts := []acl.Packet{tcp("10.0.0.2", "10.0.0.1", 5555, 80, 2), tcp("10.0.0.1", "10.0.0.2", 80, 5555, 0x12),
		tcp("10.0.0.2", "10.0.0.1", 5, 81, 2), tcp("10.0.0.9", "10.0.0.1", 5, 80, 2)}
	out := make([]acl.Decision, len(pkts))
	checks := make([]acl.Check, len(pkts))
	now := int64(0)
	if n := testing.AllocsPerRun(1000, func() {
		now++
		f.Process(pol, pkts, out, now)
		pol.CheckBatch(pkts, checks)
	}); n != 0 {
		t.Fatalf("%v allocs per batch", n)
	}
}

// TestFilterForgetAddrs: flows of a deleted endpoint's address are
// forgotten (its reply no longer passes as established), other flows stay.
func TestFilterForgetAddrs(t *testing.T) {
	c := twoPods(t, 80)
	pol, _ := c.Compile()
	f := acl.NewFilter(acl.FilterConfig{})
	step := stepper(f, pol)
	// Two flows client -> web (ports 5555, 5556), established.
	for i, sp := range []uint16{5555, 5556} {
		if d := step(tcp("10.0.0.2", "10.0.0.1", sp, 80, 0x02), int64(i)); d.Verdict != acl.Allowed {
			t.Fatalf("SYN %d: %+v", sp, d)
		}
	}
	if e := f.Stats().Conntrack.Entries; e != 2 {
		t.Fatalf("entries %d", e)
	}
	// Forgetting an unrelated address (and an IPv6 one) changes nothing.
	if n := f.ForgetAddrs([]netip.Addr{netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("fd00::2")}); n != 0 {
		t.Fatalf("forgot %d flows of other addresses", n)
	}
	// The client (either end of the key) is deleted: both flows go.
	if n := f.ForgetAddrs([]netip.Addr{netip.MustParseAddr("10.0.0.2")}); n != 2 {
		t.Fatalf("forgot %d flows, want 2", n)
	}
	if st := f.Stats().Conntrack; st.Entries != 0 || st.Deleted != 2 {
		t.Fatalf("conntrack counters after forget: %+v", st)
	}
	// web's reply is no longer part of a flow: denied like any unsolicited packet.
	if d := step(tcp("10.0.0.1", "10.0.0.2", 80, 5555, 0x12), 3); d.Verdict != acl.Denied {
		t.Fatalf("reply after the client was forgotten: %+v", d)
	}
}
