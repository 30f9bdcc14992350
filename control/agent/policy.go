package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/control/policyconv"
	"github.com/tabbynet/tabby/control/resources"
)

// Tier orders policies: tiers are evaluated by order, and within a tier
// policies by theirs (Calico's Tier).
type Tier struct {
	resources.TypeMeta   `json:",inline"`
	resources.ObjectMeta `json:"metadata"`
	Spec                 TierSpec `json:"spec"`
}

// TierSpec is a Tier's desired state.
type TierSpec struct {
	// Order sorts tiers (lower first; unset last).
	Order *float64 `json:"order,omitempty"`
	// DefaultAction is what happens at the end of the tier to traffic of
	// an endpoint a policy of the tier applies to: Deny (default) or Pass.
	DefaultAction string `json:"defaultAction,omitempty"`
}

// ObjectKind returns KindTier.
func (*Tier) ObjectKind() resources.Kind { return KindTier }

// Default sets the default action.
func (t *Tier) Default() {
	if t.Spec.DefaultAction == "" {
		t.Spec.DefaultAction = "Deny"
	}
}

// Validate checks the tier.
func (t *Tier) Validate() error {
	var fe fieldErrors
	fe.meta(t)
	switch t.Spec.DefaultAction {
	case "", "Deny", "Pass":
	default:
		fe.add("spec.defaultAction", "%q is not one of Deny, Pass", t.Spec.DefaultAction)
	}
	if t.Name == acl.DefaultTier && t.Spec.Order != nil && *t.Spec.Order != 1e6 {
		fe.add("spec.order", "the default tier's order is fixed at 1000000")
	}
	return fe.result(t)
}

// ToACL returns the tier in the policy model.
func (t *Tier) ToACL() acl.Tier {
	return acl.Tier{Name: t.Name, Order: t.Spec.Order, DefaultPass: t.Spec.DefaultAction == "Pass"}
}

// NetworkPolicy is a namespaced policy: it applies to the endpoints of its
// namespace that its selector selects.
type NetworkPolicy struct {
	resources.TypeMeta   `json:",inline"`
	resources.ObjectMeta `json:"metadata"`
	Spec                 PolicySpec `json:"spec"`
}

// GlobalNetworkPolicy applies to endpoints of every namespace (and host
// endpoints).
type GlobalNetworkPolicy struct {
	resources.TypeMeta   `json:",inline"`
	resources.ObjectMeta `json:"metadata"`
	Spec                 PolicySpec `json:"spec"`
}

// PolicySpec is a policy's desired state, field for field Calico's.
type PolicySpec struct {
	// Tier is the policy's tier (default "default").
	Tier string `json:"tier,omitempty"`
	// Order sorts policies within the tier (lower first; unset last).
	Order *float64 `json:"order,omitempty"`
	// Selector selects the endpoints the policy applies to (empty: all()).
	Selector string `json:"selector,omitempty"`
	// NamespaceSelector (GlobalNetworkPolicy only) restricts the endpoints
	// to those of matching namespaces.
	NamespaceSelector string `json:"namespaceSelector,omitempty"`
	// Types are Ingress and/or Egress (derived from the rules when unset).
	Types   []string `json:"types,omitempty"`
	Ingress []Rule   `json:"ingress,omitempty"`
	Egress  []Rule   `json:"egress,omitempty"`
}

// Rule is one policy rule.
type Rule struct {
	// Action is Allow, Deny, Pass or Log.
	Action string `json:"action"`
	// IPVersion is 4 or 6 (unset: both).
	IPVersion   int        `json:"ipVersion,omitempty"`
	Protocol    *Protocol  `json:"protocol,omitempty"`
	NotProtocol *Protocol  `json:"notProtocol,omitempty"`
	ICMP        *ICMPMatch `json:"icmp,omitempty"`
	NotICMP     *ICMPMatch `json:"notICMP,omitempty"`
	Source      EntityRule `json:"source,omitempty"`
	Destination EntityRule `json:"destination,omitempty"`
}

// ICMPMatch matches an ICMP type and optionally a code.
type ICMPMatch struct {
	Type *int `json:"type,omitempty"`
	Code *int `json:"code,omitempty"`
}

// EntityRule is the source or destination side of a rule.
type EntityRule struct {
	Nets              []string `json:"nets,omitempty"`
	NotNets           []string `json:"notNets,omitempty"`
	Selector          string   `json:"selector,omitempty"`
	NotSelector       string   `json:"notSelector,omitempty"`
	NamespaceSelector string   `json:"namespaceSelector,omitempty"`
	Ports             []Port   `json:"ports,omitempty"`
	NotPorts          []Port   `json:"notPorts,omitempty"`
}

// Protocol is a protocol name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) or
// number; in YAML either a string or a number.
type Protocol string

// UnmarshalJSON accepts a string or a number.
func (p *Protocol) UnmarshalJSON(b []byte) error {
	s, err := stringOrNumber(b)
	*p = Protocol(s)
	return err
}

// Port is a port number, a range "lo:hi" or a port name; in YAML either a
// string or a number.
type Port string

// UnmarshalJSON accepts a string or a number.
func (p *Port) UnmarshalJSON(b []byte) error {
	s, err := stringOrNumber(b)
	*p = Port(s)
	return err
}

func stringOrNumber(b []byte) (string, error) {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		err := json.Unmarshal(b, &s)
		return s, err
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return "", fmt.Errorf("%s is neither a string nor a number", b)
	}
	return n.String(), nil
}

// ObjectKind returns KindNetworkPolicy.
func (*NetworkPolicy) ObjectKind() resources.Kind { return KindNetworkPolicy }

// ObjectKind returns KindGlobalNetworkPolicy.
func (*GlobalNetworkPolicy) ObjectKind() resources.Kind { return KindGlobalNetworkPolicy }

// Default sets the tier.
func (p *NetworkPolicy) Default() { p.Spec.defaults() }

// Default sets the tier.
func (p *GlobalNetworkPolicy) Default() { p.Spec.defaults() }

func (s *PolicySpec) defaults() {
	if s.Tier == "" {
		s.Tier = acl.DefaultTier
	}
}

// Validate checks the policy.
func (p *NetworkPolicy) Validate() error {
	var fe fieldErrors
	fe.meta(p)
	if p.Spec.NamespaceSelector != "" {
		fe.add("spec.namespaceSelector", "is only valid in a GlobalNetworkPolicy")
	}
	if strings.HasPrefix(p.Name, policyconv.NamePrefix) {
		// The converted Kubernetes NetworkPolicies are named so.
		fe.add("metadata.name", "%q: the prefix %q is reserved for Kubernetes NetworkPolicies", p.Name, policyconv.NamePrefix)
	}
	if len(fe) == 0 {
		if _, err := p.ToACL(); err != nil {
			fe.policy(err)
		}
	}
	return fe.result(p)
}

// Validate checks the policy.
func (p *GlobalNetworkPolicy) Validate() error {
	var fe fieldErrors
	fe.meta(p)
	if len(fe) == 0 {
		if _, err := p.ToACL(); err != nil {
			fe.policy(err)
		}
	}
	return fe.result(p)
}

// policy turns a conversion or acl validation error into field errors.
func (fe *fieldErrors) policy(err error) {
	var ve *acl.ValidationError
	var fErr *resources.FieldError
	switch {
	case errors.As(err, &fErr):
		*fe = append(*fe, fErr)
	case errors.As(err, &ve):
		field := "spec"
		if ve.Field != "" {
			field = "spec." + ve.Field
		}
		fe.add(field, "%s", ve.Msg)
	default:
		fe.add("spec", "%v", err)
	}
}

// ToACL converts the policy into the policy model and validates it there.
func (p *NetworkPolicy) ToACL() (acl.Policy, error) { return p.Spec.toACL(p.Name, p.Namespace) }

// ToACL converts the policy into the policy model and validates it there.
func (p *GlobalNetworkPolicy) ToACL() (acl.Policy, error) { return p.Spec.toACL(p.Name, "") }

func (s *PolicySpec) toACL(name, ns string) (acl.Policy, error) {
	out := acl.Policy{Name: name, Namespace: ns, Tier: s.Tier, Order: s.Order, Selector: s.Selector,
		NamespaceSelector: s.NamespaceSelector}
	if out.Tier == "" {
		out.Tier = acl.DefaultTier
	}
	for i, t := range s.Types {
		switch strings.ToLower(t) {
		case "ingress":
			out.Types = append(out.Types, acl.Ingress)
		case "egress":
			out.Types = append(out.Types, acl.Egress)
		default:
			return acl.Policy{}, &resources.FieldError{Field: fmt.Sprintf("spec.types[%d]", i), Msg: fmt.Sprintf("%q is not one of Ingress, Egress", t)}
		}
	}
	for i := range s.Ingress {
		r, err := s.Ingress[i].toACL(fmt.Sprintf("spec.ingress[%d]", i))
		if err != nil {
			return acl.Policy{}, err
		}
		out.Ingress = append(out.Ingress, r)
	}
	for i := range s.Egress {
		r, err := s.Egress[i].toACL(fmt.Sprintf("spec.egress[%d]", i))
		if err != nil {
			return acl.Policy{}, err
		}
		out.Egress = append(out.Egress, r)
	}
	if err := acl.ValidatePolicy(&out); err != nil {
		return acl.Policy{}, err
	}
	return out, nil
}

func (r *Rule) toACL(path string) (acl.Rule, error) {
	bad := func(field, format string, args ...any) error {
		return &resources.FieldError{Field: path + "." + field, Msg: fmt.Sprintf(format, args...)}
	}
	var out acl.Rule
	a, err := acl.ParseAction(r.Action)
	if r.Action == "" {
		return out, bad("action", "is required (Allow, Deny, Pass or Log)")
	}
	if err != nil {
		return out, bad("action", "%q is not one of Allow, Deny, Pass, Log", r.Action)
	}
	out.Action = a
	if r.IPVersion != 0 && r.IPVersion != 4 && r.IPVersion != 6 {
		return out, bad("ipVersion", "%d is not 4 or 6", r.IPVersion)
	}
	out.IPVersion = r.IPVersion
	if r.Protocol != nil {
		if out.Protocol, err = acl.ParseProtocol(string(*r.Protocol)); err != nil {
			return out, bad("protocol", "%v", err)
		}
	}
	if r.NotProtocol != nil {
		if out.NotProtocol, err = acl.ParseProtocol(string(*r.NotProtocol)); err != nil {
			return out, bad("notProtocol", "%v", err)
		}
	}
	if out.ICMP, err = r.ICMP.toACL(); err != nil {
		return out, bad("icmp", "%v", err)
	}
	if out.NotICMP, err = r.NotICMP.toACL(); err != nil {
		return out, bad("notICMP", "%v", err)
	}
	if out.Source, err = r.Source.toACL(path + ".source"); err != nil {
		return out, err
	}
	if out.Destination, err = r.Destination.toACL(path + ".destination"); err != nil {
		return out, err
	}
	return out, nil
}

func (m *ICMPMatch) toACL() (*acl.ICMPMatch, error) {
	if m == nil {
		return nil, nil
	}
	if m.Type == nil {
		return nil, errors.New("type is required")
	}
	return &acl.ICMPMatch{Type: *m.Type, Code: m.Code}, nil
}

func (e *EntityRule) toACL(path string) (acl.EntityRule, error) {
	out := acl.EntityRule{Nets: e.Nets, NotNets: e.NotNets, Selector: e.Selector, NotSelector: e.NotSelector,
		NamespaceSelector: e.NamespaceSelector}
	var err error
	if out.Ports, err = parsePorts(e.Ports, path+".ports"); err != nil {
		return out, err
	}
	if out.NotPorts, err = parsePorts(e.NotPorts, path+".notPorts"); err != nil {
		return out, err
	}
	return out, nil
}

func parsePorts(ps []Port, path string) ([]acl.Port, error) {
	var out []acl.Port
	for i, p := range ps {
		ap, err := acl.ParsePort(string(p))
		if err != nil {
			return nil, &resources.FieldError{Field: path + "[" + strconv.Itoa(i) + "]", Msg: err.Error()}
		}
		out = append(out, ap)
	}
	return out, nil
}
