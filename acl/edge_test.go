package acl_test

import (
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/acl"
)

// edgeState is a small hand-written world for the edge cases.
func edgeState() *acl.State {
	code0 := 0
	return &acl.State{
		Tiers:      []acl.Tier{{Name: "sec", Order: ptrF(1)}, {Name: "soft", Order: ptrF(2), DefaultPass: true}},
		Namespaces: []acl.Namespace{{Name: "ns1", Labels: map[string]string{"env": "prod"}}, {Name: "ns2"}},
		Endpoints: []acl.Endpoint{
			{Name: "a", Namespace: "ns1", Labels: map[string]string{"app": "a"}, IPs: []netip.Addr{netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("fd00::1")},
				Ports: []acl.NamedPort{{Name: "http", Protocol: acl.ProtoTCP, Port: 8080}}},
			{Name: "b", Namespace: "ns1", Labels: map[string]string{"app": "b"}, IPs: []netip.Addr{netip.MustParseAddr("10.1.0.2")}},
			{Name: "c", Namespace: "ns2", Labels: map[string]string{"app": "b"}, IPs: []netip.Addr{netip.MustParseAddr("10.2.0.1")}},
			{Name: "h", Host: true, Labels: map[string]string{"host": "yes"}, IPs: []netip.Addr{netip.MustParseAddr("192.168.0.1")}},
		},
		Policies: []acl.Policy{
			// Tier sec: b's traffic passes on to later tiers; ping is denied
			// except echo code 0 from 10.2/16; a log for everything.
			{Name: "sec", Tier: "sec", Selector: "app == 'a'", Ingress: []acl.Rule{
				{Action: acl.Log},
				{Action: acl.Pass, Source: acl.EntityRule{Selector: "app == 'b'"}},
				{Action: acl.Allow, Protocol: acl.ProtoICMP, ICMP: &acl.ICMPMatch{Type: 8, Code: &code0}, Source: acl.EntityRule{Nets: []string{"10.2.0.0/16"}}},
				{Action: acl.Deny, Protocol: acl.ProtoICMP},
				{Action: acl.Pass},
			}},
			// Tier soft (defaults to Pass): deny the port range 1000:2000 from
			// 0.0.0.0/0 except 10.1.0.0/16.
			{Name: "soft", Tier: "soft", Selector: "app == 'a'", Ingress: []acl.Rule{
				{Action: acl.Deny, Protocol: acl.ProtoTCP, Source: acl.EntityRule{Nets: []string{"0.0.0.0/0"}, NotNets: []string{"10.1.0.0/16"}},
					Destination: acl.EntityRule{Ports: []acl.Port{{Min: 1000, Max: 2000}}}},
			}},
			// Default tier: a accepts http (named) from its namespace (empty
			// selector in a rule is all() in the namespace), and /32 10.2.0.1
			// on any port.
			{Name: "allow", Namespace: "ns1", Selector: "", Types: []acl.Direction{acl.Ingress}, Ingress: []acl.Rule{
				{Action: acl.Allow, Protocol: acl.ProtoTCP, Source: acl.EntityRule{Selector: "all()"}, Destination: acl.EntityRule{Ports: []acl.Port{{Name: "http"}}}},
				{Action: acl.Allow, Source: acl.EntityRule{Nets: []string{"10.2.0.1/32"}}},
			}},
			// Host: only ssh (failsafe) and 8443.
			{Name: "host", Selector: "has(host)", Ingress: []acl.Rule{
				{Action: acl.Allow, Protocol: acl.ProtoTCP, Destination: acl.EntityRule{Ports: []acl.Port{{Min: 8443, Max: 8443}}}},
			}},
		},
	}
}

func ptrF(f float64) *float64 { return &f }

func TestEdgeCases(t *testing.T) {
	st := edgeState()
	cp, err := acl.Compile(st, acl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := acl.NewReference(st, acl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name            string
		src, dst        string
		proto           uint8
		dport           uint16
		allowed         bool
		kind            acl.MatchKind
		tier, policy    string
		index, logCount int
	}{
		{"named port from own namespace", "10.1.0.2", "10.1.0.1", 6, 8080, true, acl.MatchRule, "default", "ns1/allow", 0, 1},
		{"named port border", "10.1.0.2", "10.1.0.1", 6, 8081, false, acl.MatchEndOfTier, "default", "", 0, 1},
		{"other namespace is not in the rule's scope", "10.2.0.9", "10.1.0.1", 6, 8080, false, acl.MatchEndOfTier, "default", "", 0, 1},
		{"/32 net, any port", "10.2.0.1", "10.1.0.1", 17, 9, true, acl.MatchRule, "default", "ns1/allow", 1, 1},
		{"range lower border denied", "10.2.0.1", "10.1.0.1", 6, 1000, false, acl.MatchRule, "soft", "soft", 0, 1},
		{"range upper border denied", "10.2.0.1", "10.1.0.1", 6, 2000, false, acl.MatchRule, "soft", "soft", 0, 1},
		{"just above the range", "10.2.0.1", "10.1.0.1", 6, 2001, true, acl.MatchRule, "default", "ns1/allow", 1, 1},
		{"except block skips the deny", "10.1.0.2", "10.1.0.1", 6, 1500, false, acl.MatchEndOfTier, "default", "", 0, 1},
		{"pass across tiers for b", "10.1.0.2", "10.1.0.1", 1, 8 << 8, false, acl.MatchEndOfTier, "default", "", 0, 1},
		{"icmp echo code 0 from 10.2/16", "10.2.0.5", "10.1.0.1", 1, 8 << 8, true, acl.MatchRule, "sec", "sec", 2, 1},
		{"icmp echo code 1 denied", "10.2.0.5", "10.1.0.1", 1, 8<<8 | 1, false, acl.MatchRule, "sec", "sec", 3, 1},
		{"host failsafe ssh", "8.8.8.8", "192.168.0.1", 6, 22, true, acl.MatchFailsafe, "", "", 0, 0},
		{"host 8443", "8.8.8.8", "192.168.0.1", 6, 8443, true, acl.MatchRule, "default", "host", 0, 0},
		{"host default deny", "8.8.8.8", "192.168.0.1", 6, 80, false, acl.MatchEndOfTier, "default", "", 0, 0},
		{"unselected pod allows", "8.8.8.8", "10.2.0.1", 6, 80, true, acl.MatchNoPolicy, "", "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, d := netip.MustParseAddr(tt.src).As4(), netip.MustParseAddr(tt.dst).As4()
			p := acl.Packet{Family: acl.IPv4, Proto: tt.proto, SrcPort: 5000, DstPort: tt.dport,
				Src4: uint32(s[0])<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3]),
				Dst4: uint32(d[0])<<24 | uint32(d[1])<<16 | uint32(d[2])<<8 | uint32(d[3])}
			got := cp.Check(&p)
			m := cp.Describe(got.Ingress, acl.Ingress)
			if (got.Verdict == acl.Allowed) != tt.allowed || m.Kind != tt.kind || m.Tier != tt.tier || m.Policy != tt.policy ||
				m.Index != tt.index || len(m.Logs) != tt.logCount {
				t.Errorf("got %v %+v", got.Verdict, m)
			}
			v, _, in := ref.Evaluate(&p)
			if v != got.Verdict || in.Kind != m.Kind || in.Policy != m.Policy || in.Index != m.Index || len(in.Logs) != len(m.Logs) {
				t.Errorf("reference %v %+v", v, in)
			}
		})
	}
	// IPv6: a's v6 address has the same policies; 10.2.0.1/32 does not
	// match v6, and there is no v6 net in the soft tier's deny.
	p := acl.Packet{Family: acl.IPv6, Proto: 6, DstPort: 8080, Src6: netip.MustParseAddr("fd00::99").As16(), Dst6: netip.MustParseAddr("fd00::1").As16()}
	if got := cp.Check(&p); got.Verdict != acl.Denied || got.Ingress.Kind != acl.MatchEndOfTier {
		t.Errorf("v6 from outside the namespace: %+v", got)
	}
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		p     acl.Policy
		field string
	}{
		{acl.Policy{Name: "s", Selector: "app = 'x'"}, "selector"},
		{acl.Policy{Name: "n", Ingress: []acl.Rule{{Source: acl.EntityRule{Nets: []string{"10.0.0.0/8", "300.0.0.0/8"}}}}}, "ingress[0].source.nets[1]"},
		{acl.Policy{Name: "r", Ingress: []acl.Rule{{Protocol: acl.ProtoTCP, Destination: acl.EntityRule{Ports: []acl.Port{{Min: 9, Max: 8}}}}}}, "ingress[0].destination.ports[0]"},
		{acl.Policy{Name: "np", Egress: []acl.Rule{{Destination: acl.EntityRule{Ports: []acl.Port{{Name: "http"}}}}}}, "egress[0].destination.ports[0]"},
		{acl.Policy{Name: "icmp", Ingress: []acl.Rule{{Protocol: acl.ProtoTCP, ICMP: &acl.ICMPMatch{Type: 8}}}}, "ingress[0].icmp"},
		{acl.Policy{Name: "ns", Namespace: "x", NamespaceSelector: "all()"}, "namespaceSelector"},
		{acl.Policy{Name: "ty", Types: []acl.Direction{acl.Egress}, Ingress: []acl.Rule{{}}}, "ingress"},
		{acl.Policy{Name: "v", Ingress: []acl.Rule{{IPVersion: 6, Source: acl.EntityRule{Nets: []string{"10.0.0.0/8"}}}}}, "ingress[0].source.nets[0]"},
		{acl.Policy{Name: "ns2", Ingress: []acl.Rule{{Source: acl.EntityRule{NotSelector: "has("}}}}, "ingress[0].source.notSelector"},
	}
	for _, tt := range tests {
		err := acl.ValidatePolicy(&tt.p)
		ve, ok := err.(*acl.ValidationError)
		if !ok || ve.Field != tt.field || ve.Object != tt.p.ID() {
			t.Errorf("%s: %v, want field %s", tt.p.Name, err, tt.field)
		}
	}
	// The Compiler keeps the previous version of a rejected policy.
	c := acl.NewCompiler(acl.Options{})
	st := edgeState()
	for _, e := range st.Endpoints {
		c.SetEndpoint(e)
	}
	good := acl.Policy{Name: "p", Namespace: "ns1", Ingress: []acl.Rule{{Action: acl.Deny}}}
	if err := c.SetPolicy(good); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.Ingress = []acl.Rule{{Action: acl.Allow, Source: acl.EntityRule{Nets: []string{"bad"}}}}
	if err := c.SetPolicy(bad); err == nil {
		t.Fatal("bad policy accepted")
	}
	cp, _ := c.Compile()
	p := acl.Packet{Family: acl.IPv4, Proto: 6, Src4: 0x0a020001, Dst4: 0x0a010001}
	if got := cp.Check(&p); got.Verdict != acl.Denied || cp.Describe(got.Ingress, acl.Ingress).Policy != "ns1/p" {
		t.Fatalf("previous policy not in force: %+v", got)
	}
	if _, err := acl.Compile(&acl.State{Policies: []acl.Policy{bad}}, acl.Options{}); err == nil {
		t.Fatal("Compile accepted an invalid policy")
	}
}
