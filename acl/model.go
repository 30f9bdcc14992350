package acl

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Action is what a matching rule does.
type Action uint8

// Rule actions, after Calico.
const (
	// Allow accepts the packet for this direction: no later rule, policy
	// or tier is consulted.
	Allow Action = iota
	// Deny drops the packet.
	Deny
	// Pass skips the rest of the current tier: evaluation continues with
	// the next tier that applies to the endpoint (or the endpoint's
	// profile when there is none).
	Pass
	// Log counts the packet and emits a rate-limited flow record, then
	// evaluation continues with the next rule.
	Log
)

var actionNames = [...]string{Allow: "Allow", Deny: "Deny", Pass: "Pass", Log: "Log"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// ParseAction parses "Allow", "Deny", "Pass" or "Log" (case-insensitive).
func ParseAction(s string) (Action, error) {
	for i, n := range actionNames {
		if strings.EqualFold(s, n) {
			return Action(i), nil
		}
	}
	return 0, fmt.Errorf("unknown action %q", s)
}

// Direction is the side of an endpoint a rule set guards.
type Direction uint8

// Directions.
const (
	Ingress Direction = iota // traffic to the endpoint
	Egress                   // traffic from the endpoint
)

func (d Direction) String() string {
	if d == Egress {
		return "Egress"
	}
	return "Ingress"
}

// Protocol is an IP protocol number; 0 in a rule means "unset".
type Protocol uint8

// Protocols with names.
const (
	ProtoICMP    Protocol = 1
	ProtoTCP     Protocol = 6
	ProtoUDP     Protocol = 17
	ProtoICMPv6  Protocol = 58
	ProtoSCTP    Protocol = 132
	ProtoUDPLite Protocol = 136
)

var protoNames = map[string]Protocol{
	"tcp": ProtoTCP, "udp": ProtoUDP, "icmp": ProtoICMP, "icmpv6": ProtoICMPv6,
	"sctp": ProtoSCTP, "udplite": ProtoUDPLite,
}

// ParseProtocol parses a Calico protocol: TCP, UDP, ICMP, ICMPv6, SCTP,
// UDPLite (any case) or a number 1..255.
func ParseProtocol(s string) (Protocol, error) {
	if p, ok := protoNames[strings.ToLower(s)]; ok {
		return p, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 255 {
		return 0, fmt.Errorf("invalid protocol %q", s)
	}
	return Protocol(n), nil
}

func (p Protocol) String() string {
	switch p {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoICMP:
		return "ICMP"
	case ProtoICMPv6:
		return "ICMPv6"
	case ProtoSCTP:
		return "SCTP"
	case ProtoUDPLite:
		return "UDPLite"
	}
	return strconv.Itoa(int(p))
}

// hasPorts reports whether the protocol carries ports a rule may match.
func (p Protocol) hasPorts() bool {
	return p == ProtoTCP || p == ProtoUDP || p == ProtoSCTP || p == ProtoUDPLite
}

// Port is a port, a port range or a named port in a rule.
type Port struct {
	// Min and Max bound a numeric range (Min == Max for one port).
	Min, Max uint16
	// Name is a named port (Min and Max are then ignored): it matches the
	// port of that name, for the rule's protocol, declared by the endpoint
	// that owns the address on the same side of the packet.
	Name string
}

// ParsePort parses "80", "1000:2000" or a port name.
func ParsePort(s string) (Port, error) {
	if s == "" {
		return Port{}, fmt.Errorf("empty port")
	}
	if c := s[0]; c < '0' || c > '9' {
		if !validPortName(s) {
			return Port{}, fmt.Errorf("invalid port name %q", s)
		}
		return Port{Name: s}, nil
	}
	lo, hi, isRange := strings.Cut(s, ":")
	a, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return Port{}, fmt.Errorf("invalid port %q", s)
	}
	b := a
	if isRange {
		if b, err = strconv.ParseUint(hi, 10, 16); err != nil {
			return Port{}, fmt.Errorf("invalid port range %q", s)
		}
	}
	return Port{Min: uint16(a), Max: uint16(b)}, nil
}

// validPortName accepts IANA_SVC_NAME-like names (Kubernetes): up to 15
// lowercase letters, digits and inner dashes, with a letter.
func validPortName(s string) bool {
	if len(s) > 15 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}

func (p Port) String() string {
	switch {
	case p.Name != "":
		return p.Name
	case p.Min == p.Max:
		return strconv.Itoa(int(p.Min))
	}
	return strconv.Itoa(int(p.Min)) + ":" + strconv.Itoa(int(p.Max))
}

// ICMPMatch matches ICMP (or ICMPv6) type and, optionally, code.
type ICMPMatch struct {
	Type int
	Code *int
}

// EntityRule is one side (source or destination) of a rule. Every field
// that is set must match; unset fields match anything.
type EntityRule struct {
	// Nets: the address is in one of these CIDRs. NotNets: in none.
	Nets, NotNets []string
	// Selector selects endpoints whose addresses match. In a namespaced
	// policy it is scoped to the policy's namespace unless
	// NamespaceSelector is set; NamespaceSelector alone selects every
	// endpoint of the matching namespaces (global() selects host
	// endpoints).
	Selector, NamespaceSelector string
	// NotSelector: the address belongs to no endpoint it selects (over all
	// endpoints, unscoped, as Calico does).
	NotSelector string
	// Ports: the port is one of these; NotPorts: none of these. They need
	// a rule protocol with ports (TCP, UDP, SCTP, UDPLite).
	Ports, NotPorts []Port
}

// Rule is one policy rule.
type Rule struct {
	Action Action
	// IPVersion restricts the rule to IPv4 (4) or IPv6 (6); 0 is both.
	IPVersion int
	// Protocol and NotProtocol (0: unset).
	Protocol, NotProtocol Protocol
	// ICMP and NotICMP need Protocol ICMP or ICMPv6.
	ICMP, NotICMP *ICMPMatch
	Source        EntityRule
	Destination   EntityRule
}

// Tier groups policies; tiers are evaluated in order.
type Tier struct {
	Name string
	// Order sorts tiers (lower first; nil last; ties by name).
	Order *float64
	// DefaultPass makes the end of the tier pass to the next tier (Calico's
	// defaultAction: Pass) instead of denying (defaultAction: Deny, the
	// default) for an endpoint that a policy of the tier applies to.
	DefaultPass bool
}

// DefaultTier is the tier of policies that name none (Kubernetes
// NetworkPolicies among them). Unless State.Tiers defines it, it exists
// with order 1,000,000, after Calico.
const DefaultTier = "default"

// Policy is a Calico NetworkPolicy (Namespace set) or GlobalNetworkPolicy
// (Namespace empty).
type Policy struct {
	Name      string
	Namespace string
	// Tier defaults to DefaultTier.
	Tier string
	// Order sorts policies within a tier (lower first; nil last; ties by
	// name, namespace first).
	Order *float64
	// Selector selects the endpoints the policy applies to ("" = all()); in
	// a namespaced policy only endpoints of its namespace.
	Selector string
	// NamespaceSelector (global policies only) further restricts the
	// endpoints to those of matching namespaces.
	NamespaceSelector string
	// Types lists the directions the policy applies to. Nil derives them as
	// Calico does: Ingress when there are ingress rules or no egress rules,
	// Egress when there are egress rules.
	Types   []Direction
	Ingress []Rule
	Egress  []Rule
}

// ID returns "namespace/name" for namespaced policies and "name" for
// global ones.
func (p *Policy) ID() string {
	if p.Namespace == "" {
		return p.Name
	}
	return p.Namespace + "/" + p.Name
}

// NamedPort is a port an endpoint declares by name (a container port).
type NamedPort struct {
	Name     string
	Protocol Protocol
	Port     uint16
}

// Endpoint is a workload endpoint (a pod: Namespace set) or a host endpoint
// (Host true, no namespace).
type Endpoint struct {
	Name      string
	Namespace string
	Host      bool
	// Node is the node the endpoint lives on; only endpoints of
	// Options.Node get classifiers (all do when Options.Node is empty).
	Node   string
	Labels map[string]string
	IPs    []netip.Addr
	Ports  []NamedPort
}

// ID returns "namespace/name", or "host/name" for host endpoints.
func (e *Endpoint) ID() string {
	if e.Host {
		return "host/" + e.Name
	}
	return e.Namespace + "/" + e.Name
}

// Namespace is a Kubernetes namespace and its labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// State is the desired state the compiler turns into a Compiled snapshot.
type State struct {
	Tiers      []Tier
	Namespaces []Namespace
	Endpoints  []Endpoint
	Policies   []Policy
}

// Implicit labels added, as Calico does, to what selectors see.
const (
	// LabelNamespace is set on workload endpoints to their namespace name.
	LabelNamespace = "projectcalico.org/namespace"
	// LabelName is set on namespaces to their name.
	LabelName = "projectcalico.org/name"
)
