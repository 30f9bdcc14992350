package acl_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/acl/acltest"
)

var fuzzWorld = acltest.Generate(3, acltest.Small)

// validPolicy validates a fuzzed policy: a rejection must come as a
// *ValidationError naming the policy.
func validPolicy(t *testing.T, p *acl.Policy) bool {
	t.Helper()
	err := acl.ValidatePolicy(p)
	if err == nil {
		return true
	}
	var ve *acl.ValidationError
	if !errors.As(err, &ve) || ve.Object != p.ID() {
		t.Fatalf("error %v is not a ValidationError naming %q", err, p.ID())
	}
	return false
}

// fuzzState is fuzzWorld's state with policy p added (fuzzWorld is not
// changed).
func fuzzState(p acl.Policy) acl.State {
	st := fuzzWorld.State
	st.Policies = append(append([]acl.Policy(nil), st.Policies...), p)
	return st
}

// checkAgainstReference checks that the compiled classifier cp of st
// agrees with the reference of st on every packet.
func checkAgainstReference(t *testing.T, cp *acl.Compiled, st *acl.State, pkts []acl.Packet) {
	t.Helper()
	ref, err := acl.NewReference(st, acl.Options{})
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	for i := range pkts {
		if diff := referenceDiff(cp, ref, &pkts[i]); diff != "" {
			t.Fatalf("packet %s", diff)
		}
	}
}

// FuzzValidatePolicy decodes a policy from JSON and validates it. A
// rejected policy must come with a *ValidationError; an accepted one must
// compile, and the compiled classifier must agree with the reference on a
// few hundred packets (a differential fuzz of the whole compiler).
func FuzzValidatePolicy(f *testing.F) {
	for _, s := range []string{
		`{"Name":"p","Namespace":"ns0","Selector":"app == 'web'","Ingress":[{"Action":0,"Protocol":6,"Destination":{"Ports":[{"Min":80,"Max":80},{"Name":"http"}]}}]}`,
		`{"Name":"g","Tier":"security","Order":5,"Selector":"has(role)","Types":[1],"Egress":[{"Action":1,"Destination":{"Nets":["10.0.0.0/8","fd00::/8"],"NotNets":["10.0.0.0/24"]}}]}`,
		`{"Name":"i","Ingress":[{"Action":2,"Protocol":1,"ICMP":{"Type":8,"Code":0}},{"Action":3,"Protocol":58,"NotICMP":{"Type":128}},{"Action":0,"Source":{"NamespaceSelector":"global()","NotSelector":"app == 'db'"}}]}`,
		`{"Name":"bad","Ingress":[{"Protocol":6,"Source":{"Ports":[{"Min":90,"Max":80}]}}]}`,
		`{"Name":"n","Ingress":[{"Source":{"Ports":[{"Name":"http"}]}}]}`,
		`{"Name":"v","Ingress":[{"IPVersion":6,"Source":{"Nets":["10.0.0.0/8"]}}]}`,
	} {
		f.Add(s)
	}
	pkts := fuzzWorld.Packets(9, 300)
	f.Fuzz(func(t *testing.T, in string) {
		var p acl.Policy
		if json.Unmarshal([]byte(in), &p) != nil {
			return
		}
		if !validPolicy(t, &p) {
			return
		}
		st := fuzzState(p)
		cp, err := acl.Compile(&st, acl.Options{})
		if err != nil {
			var ve *acl.ValidationError
			if errors.As(err, &ve) && ve.Field == "tier" || len(p.Ingress) > 0xffff || len(p.Egress) > 0xffff {
				return // unknown tier, or a duplicate of a generated policy's id
			}
			for _, q := range fuzzWorld.Policies {
				if q.ID() == p.ID() {
					return
				}
			}
			t.Fatalf("valid policy does not compile: %v", err)
		}
		checkAgainstReference(t, cp, &st, pkts)
	})
}

// FuzzParseICMPError checks the quoted-packet parser never panics and only
// reports ICMP errors.
func FuzzParseICMPError(f *testing.F) {
	f.Add([]byte{3, 1, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x15, 0xb3, 0, 80}, false)
	f.Add([]byte{1, 4, 0, 0, 0, 0, 0, 0, 0x60}, true)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		fam := acl.IPv4
		if v6 {
			fam = acl.IPv6
		}
		var q acl.Packet
		if acl.ParseICMPError(b, fam, &q) {
			if q.Family != fam || len(b) < 8 {
				t.Fatalf("bad parse %+v", q)
			}
		}
	})
}

// FuzzParsePort checks ParsePort round-trips what it accepts.
func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"80", "1000:2000", "http", "65535", "0:65535", "-x", "99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := acl.ParsePort(s)
		if err != nil {
			return
		}
		q, err := acl.ParsePort(p.String())
		if err != nil || q != p {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, p, p.String(), q, err)
		}
	})
}

// byteStream turns fuzz bytes into choices.
type byteStream struct{ b []byte }

func (s *byteStream) n(k int) int {
	if len(s.b) == 0 || k <= 0 {
		return 0
	}
	v := int(s.b[0])
	s.b = s.b[1:]
	return v % k
}

func (s *byteStream) u16() uint16 { return uint16(s.n(256))<<8 | uint16(s.n(256)) }

var (
	fuzzSelectors = []string{"", "all()", "app == 'web'", "app in {'db', 'api'}", "has(role)", "!has(role) || env != 'prod'",
		"global()", "app ==", "tier not in {'frontend'}", "canary == 'true'", "node-role == 'worker'"}
	fuzzNets = []string{"0.0.0.0/0", "10.0.0.0/8", "10.0.0.1/32", "10.0.0.0/33", "fd00::/8", "::/0", "fd00::1", "10.0.1.0/24", "x", "192.168.0.0/16"}
)

// FuzzCompilePolicy builds a policy from fuzz bytes (field by field, valid
// and invalid values alike), then checks validation and, for valid
// policies, that the compiled classifier agrees with the reference.
func FuzzCompilePolicy(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Add([]byte{3, 3, 1, 2, 2, 1, 0, 6, 1, 0, 80, 0, 90, 2, 1})
	f.Add([]byte{1, 0, 4, 0, 1, 1, 2, 1, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 7, 7, 7})
	pkts := fuzzWorld.Packets(11, 200)
	protos := []acl.Protocol{0, acl.ProtoTCP, acl.ProtoUDP, acl.ProtoICMP, acl.ProtoICMPv6, acl.ProtoSCTP, 200}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &byteStream{data}
		p := acl.Policy{Name: "fz", Selector: fuzzSelectors[s.n(len(fuzzSelectors))]}
		if s.n(2) == 0 {
			p.Namespace = "ns0"
		}
		p.Tier = []string{"", "security", "platform", "nope"}[s.n(4)]
		if s.n(2) == 0 {
			o := float64(s.n(40))
			p.Order = &o
		}
		switch s.n(4) {
		case 1:
			p.Types = []acl.Direction{acl.Ingress}
		case 2:
			p.Types = []acl.Direction{acl.Egress}
		case 3:
			p.Types = []acl.Direction{acl.Ingress, acl.Egress}
		}
		for d := 0; d < 2; d++ {
			for k := s.n(4); k > 0; k-- {
				r := acl.Rule{Action: acl.Action(s.n(5)), Protocol: protos[s.n(len(protos))], IPVersion: []int{0, 0, 4, 6, 5}[s.n(5)]}
				if s.n(4) == 0 {
					r.NotProtocol = protos[s.n(len(protos))]
				}
				if s.n(3) == 0 {
					m := &acl.ICMPMatch{Type: s.n(260)}
					if s.n(2) == 0 {
						c := s.n(260)
						m.Code = &c
					}
					if s.n(2) == 0 {
						r.ICMP = m
					} else {
						r.NotICMP = m
					}
				}
				for _, e := range []*acl.EntityRule{&r.Source, &r.Destination} {
					for j := s.n(3); j > 0; j-- {
						e.Nets = append(e.Nets, fuzzNets[s.n(len(fuzzNets))])
					}
					if s.n(3) == 0 {
						e.NotNets = append(e.NotNets, fuzzNets[s.n(len(fuzzNets))])
					}
					if s.n(3) == 0 {
						e.Selector = fuzzSelectors[s.n(len(fuzzSelectors))]
					}
					if s.n(4) == 0 {
						e.NamespaceSelector = fuzzSelectors[s.n(len(fuzzSelectors))]
					}
					if s.n(4) == 0 {
						e.NotSelector = fuzzSelectors[s.n(len(fuzzSelectors))]
					}
					for j := s.n(3); j > 0; j-- {
						port := acl.Port{Min: s.u16(), Max: s.u16()}
						if s.n(3) == 0 {
							port = acl.Port{Name: []string{"http", "metrics", "dns", "BAD"}[s.n(4)]}
						}
						if s.n(3) == 0 {
							e.NotPorts = append(e.NotPorts, port)
						} else {
							e.Ports = append(e.Ports, port)
						}
					}
				}
				if d == 0 {
					p.Ingress = append(p.Ingress, r)
				} else {
					p.Egress = append(p.Egress, r)
				}
			}
		}
		if !validPolicy(t, &p) {
			return
		}
		st := fuzzState(p)
		cp, err := acl.Compile(&st, acl.Options{})
		if err != nil {
			if p.Tier == "nope" {
				return
			}
			t.Fatalf("valid policy does not compile: %v", err)
		}
		checkAgainstReference(t, cp, &st, pkts)
	})
}
