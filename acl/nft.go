package acl

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// NftablesTable is the name of the table RenderNftables writes.
const NftablesTable = "tabby"

// RenderNftables renders a state as an nftables ruleset (input for
// `nft -f`) enforcing the same policy in the kernel: the same per-endpoint
// programs the classifiers are compiled from (local sides resolved, named
// ports expanded), one chain per program and tier, address terms as named
// sets. Forward, input and output hooks accept established and related
// flows, then jump to the egress program of the source endpoint and the
// ingress program of the destination endpoint. Allow returns to the hook
// (the other direction is checked next), Deny drops, Pass goes to the next
// tier's chain, Log logs and continues. Unlike the userspace dataplane,
// established flows are not revalidated after a policy change (flush the
// conntrack table for that).
func RenderNftables(s *State, opt Options) (string, error) {
	if _, err := NewReference(s, opt); err != nil { // validates the whole state
		return "", fmt.Errorf("render nftables: %w", err)
	}
	c := NewCompiler(opt)
	for _, t := range s.Tiers {
		if err := c.SetTier(t); err != nil {
			return "", fmt.Errorf("render nftables: %w", err)
		}
	}
	for _, n := range s.Namespaces {
		c.SetNamespace(n)
	}
	for _, e := range s.Endpoints {
		if err := c.SetEndpoint(e); err != nil {
			return "", fmt.Errorf("render nftables: %w", err)
		}
	}
	for _, p := range s.Policies {
		if err := c.SetPolicy(p); err != nil {
			return "", fmt.Errorf("render nftables: %w", err)
		}
	}
	c.Compile()
	return c.renderNftables(), nil
}

type nftWriter struct {
	c        *Compiler
	b        strings.Builder
	sets     map[*term]string
	setOrder []*term
	chains   strings.Builder
	progs    map[string]string // program key -> entry chain
	maps     [2][2][]string    // [family][direction] elements
}

func (c *Compiler) renderNftables() string {
	w := &nftWriter{c: c, sets: map[*term]string{}, progs: map[string]string{}}
	ordered := c.order()
	ids := make([]string, 0, len(c.endpoints))
	for id := range c.endpoints {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var key []byte
	for _, id := range ids {
		es := c.endpoints[id]
		if !c.opt.local(&es.ep) {
			continue
		}
		for _, a := range es.ep.IPs {
			f := famOf(a)
			reg := c.w.regions[famIdx(f)].find(addrU128(a))
			for d := Ingress; d <= Egress; d++ {
				key = c.programKey(key[:0], ordered, es.cls, reg, f, d)
				name, ok := w.progs[string(key)]
				if !ok {
					name = "k" + strconv.Itoa(len(w.progs))
					w.progs[string(key)] = name
					w.program(name, c.program(ordered, es.cls, a, f, d), f, d)
				}
				w.maps[famIdx(f)][d] = append(w.maps[famIdx(f)][d], a.String()+" : jump "+name)
			}
		}
	}
	b := &w.b
	b.WriteString("table inet " + NftablesTable + " {\n")
	for _, t := range w.setOrder {
		typ := "ipv4_addr"
		if t.fam == IPv6 {
			typ = "ipv6_addr"
		}
		fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n\t\tflags interval\n", w.sets[t], typ)
		if el := w.elements(t); len(el) > 0 {
			fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(el, ", "))
		}
		b.WriteString("\t}\n")
	}
	mapNames := [2][2]string{{"in4", "eg4"}, {"in6", "eg6"}}
	for f := 0; f < 2; f++ {
		typ := "ipv4_addr"
		if f == 1 {
			typ = "ipv6_addr"
		}
		for d := 0; d < 2; d++ {
			fmt.Fprintf(b, "\tmap %s {\n\t\ttype %s : verdict\n", mapNames[f][d], typ)
			if el := w.maps[f][d]; len(el) > 0 {
				fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(el, ", "))
			}
			b.WriteString("\t}\n")
		}
	}
	b.WriteString(w.chains.String())
	for _, hook := range []string{"forward", "input", "output"} {
		fmt.Fprintf(b, "\tchain %s {\n\t\ttype filter hook %s priority filter; policy accept;\n", hook, hook)
		b.WriteString("\t\tct state established,related accept\n")
		b.WriteString("\t\tip saddr vmap @eg4\n\t\tip6 saddr vmap @eg6\n")
		b.WriteString("\t\tip daddr vmap @in4\n\t\tip6 daddr vmap @in6\n")
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// elements lists a set's members: prefixes of a nets term, addresses of the
// live endpoints (of the term's family) a class term selects.
func (w *nftWriter) elements(t *term) []string {
	var out []string
	if t.kind == termNets {
		for _, p := range mergePrefixes(t.nets) {
			out = append(out, p.String())
		}
		return out
	}
	var addrs []netip.Addr
	for _, es := range w.c.endpoints {
		if !t.classMatches(&w.c.w, es.cls) {
			continue
		}
		for _, a := range es.ep.IPs {
			if famOf(a) == t.fam {
				addrs = append(addrs, a)
			}
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

// mergePrefixes drops prefixes covered by others (nft rejects overlapping
// interval elements).
func mergePrefixes(ps []netip.Prefix) []netip.Prefix {
	s := append([]netip.Prefix(nil), ps...)
	sort.Slice(s, func(i, j int) bool { return s[i].Bits() < s[j].Bits() })
	var out []netip.Prefix
	for _, p := range s {
		covered := false
		for _, q := range out {
			if q.Overlaps(p) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

func (w *nftWriter) set(t *term) string {
	n, ok := w.sets[t]
	if !ok {
		n = "a" + strconv.Itoa(len(w.sets))
		w.sets[t] = n
		w.setOrder = append(w.setOrder, t)
	}
	return n
}

// program writes the chains of one classifier program.
func (w *nftWriter) program(name string, entries []entry, f Family, d Direction) {
	// Tier positions present, in order; failsafe entries (tier -1) go in
	// the entry chain.
	var tiers []int32
	for _, e := range entries {
		if e.tier >= 0 && (len(tiers) == 0 || tiers[len(tiers)-1] != e.tier) {
			tiers = append(tiers, e.tier)
		}
	}
	chainOf := func(i int) string { return name + "_t" + strconv.Itoa(i) }
	ch := &w.chains
	fmt.Fprintf(ch, "\tchain %s {\n", name)
	for _, e := range entries {
		if e.tier < 0 {
			fmt.Fprintf(ch, "\t\t%s\n", w.rule(&e, f, d, "return"))
		}
	}
	if len(tiers) > 0 {
		fmt.Fprintf(ch, "\t\tgoto %s\n\t}\n", chainOf(0))
	}
	ti := 0
	open := false
	for _, e := range entries {
		if e.tier < 0 {
			continue
		}
		if !open || tiers[ti] != e.tier {
			if open {
				ch.WriteString("\t}\n")
				ti++
			}
			fmt.Fprintf(ch, "\tchain %s {\n", chainOf(ti))
			open = true
		}
		var verdict string
		switch e.act {
		case actLog:
			verdict = fmt.Sprintf("log prefix \"tabby %s[%d]: \"", w.c.slotName(e.log.slot), e.log.rule)
		case actPass:
			verdict = "goto " + chainOf(ti+1)
		default:
			verdict = "drop"
			if e.res.Verdict == Allowed {
				verdict = "return"
			}
			verdict = "counter " + verdict
		}
		fmt.Fprintf(ch, "\t\t%s\n", w.rule(&e, f, d, verdict))
	}
	if open {
		ch.WriteString("\t}\n")
	} else if len(tiers) == 0 {
		ch.WriteString("\t}\n")
	}
}

func (c *Compiler) slotName(s uint32) string {
	return nameAt(c.slots, s)
}

// rule renders one entry's match and a verdict.
func (w *nftWriter) rule(e *entry, f Family, d Direction, verdict string) string {
	var parts []string
	if e.pEq >= 0 {
		parts = append(parts, "meta l4proto "+strconv.Itoa(int(e.pEq)))
	}
	if e.pNe >= 0 {
		parts = append(parts, "meta l4proto != "+strconv.Itoa(int(e.pNe)))
	}
	field := "ip saddr"
	if f == IPv6 {
		field = "ip6 saddr"
	}
	if d == Egress {
		field = strings.Replace(field, "saddr", "daddr", 1)
	}
	for _, t := range e.pos {
		parts = append(parts, field+" @"+w.set(t))
	}
	for _, t := range e.neg {
		parts = append(parts, field+" != @"+w.set(t))
	}
	icmp := e.pEq == 1 || e.pEq == 58
	for _, pf := range []struct {
		rs   []prange
		expr string
	}{{e.sport, "th sport"}, {e.dport, "th dport"}} {
		if pf.rs == nil || len(pf.rs) == 1 && pf.rs[0] == (prange{0, 0xffff}) {
			continue
		}
		expr := pf.expr
		if icmp && expr == "th dport" {
			expr = "@th,0,16" // ICMP type<<8|code
		} else if icmp {
			continue
		}
		parts = append(parts, expr+" "+rangeSet(pf.rs))
	}
	parts = append(parts, verdict)
	return strings.Join(parts, " ")
}

func rangeSet(rs []prange) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		if r.lo == r.hi {
			s[i] = strconv.Itoa(int(r.lo))
		} else {
			s[i] = strconv.Itoa(int(r.lo)) + "-" + strconv.Itoa(int(r.hi))
		}
	}
	return "{ " + strings.Join(s, ", ") + " }"
}
