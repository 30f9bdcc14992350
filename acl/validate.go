package acl

import (
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/tabbynet/tabby/acl/selector"
)

// ValidationError says which field of which object is invalid.
type ValidationError struct {
	// Kind is "policy", "tier", "endpoint" or "namespace".
	Kind string
	// Object is the object's id (a policy's ID()).
	Object string
	// Field is the path of the offending field, such as
	// "ingress[0].source.nets[1]".
	Field string
	Msg   string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s %q: %s", e.Kind, e.Object, e.Msg)
	}
	return fmt.Sprintf("%s %q: %s: %s", e.Kind, e.Object, e.Field, e.Msg)
}

// pPolicy is a validated policy in the form the compiler and the reference
// evaluator use.
type pPolicy struct {
	src   Policy
	id    string
	tier  string
	order float64
	sel   *selector.Selector
	nsSel *selector.Selector
	types [2]bool
	rules [2][]pRule
}

type pRule struct {
	action          Action
	ipv             int
	proto, notProto Protocol
	icmp, notICMP   *pICMP
	side            [2]pSide // source, destination
}

// pICMP matches DstPort (type<<8|code) of ICMP packets: [lo, hi].
type pICMP struct{ lo, hi uint16 }

const (
	sideSrc = 0
	sideDst = 1
)

type pSide struct {
	nets, notNets []netip.Prefix
	// hasSel: the side restricts addresses to those of selected endpoints.
	hasSel bool
	sel    *selector.Selector
	nsSel  *selector.Selector // nil: no namespace selector
	// scopeNS restricts selected endpoints to one namespace (namespaced
	// policy without a namespace selector).
	scopeNS  string
	notSel   *selector.Selector
	ports    []pPort
	notPorts []pPort
}

type pPort struct {
	lo, hi uint16
	name   string
}

func hasNamed(ps []pPort) bool {
	for _, p := range ps {
		if p.name != "" {
			return true
		}
	}
	return false
}

// ValidatePolicy checks a policy and returns a *ValidationError naming the
// first invalid field.
func ValidatePolicy(p *Policy) error {
	_, err := parsePolicy(p)
	return err
}

func parsePolicy(p *Policy) (*pPolicy, error) {
	id := p.ID()
	bad := func(field, format string, args ...any) error {
		return &ValidationError{Kind: "policy", Object: id, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if p.Name == "" {
		return nil, bad("name", "empty name")
	}
	pp := &pPolicy{src: *p, id: id, tier: p.Tier, order: math.Inf(1)}
	if pp.tier == "" {
		pp.tier = DefaultTier
	}
	if p.Order != nil {
		if math.IsNaN(*p.Order) {
			return nil, bad("order", "order is NaN")
		}
		pp.order = *p.Order
	}
	var err error
	if pp.sel, err = selector.Parse(p.Selector); err != nil {
		return nil, bad("selector", "%v", err)
	}
	if p.NamespaceSelector != "" {
		if p.Namespace != "" {
			return nil, bad("namespaceSelector", "only global policies have a namespace selector")
		}
		if pp.nsSel, err = selector.Parse(p.NamespaceSelector); err != nil {
			return nil, bad("namespaceSelector", "%v", err)
		}
	}
	if p.Types == nil {
		pp.types[Ingress] = len(p.Ingress) > 0 || len(p.Egress) == 0
		pp.types[Egress] = len(p.Egress) > 0
	} else {
		for i, t := range p.Types {
			if t != Ingress && t != Egress {
				return nil, bad(fmt.Sprintf("types[%d]", i), "invalid direction %d", t)
			}
			pp.types[t] = true
		}
	}
	for d, rules := range [2][]Rule{p.Ingress, p.Egress} {
		name := "ingress"
		if d == int(Egress) {
			name = "egress"
		}
		if len(rules) > 0 && !pp.types[d] {
			return nil, bad(name, "%s rules but types does not include %s", name, Direction(d))
		}
		pp.rules[d] = make([]pRule, len(rules))
		for i := range rules {
			if err := parseRule(&rules[i], p.Namespace, &pp.rules[d][i], func(field, format string, args ...any) error {
				return bad(fmt.Sprintf("%s[%d]%s", name, i, field), format, args...)
			}); err != nil {
				return nil, err
			}
		}
	}
	return pp, nil
}

type badFunc func(field, format string, args ...any) error

func parseRule(r *Rule, ns string, out *pRule, bad badFunc) error {
	if r.Action > Log {
		return bad(".action", "invalid action %d", r.Action)
	}
	out.action = r.Action
	if r.IPVersion != 0 && r.IPVersion != 4 && r.IPVersion != 6 {
		return bad(".ipVersion", "must be 4 or 6, not %d", r.IPVersion)
	}
	out.ipv = r.IPVersion
	out.proto, out.notProto = r.Protocol, r.NotProtocol
	for _, f := range []struct {
		name string
		m    *ICMPMatch
		out  **pICMP
	}{{".icmp", r.ICMP, &out.icmp}, {".notICMP", r.NotICMP, &out.notICMP}} {
		if f.m == nil {
			continue
		}
		if r.Protocol != ProtoICMP && r.Protocol != ProtoICMPv6 {
			return bad(f.name, "needs protocol ICMP or ICMPv6")
		}
		if (r.Protocol == ProtoICMP && r.IPVersion == 6) || (r.Protocol == ProtoICMPv6 && r.IPVersion == 4) {
			return bad(f.name, "protocol %v does not fit ipVersion %d", r.Protocol, r.IPVersion)
		}
		if f.m.Type < 0 || f.m.Type > 254 {
			return bad(f.name+".type", "%d out of range 0..254", f.m.Type)
		}
		m := &pICMP{lo: uint16(f.m.Type) << 8, hi: uint16(f.m.Type)<<8 | 0xff}
		if f.m.Code != nil {
			c := *f.m.Code
			if c < 0 || c > 255 {
				return bad(f.name+".code", "%d out of range 0..255", c)
			}
			m.lo = uint16(f.m.Type)<<8 | uint16(c)
			m.hi = m.lo
		}
		*f.out = m
	}
	for s, e := range [2]*EntityRule{&r.Source, &r.Destination} {
		name := ".source"
		if s == sideDst {
			name = ".destination"
		}
		if err := parseSide(e, r, ns, &out.side[s], func(field, format string, args ...any) error {
			return bad(name+field, format, args...)
		}); err != nil {
			return err
		}
	}
	return nil
}

func parseSide(e *EntityRule, r *Rule, ns string, out *pSide, bad badFunc) error {
	var err error
	for _, f := range []struct {
		name string
		in   []string
		out  *[]netip.Prefix
	}{{".nets", e.Nets, &out.nets}, {".notNets", e.NotNets, &out.notNets}} {
		for i, s := range f.in {
			p, err := parseNet(s)
			if err != nil {
				return bad(fmt.Sprintf("%s[%d]", f.name, i), "invalid CIDR %q", s)
			}
			if r.IPVersion == 4 && !p.Addr().Is4() || r.IPVersion == 6 && p.Addr().Is4() {
				return bad(fmt.Sprintf("%s[%d]", f.name, i), "CIDR %q does not fit ipVersion %d", s, r.IPVersion)
			}
			*f.out = append(*f.out, p)
		}
	}
	if e.Selector != "" || e.NamespaceSelector != "" {
		out.hasSel = true
		if out.sel, err = selector.Parse(e.Selector); err != nil {
			return bad(".selector", "%v", err)
		}
		if e.NamespaceSelector != "" {
			if out.nsSel, err = selector.Parse(e.NamespaceSelector); err != nil {
				return bad(".namespaceSelector", "%v", err)
			}
		} else {
			out.scopeNS = ns
		}
	}
	if e.NotSelector != "" {
		if out.notSel, err = selector.Parse(e.NotSelector); err != nil {
			return bad(".notSelector", "%v", err)
		}
	}
	for _, f := range []struct {
		name string
		in   []Port
		out  *[]pPort
	}{{".ports", e.Ports, &out.ports}, {".notPorts", e.NotPorts, &out.notPorts}} {
		for i, p := range f.in {
			field := fmt.Sprintf("%s[%d]", f.name, i)
			if r.Protocol == 0 && p.Name != "" {
				return bad(field, "named port %q needs a protocol", p.Name)
			}
			if !r.Protocol.hasPorts() {
				return bad(field, "ports need protocol TCP, UDP, SCTP or UDPLite, not %v", r.Protocol)
			}
			if p.Name != "" {
				if !validPortName(p.Name) {
					return bad(field, "invalid port name %q", p.Name)
				}
				*f.out = append(*f.out, pPort{name: p.Name})
				continue
			}
			if p.Min > p.Max {
				return bad(field, "port range %d:%d out of order", p.Min, p.Max)
			}
			*f.out = append(*f.out, pPort{lo: p.Min, hi: p.Max})
		}
	}
	return nil
}

// parseNet parses a CIDR or a single address (a host prefix) and masks it.
func parseNet(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid address")
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("4in6 prefix")
	}
	return p.Masked(), nil
}

// ValidateTier checks a tier.
func ValidateTier(t *Tier) error {
	bad := func(field, msg string) error {
		return &ValidationError{Kind: "tier", Object: t.Name, Field: field, Msg: msg}
	}
	if t.Name == "" {
		return bad("name", "empty name")
	}
	if t.Order != nil && math.IsNaN(*t.Order) {
		return bad("order", "order is NaN")
	}
	return nil
}

// ValidateEndpoint checks an endpoint.
func ValidateEndpoint(e *Endpoint) error {
	bad := func(field, format string, args ...any) error {
		return &ValidationError{Kind: "endpoint", Object: e.ID(), Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if e.Name == "" {
		return bad("name", "empty name")
	}
	if e.Host && e.Namespace != "" {
		return bad("namespace", "host endpoints have no namespace")
	}
	if !e.Host && e.Namespace == "" {
		return bad("namespace", "workload endpoints need a namespace")
	}
	for i, a := range e.IPs {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" || a.IsUnspecified() {
			return bad(fmt.Sprintf("ips[%d]", i), "invalid address %v", a)
		}
	}
	seen := map[NamedPort]bool{}
	for i, p := range e.Ports {
		if seen[NamedPort{Name: p.Name, Protocol: p.Protocol}] {
			return bad(fmt.Sprintf("ports[%d].name", i), "port %q/%v declared twice", p.Name, p.Protocol)
		}
		seen[NamedPort{Name: p.Name, Protocol: p.Protocol}] = true
		if !validPortName(p.Name) {
			return bad(fmt.Sprintf("ports[%d].name", i), "invalid port name %q", p.Name)
		}
		if p.Protocol == 0 {
			return bad(fmt.Sprintf("ports[%d].protocol", i), "missing protocol")
		}
	}
	return nil
}
