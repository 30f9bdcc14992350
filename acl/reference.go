package acl

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/tabbynet/tabby/acl/selector"
)

// Reference is the golden model: a plain first-match evaluator over the
// policy model, written to be obviously correct rather than fast. Every
// packet walks the tiers, evaluates policy selectors against the endpoint's
// labels, and every rule's fields one by one (selectors against the labels
// of the endpoint that owns the address). Differential tests and benchmarks
// compare Compiled against it.
type Reference struct {
	opt   Options
	tiers []refTier
	byIP  map[netip.Addr]*refEndpoint
	byEP  map[*Endpoint]*refEndpoint
	ns    map[string]map[string]string
}

type refTier struct {
	name     string
	pass     bool
	policies []*pPolicy
}

type refEndpoint struct {
	ep     *Endpoint
	labels map[string]string
	local  bool
}

// NewReference builds the reference evaluator for a state. It rejects the
// same invalid input Compile rejects.
func NewReference(s *State, opt Options) (*Reference, error) {
	r := &Reference{opt: opt, byIP: map[netip.Addr]*refEndpoint{}, byEP: map[*Endpoint]*refEndpoint{}, ns: map[string]map[string]string{}}
	for _, n := range s.Namespaces {
		r.ns[n.Name] = nsLabels(n.Name, n.Labels)
	}
	tiers, err := sortedTiers(s.Tiers, s.Policies)
	if err != nil {
		return nil, err
	}
	idx := map[string]int{}
	for _, t := range tiers {
		idx[t.Name] = len(r.tiers)
		r.tiers = append(r.tiers, refTier{name: t.Name, pass: t.DefaultPass})
	}
	for i := range s.Policies {
		pp, err := parsePolicy(&s.Policies[i])
		if err != nil {
			return nil, err
		}
		ti := idx[pp.tier]
		r.tiers[ti].policies = append(r.tiers[ti].policies, pp)
	}
	for i := range r.tiers {
		sortPolicies(r.tiers[i].policies)
	}
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		if err := ValidateEndpoint(e); err != nil {
			return nil, err
		}
		re := &refEndpoint{ep: e, labels: epLabels(e), local: opt.local(e)}
		r.byEP[e] = re
		for _, a := range e.IPs {
			if old, dup := r.byIP[a]; dup {
				return nil, fmt.Errorf("endpoint %q: address %v also belongs to %q", e.ID(), a, old.ep.ID())
			}
			r.byIP[a] = re
		}
	}
	return r, nil
}

// Evaluate applies the egress policy of the source endpoint and the ingress
// policy of the destination endpoint (each when that endpoint is local).
func (r *Reference) Evaluate(p *Packet) (Verdict, Match, Match) {
	src, dst := pktAddrs(p)
	var eg, in Match
	v := Allowed
	if e := r.byIP[src]; e != nil && e.local {
		eg = r.classify(e, Egress, p)
		if eg.Verdict == Denied {
			v = Denied
		}
	}
	if e := r.byIP[dst]; e != nil && e.local {
		in = r.classify(e, Ingress, p)
		if in.Verdict == Denied {
			v = Denied
		}
	}
	return v, eg, in
}

func pktAddrs(p *Packet) (src, dst netip.Addr) {
	if p.Family == IPv4 {
		return netip.AddrFrom4(u32to4(p.Src4)), netip.AddrFrom4(u32to4(p.Dst4))
	}
	return netip.AddrFrom16(p.Src6), netip.AddrFrom16(p.Dst6)
}

func u32to4(v uint32) [4]byte { return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// Classify evaluates the policy of the endpoint that owns addr for one
// direction; ok is false when no endpoint owns addr.
func (r *Reference) Classify(addr netip.Addr, d Direction, p *Packet) (m Match, ok bool) {
	re := r.byIP[addr]
	if re == nil {
		return Match{}, false
	}
	return r.classify(re, d, p), true
}

func (r *Reference) classify(re *refEndpoint, d Direction, p *Packet) Match {
	e := re.ep
	if e.Host {
		for i, f := range r.opt.failsafe(d) {
			if p.Proto == uint8(f.Protocol) && p.DstPort >= f.Min && p.DstPort <= f.Max {
				return Match{Verdict: Allowed, Kind: MatchFailsafe, Dir: d, Index: i}
			}
		}
	}
	labels := re.labels
	var logs []RuleRef
	applied := false
tiers:
	for _, t := range r.tiers {
		inTier := false
		for _, pol := range t.policies {
			if !pol.types[d] || !r.applies(pol, e, labels) {
				continue
			}
			inTier, applied = true, true
			for i := range pol.rules[d] {
				rule := &pol.rules[d][i]
				if !r.ruleMatches(pol, rule, p) {
					continue
				}
				ref := RuleRef{Tier: t.name, Policy: pol.id, Dir: d, Index: i}
				switch rule.action {
				case Log:
					logs = append(logs, ref)
				case Pass:
					continue tiers
				case Allow, Deny:
					v := Allowed
					if rule.action == Deny {
						v = Denied
					}
					return Match{Verdict: v, Kind: MatchRule, Tier: t.name, Policy: pol.id, Dir: d, Index: i, Logs: logs}
				}
			}
		}
		if inTier && !t.pass {
			return Match{Verdict: Denied, Kind: MatchEndOfTier, Tier: t.name, Dir: d, Logs: logs}
		}
	}
	v := Allowed
	if e.Host {
		v = Denied
	}
	k := MatchNoPolicy
	if applied {
		k = MatchProfile
	}
	return Match{Verdict: v, Kind: k, Dir: d, Logs: logs}
}

func (r *Reference) applies(pol *pPolicy, e *Endpoint, labels map[string]string) bool {
	if pol.src.Namespace != "" {
		if e.Host || e.Namespace != pol.src.Namespace {
			return false
		}
	} else if pol.nsSel != nil && !pol.nsSel.Matches(r.nsSelLabels(e)) {
		return false
	}
	return pol.sel.MatchesMap(labels)
}

func (r *Reference) nsSelLabels(e *Endpoint) selector.Labels {
	if e.Host {
		return selector.Labels{Global: true}
	}
	l, ok := r.ns[e.Namespace]
	if !ok {
		l = nsLabels(e.Namespace, nil)
	}
	return selector.Labels{Map: l}
}

func (r *Reference) ruleMatches(pol *pPolicy, rule *pRule, p *Packet) bool {
	if rule.ipv != 0 && rule.ipv != int(p.Family) {
		return false
	}
	if rule.proto != 0 && p.Proto != uint8(rule.proto) {
		return false
	}
	if rule.notProto != 0 && p.Proto == uint8(rule.notProto) {
		return false
	}
	if rule.icmp != nil && (p.DstPort < rule.icmp.lo || p.DstPort > rule.icmp.hi) {
		return false
	}
	if rule.notICMP != nil && p.DstPort >= rule.notICMP.lo && p.DstPort <= rule.notICMP.hi {
		return false
	}
	src, dst := pktAddrs(p)
	return r.sideMatches(pol, rule, &rule.side[sideSrc], src, p.SrcPort, p.Proto) &&
		r.sideMatches(pol, rule, &rule.side[sideDst], dst, p.DstPort, p.Proto)
}

func (r *Reference) sideMatches(pol *pPolicy, rule *pRule, s *pSide, a netip.Addr, port uint16, proto uint8) bool {
	if len(s.nets) > 0 && !inNets(s.nets, a) {
		return false
	}
	if inNets(s.notNets, a) {
		return false
	}
	owner := r.byIP[a]
	if s.hasSel && (owner == nil || !r.sideSelects(s, owner)) {
		return false
	}
	if s.notSel != nil && owner != nil && s.notSel.MatchesMap(owner.labels) {
		return false
	}
	if len(s.ports) > 0 && !r.portIn(s, s.ports, owner, port, proto) {
		return false
	}
	if r.portIn(s, s.notPorts, owner, port, proto) {
		return false
	}
	return true
}

// sideSelects reports whether the side's selector (with its namespace
// scope) selects endpoint e.
func (r *Reference) sideSelects(s *pSide, o *refEndpoint) bool {
	e := o.ep
	if s.nsSel != nil {
		if !s.nsSel.Matches(r.nsSelLabels(e)) {
			return false
		}
	} else if s.scopeNS != "" && (e.Host || e.Namespace != s.scopeNS) {
		return false
	}
	return s.sel.MatchesMap(o.labels)
}

func (r *Reference) portIn(s *pSide, ports []pPort, owner *refEndpoint, port uint16, proto uint8) bool {
	for _, pp := range ports {
		if pp.name == "" {
			if port >= pp.lo && port <= pp.hi {
				return true
			}
			continue
		}
		if owner == nil || (s.hasSel && !r.sideSelects(s, owner)) {
			continue
		}
		for _, np := range owner.ep.Ports {
			if np.Name == pp.name && uint8(np.Protocol) == proto && np.Port == port {
				return true
			}
		}
	}
	return false
}

func inNets(nets []netip.Prefix, a netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// epLabels returns the labels selectors see for an endpoint.
func epLabels(e *Endpoint) map[string]string {
	m := make(map[string]string, len(e.Labels)+1)
	for k, v := range e.Labels {
		m[k] = v
	}
	if !e.Host {
		m[LabelNamespace] = e.Namespace
	}
	return m
}

func nsLabels(name string, l map[string]string) map[string]string {
	m := make(map[string]string, len(l)+1)
	for k, v := range l {
		m[k] = v
	}
	m[LabelName] = name
	return m
}

// sortedTiers returns the defined tiers plus the default tier (unless
// defined), in evaluation order. It fails for a policy naming an unknown
// tier.
func sortedTiers(defined []Tier, policies []Policy) ([]Tier, error) {
	var out []Tier
	seen := map[string]bool{}
	for i := range defined {
		t := defined[i]
		if err := ValidateTier(&t); err != nil {
			return nil, err
		}
		if seen[t.Name] {
			return nil, &ValidationError{Kind: "tier", Object: t.Name, Msg: "defined twice"}
		}
		seen[t.Name] = true
		out = append(out, t)
	}
	if !seen[DefaultTier] {
		o := 1e6
		out = append(out, Tier{Name: DefaultTier, Order: &o})
		seen[DefaultTier] = true
	}
	for i := range policies {
		t := policies[i].Tier
		if t != "" && !seen[t] {
			return nil, &ValidationError{Kind: "policy", Object: policies[i].ID(), Field: "tier", Msg: fmt.Sprintf("unknown tier %q", t)}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return tierLess(&out[i], &out[j]) })
	return out, nil
}

func orderOf(o *float64) float64 {
	if o == nil {
		return inf
	}
	return *o
}

func tierLess(a, b *Tier) bool {
	oa, ob := orderOf(a.Order), orderOf(b.Order)
	if oa != ob {
		return oa < ob
	}
	return a.Name < b.Name
}

func sortPolicies(ps []*pPolicy) {
	sort.SliceStable(ps, func(i, j int) bool { return policyLess(ps[i], ps[j]) })
}

func policyLess(a, b *pPolicy) bool {
	if a.order != b.order {
		return a.order < b.order
	}
	return a.id < b.id
}
