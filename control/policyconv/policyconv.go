// Package policyconv converts Kubernetes networking.k8s.io/v1
// NetworkPolicies into Tabby's policy model (package acl), the way Calico
// does: each NetworkPolicy becomes a namespaced policy in the default tier,
// order 1000, named "knp.default.<name>", whose rules all Allow. The
// Kubernetes semantics follow from the model: a pod selected by at least
// one policy for a direction gets the default tier's end-of-tier deny for
// that direction (isolation), and the rules of all policies that select it
// are a union.
//
// Mapping, per rule: one acl rule per peer × protocol of the rule's ports
// (no peers: any address; no ports: any protocol and port). podSelector →
// Selector (scoped to the policy's namespace), namespaceSelector →
// NamespaceSelector ({} = every namespace), both → both, ipBlock → Nets
// with except → NotNets. Ports are destination ports: numeric (with endPort
// as a range) or named (resolved against the destination pod's container
// ports).
package policyconv

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/tabbynet/tabby/acl"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Order is the order Calico gives Kubernetes NetworkPolicies.
const Order = 1000.0

// NamePrefix prefixes converted policy names.
const NamePrefix = "knp.default."

// Error names the NetworkPolicy and field that could not be converted.
type Error struct {
	Policy string // namespace/name
	Field  string
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("networkpolicy %q: %s: %s", e.Policy, e.Field, e.Msg)
}

// NetworkPolicy converts one Kubernetes NetworkPolicy. The result is valid
// (acl.ValidatePolicy accepts it) or an error is returned.
func NetworkPolicy(np *networkingv1.NetworkPolicy) (acl.Policy, error) {
	id := np.Namespace + "/" + np.Name
	bad := func(field, format string, args ...any) error {
		return &Error{Policy: id, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	sel, err := LabelSelector(&np.Spec.PodSelector)
	if err != nil {
		return acl.Policy{}, bad("spec.podSelector", "%v", err)
	}
	p := acl.Policy{Name: NamePrefix + np.Name, Namespace: np.Namespace, Tier: acl.DefaultTier,
		Order: ptr(Order), Selector: sel}
	if len(np.Spec.PolicyTypes) == 0 {
		p.Types = []acl.Direction{acl.Ingress}
		if len(np.Spec.Egress) > 0 {
			p.Types = append(p.Types, acl.Egress)
		}
	} else {
		for i, t := range np.Spec.PolicyTypes {
			switch t {
			case networkingv1.PolicyTypeIngress:
				p.Types = append(p.Types, acl.Ingress)
			case networkingv1.PolicyTypeEgress:
				p.Types = append(p.Types, acl.Egress)
			default:
				return acl.Policy{}, bad(fmt.Sprintf("spec.policyTypes[%d]", i), "unknown type %q", t)
			}
		}
	}
	has := func(d acl.Direction) bool {
		for _, t := range p.Types {
			if t == d {
				return true
			}
		}
		return false
	}
	if has(acl.Ingress) {
		for i, r := range np.Spec.Ingress {
			rules, err := convertRule(r.From, r.Ports, false, fmt.Sprintf("spec.ingress[%d]", i), bad)
			if err != nil {
				return acl.Policy{}, err
			}
			p.Ingress = append(p.Ingress, rules...)
		}
	}
	if has(acl.Egress) {
		for i, r := range np.Spec.Egress {
			rules, err := convertRule(r.To, r.Ports, true, fmt.Sprintf("spec.egress[%d]", i), bad)
			if err != nil {
				return acl.Policy{}, err
			}
			p.Egress = append(p.Egress, rules...)
		}
	}
	if err := acl.ValidatePolicy(&p); err != nil {
		return acl.Policy{}, bad("spec", "%v", err)
	}
	return p, nil
}

func ptr[T any](v T) *T { return &v }

type badFunc func(field, format string, args ...any) error

// portGroup is the ports of one protocol (nil ports: every port).
type portGroup struct {
	proto acl.Protocol
	ports []acl.Port
	all   bool
}

func convertRule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, egress bool, field string, bad badFunc) ([]acl.Rule, error) {
	var groups []*portGroup
	byProto := map[acl.Protocol]*portGroup{}
	for i, pt := range ports {
		f := fmt.Sprintf("%s.ports[%d]", field, i)
		proto := acl.ProtoTCP
		if pt.Protocol != nil {
			switch *pt.Protocol {
			case corev1.ProtocolTCP:
			case corev1.ProtocolUDP:
				proto = acl.ProtoUDP
			case corev1.ProtocolSCTP:
				proto = acl.ProtoSCTP
			default:
				return nil, bad(f+".protocol", "unknown protocol %q", *pt.Protocol)
			}
		}
		g := byProto[proto]
		if g == nil {
			g = &portGroup{proto: proto}
			byProto[proto] = g
			groups = append(groups, g)
		}
		if pt.Port == nil {
			if pt.EndPort != nil {
				return nil, bad(f+".endPort", "endPort without port")
			}
			g.all = true
			continue
		}
		if pt.Port.Type == 1 { // intstr.String
			if pt.EndPort != nil {
				return nil, bad(f+".endPort", "endPort with named port %q", pt.Port.StrVal)
			}
			np, err := acl.ParsePort(pt.Port.StrVal)
			if err != nil || np.Name == "" {
				return nil, bad(f+".port", "invalid named port %q", pt.Port.StrVal)
			}
			g.ports = append(g.ports, np)
			continue
		}
		lo := pt.Port.IntVal
		if lo < 1 || lo > 65535 {
			return nil, bad(f+".port", "port %d out of range 1..65535", lo)
		}
		hi := lo
		if pt.EndPort != nil {
			hi = *pt.EndPort
			if hi < lo || hi > 65535 {
				return nil, bad(f+".endPort", "endPort %d not in %d..65535", hi, lo)
			}
		}
		g.ports = append(g.ports, acl.Port{Min: uint16(lo), Max: uint16(hi)})
	}
	var ents []acl.EntityRule
	if len(peers) == 0 {
		ents = []acl.EntityRule{{}}
	}
	for i, peer := range peers {
		f := fmt.Sprintf("%s.%s[%d]", field, map[bool]string{false: "from", true: "to"}[egress], i)
		var e acl.EntityRule
		if peer.IPBlock != nil {
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				return nil, bad(f, "ipBlock with a selector")
			}
			cidr, err := netip.ParsePrefix(peer.IPBlock.CIDR)
			if err != nil {
				return nil, bad(f+".ipBlock.cidr", "invalid CIDR %q", peer.IPBlock.CIDR)
			}
			e.Nets = []string{cidr.Masked().String()}
			for j, x := range peer.IPBlock.Except {
				ex, err := netip.ParsePrefix(x)
				if err != nil {
					return nil, bad(fmt.Sprintf("%s.ipBlock.except[%d]", f, j), "invalid CIDR %q", x)
				}
				if !cidr.Contains(ex.Addr()) || ex.Bits() < cidr.Bits() {
					return nil, bad(fmt.Sprintf("%s.ipBlock.except[%d]", f, j), "%s is not inside %s", x, peer.IPBlock.CIDR)
				}
				e.NotNets = append(e.NotNets, ex.Masked().String())
			}
		} else {
			if peer.PodSelector == nil && peer.NamespaceSelector == nil {
				return nil, bad(f, "empty peer")
			}
			if peer.PodSelector != nil {
				s, err := LabelSelector(peer.PodSelector)
				if err != nil {
					return nil, bad(f+".podSelector", "%v", err)
				}
				e.Selector = s
			}
			if peer.NamespaceSelector != nil {
				s, err := LabelSelector(peer.NamespaceSelector)
				if err != nil {
					return nil, bad(f+".namespaceSelector", "%v", err)
				}
				e.NamespaceSelector = s
			}
		}
		ents = append(ents, e)
	}
	var out []acl.Rule
	for _, e := range ents {
		if len(groups) == 0 {
			r := acl.Rule{Action: acl.Allow}
			setPeer(&r, e, egress)
			out = append(out, r)
			continue
		}
		for _, g := range groups {
			r := acl.Rule{Action: acl.Allow, Protocol: g.proto}
			setPeer(&r, e, egress)
			if !g.all {
				r.Destination.Ports = g.ports
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func setPeer(r *acl.Rule, e acl.EntityRule, egress bool) {
	if egress {
		r.Destination = e
	} else {
		r.Source = e
	}
}

// LabelSelector converts a Kubernetes label selector to the selector
// language; the empty selector is all().
func LabelSelector(ls *metav1.LabelSelector) (string, error) {
	var parts []string
	keys := make([]string, 0, len(ls.MatchLabels))
	for k := range ls.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return "", err
		}
		v := ls.MatchLabels[k]
		if err := checkValue(v); err != nil {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("%s == '%s'", k, v))
	}
	for i, ex := range ls.MatchExpressions {
		if err := checkKey(ex.Key); err != nil {
			return "", err
		}
		vals := make([]string, len(ex.Values))
		for j, v := range ex.Values {
			if err := checkValue(v); err != nil {
				return "", err
			}
			vals[j] = "'" + v + "'"
		}
		switch ex.Operator {
		case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
			if len(vals) == 0 {
				return "", fmt.Errorf("matchExpressions[%d]: %s needs values", i, ex.Operator)
			}
			op := " in "
			if ex.Operator == metav1.LabelSelectorOpNotIn {
				op = " not in "
			}
			parts = append(parts, ex.Key+op+"{"+strings.Join(vals, ", ")+"}")
		case metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist:
			if len(vals) != 0 {
				return "", fmt.Errorf("matchExpressions[%d]: %s takes no values", i, ex.Operator)
			}
			s := "has(" + ex.Key + ")"
			if ex.Operator == metav1.LabelSelectorOpDoesNotExist {
				s = "!" + s
			}
			parts = append(parts, s)
		default:
			return "", fmt.Errorf("matchExpressions[%d]: unknown operator %q", i, ex.Operator)
		}
	}
	if len(parts) == 0 {
		return "all()", nil
	}
	return strings.Join(parts, " && "), nil
}

func checkKey(k string) error {
	if k == "" || len(k) > 317 {
		return fmt.Errorf("invalid label key %q", k)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/') {
			return fmt.Errorf("invalid label key %q", k)
		}
	}
	return nil
}

func checkValue(v string) error {
	if strings.ContainsAny(v, "'\"") || len(v) > 63 {
		return fmt.Errorf("invalid label value %q", v)
	}
	return nil
}
