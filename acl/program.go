package acl

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/tabbynet/tabby/acl/selector"
)

// program lists the entries of one classifier in evaluation order:
// failsafe ports (host endpoints), then every rule of every applicable
// policy tier by tier, each tier closed by its end-of-tier entry, and a
// final entry for the profile (or no-policy) default.
func (c *Compiler) program(ordered []*polState, cl *class, local netip.Addr, f Family, d Direction) []entry {
	var out []entry
	if cl.host {
		for i, fs := range c.opt.failsafe(d) {
			out = append(out, entry{
				pEq: int16(fs.Protocol), pNe: -1, dport: []prange{{fs.Min, fs.Max}}, act: actFinal, tier: -1,
				res: Result{Verdict: Allowed, Kind: MatchFailsafe, Rule: uint16(i)},
			})
		}
	}
	var tier *tierState
	tierPos := int32(-1)
	closeTier := func() {
		if tier == nil {
			return
		}
		e := entry{pEq: -1, pNe: -1, tier: tierPos, act: actFinal,
			res: Result{Verdict: Denied, Kind: MatchEndOfTier, Tier: tier.slot}}
		if tier.tier.DefaultPass {
			e.act = actPass
		}
		out = append(out, e)
	}
	for _, ps := range ordered {
		if !ps.pp.types[d] || !ps.appliesTo(cl) {
			continue
		}
		if t := c.tiers[ps.pp.tier]; t != tier {
			closeTier()
			tier = t
			tierPos++
		}
		for i := range ps.pp.rules[d] {
			out = c.ruleEntries(out, ps, i, cl, local, f, d, tierPos, tier.slot)
		}
	}
	closeTier()
	final := entry{pEq: -1, pNe: -1, tier: tierPos + 1, act: actFinal, res: Result{Verdict: Allowed, Kind: MatchNoPolicy}}
	if tier != nil {
		final.res.Kind = MatchProfile
	}
	if cl.host {
		final.res.Verdict = Denied
	}
	return append(out, final)
}

// ruleEntries appends the entries of one rule for a local endpoint class
// and address. Conditions on the local side are decided here; conditions on
// the remote side become address terms and port sets.
func (c *Compiler) ruleEntries(out []entry, ps *polState, idx int, cl *class, local netip.Addr, f Family, d Direction, tierPos int32, tierSlot uint16) []entry {
	r := &ps.pp.rules[d][idx]
	if r.ipv != 0 && r.ipv != int(f) {
		return out
	}
	localSide, remoteSide := sideDst, sideSrc
	if d == Egress {
		localSide, remoteSide = sideSrc, sideDst
	}
	ls := &r.side[localSide]
	if len(ls.nets) > 0 && !inNets(ls.nets, local) || inNets(ls.notNets, local) {
		return out
	}
	if ls.hasSel && !sideSelectsClass(ls.sel, ls.nsSel, ls.scopeNS, cl) {
		return out
	}
	if ls.notSel != nil && ls.notSel.MatchesMap(cl.labels) {
		return out
	}
	e := entry{pEq: -1, pNe: -1, tier: tierPos}
	if r.proto != 0 {
		e.pEq = int16(r.proto)
	}
	if r.notProto != 0 {
		e.pNe = int16(r.notProto)
	}
	if e.pEq >= 0 && e.pEq == e.pNe {
		return out
	}
	switch r.action {
	case Allow, Deny:
		e.act = actFinal
		e.res = Result{Verdict: Allowed, Kind: MatchRule, Tier: tierSlot, Rule: uint16(idx), Policy: ps.slot}
		if r.action == Deny {
			e.res.Verdict = Denied
		}
	case Pass:
		e.act = actPass
	case Log:
		e.act = actLog
		e.log = logRef{slot: ps.slot, dir: d, rule: uint16(idx)}
	}
	// Local port set.
	localPorts := func() ([]prange, bool) {
		var pos []prange
		if len(ls.ports) > 0 {
			pos = resolvePorts(ls.ports, cl, r.proto)
			if len(pos) == 0 {
				return nil, false
			}
		} else {
			pos = anyPorts
		}
		if len(ls.notPorts) > 0 {
			pos = subRanges(pos, resolvePorts(ls.notPorts, cl, r.proto))
			if len(pos) == 0 {
				return nil, false
			}
		}
		return pos, true
	}
	lp, ok := localPorts()
	if !ok {
		return out
	}
	if localSide == sideDst {
		e.dport = lp
	} else {
		e.sport = lp
	}
	if r.icmp != nil || r.notICMP != nil {
		set := anyPorts
		if r.icmp != nil {
			set = []prange{{r.icmp.lo, r.icmp.hi}}
		}
		if r.notICMP != nil {
			set = subRanges(set, []prange{{r.notICMP.lo, r.notICMP.hi}})
		}
		e.dport = interRanges(orAny(e.dport), set)
		if len(e.dport) == 0 {
			return out
		}
	}
	// Remote address terms.
	rs := &r.side[remoteSide]
	if len(rs.nets) > 0 {
		nets := netsOf(rs.nets, f)
		if len(nets) == 0 {
			return out
		}
		e.pos = append(e.pos, c.netTerm(nets, f))
	}
	if nn := netsOf(rs.notNets, f); len(nn) > 0 {
		e.neg = append(e.neg, c.netTerm(nn, f))
	}
	if rs.hasSel {
		e.pos = append(e.pos, c.selTerm(termSel, rs.sel, rs.nsSel, rs.scopeNS, f))
	}
	if rs.notSel != nil {
		e.neg = append(e.neg, c.selTerm(termNotSel, rs.notSel, nil, "", f))
	}
	// Remote ports: numeric sets, and named ports by combination of the
	// values the remote endpoint declares.
	remotePort := func(e *entry) *[]prange {
		if remoteSide == sideDst {
			return &e.dport
		}
		return &e.sport
	}
	var numPos, numNeg []prange
	feats := remoteFeats(r, rs)
	nPos := 0
	for _, p := range rs.ports {
		if p.name == "" {
			numPos = append(numPos, prange{p.lo, p.hi})
		} else {
			nPos++
		}
	}
	for _, p := range rs.notPorts {
		if p.name == "" {
			numNeg = append(numNeg, prange{p.lo, p.hi})
		}
	}
	numPos, numNeg = normRanges(numPos), normRanges(numNeg)
	base := func(extra []prange, exclude []prange) ([]prange, bool) {
		var pos []prange
		if len(rs.ports) > 0 {
			pos = normRanges(append(append([]prange(nil), numPos...), extra...))
			if len(pos) == 0 {
				return nil, false
			}
		} else {
			pos = anyPorts
		}
		pos = subRanges(pos, normRanges(append(append([]prange(nil), numNeg...), exclude...)))
		cur := *remotePort(&e)
		if cur != nil {
			pos = interRanges(cur, pos)
		}
		return pos, len(pos) > 0
	}
	if len(feats) == 0 {
		if len(rs.ports) > 0 || len(rs.notPorts) > 0 {
			p, ok := base(nil, nil)
			if !ok {
				return out
			}
			*remotePort(&e) = p
		}
		return append(out, e)
	}
	for _, combo := range c.combos(rs, feats) {
		var extra, exclude []prange
		for i, v := range combo {
			if v == 0 {
				continue
			}
			if i < nPos {
				extra = append(extra, prange{v, v})
			} else {
				exclude = append(exclude, prange{v, v})
			}
		}
		p, ok := base(extra, exclude)
		if !ok {
			continue
		}
		x := e
		x.pos = append(append([]*term(nil), e.pos...), c.namedTerm(rs, feats, combo, f))
		*remotePort(&x) = p
		out = append(out, x)
	}
	return out
}

// remoteFeats lists a side's named ports (ports first, then notPorts).
func remoteFeats(r *pRule, rs *pSide) []namedFeat {
	var feats []namedFeat
	for _, p := range rs.ports {
		if p.name != "" {
			feats = append(feats, namedFeat{p.name, r.proto})
		}
	}
	for _, p := range rs.notPorts {
		if p.name != "" {
			feats = append(feats, namedFeat{p.name, r.proto})
		}
	}
	return feats
}

func orAny(p []prange) []prange {
	if p == nil {
		return anyPorts
	}
	return p
}

func netsOf(nets []netip.Prefix, f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range nets {
		if famOf(n.Addr()) == f {
			out = append(out, n)
		}
	}
	return out
}

// resolvePorts turns ports of the local side into ranges, resolving names
// against the local endpoint's declared ports.
func resolvePorts(ps []pPort, cl *class, proto Protocol) []prange {
	var out []prange
	for _, p := range ps {
		if p.name == "" {
			out = append(out, prange{p.lo, p.hi})
			continue
		}
		for _, np := range cl.ports {
			if np.Name == p.name && np.Protocol == proto {
				out = append(out, prange{np.Port, np.Port})
			}
		}
	}
	return normRanges(out)
}

// comboState is the persistent set of named-port value combinations of
// one rule side: it only grows (classes are examined once, as they appear),
// so its length identifies it.
type comboState struct {
	proto   *term
	combos  [][]uint16
	seen    map[string]bool
	covered int
}

func sideComboKey(rs *pSide, feats []namedFeat) string {
	ck := ""
	if rs.hasSel {
		ck = selKey(rs.sel, rs.nsSel, rs.scopeNS)
	}
	for _, f := range feats {
		ck += "\x00" + f.name + "/" + strconv.Itoa(int(f.proto))
	}
	return ck
}

// combos lists the distinct vectors of named-port values (one per
// feature) that classes present, the all-zero vector first.
func (c *Compiler) combos(rs *pSide, feats []namedFeat) [][]uint16 {
	ck := sideComboKey(rs, feats)
	cs := c.comboStates[ck]
	if cs == nil {
		cs = &comboState{proto: &term{sel: rs.sel, nsSel: rs.nsSel, scopeNS: rs.scopeNS, hasSel: rs.hasSel, feats: feats},
			seen: map[string]bool{}}
		zero := make([]uint16, len(feats))
		cs.combos = append(cs.combos, zero)
		cs.seen[comboKey(zero)] = true
		c.comboStates[ck] = cs
	}
	for ; cs.covered < len(c.w.classes); cs.covered++ {
		cl := c.w.classes[cs.covered]
		if len(cl.ports) == 0 {
			continue
		}
		v := namedValues(cs.proto, cl)
		if k := comboKey(v); !cs.seen[k] {
			cs.seen[k] = true
			cs.combos = append(cs.combos, v)
		}
	}
	return cs.combos
}

func comboKey(v []uint16) string {
	var b strings.Builder
	for _, x := range v {
		b.WriteString(strconv.Itoa(int(x)))
		b.WriteByte(',')
	}
	return b.String()
}

func (c *Compiler) term(key string, mk func() *term) *term {
	t := c.w.terms[key]
	if t == nil {
		t = mk()
		t.key = key
		c.w.terms[key] = t
	}
	return t
}

func (c *Compiler) netTerm(nets []netip.Prefix, f Family) *term {
	s := make([]string, len(nets))
	for i, n := range nets {
		s[i] = n.String()
	}
	sort.Strings(s)
	return c.term("N"+strconv.Itoa(int(f))+":"+strings.Join(s, ","), func() *term {
		return &term{kind: termNets, fam: f, nets: nets}
	})
}

func selKey(sel, nsSel *selector.Selector, scopeNS string) string {
	k := sel.String() + "\x00" + scopeNS
	if nsSel != nil {
		k += "\x00" + nsSel.String()
	}
	return k
}

func (c *Compiler) selTerm(kind termKind, sel, nsSel *selector.Selector, scopeNS string, f Family) *term {
	key := "S" + strconv.Itoa(int(kind)) + strconv.Itoa(int(f)) + ":" + selKey(sel, nsSel, scopeNS)
	return c.term(key, func() *term {
		return &term{kind: kind, fam: f, sel: sel, nsSel: nsSel, scopeNS: scopeNS}
	})
}

func (c *Compiler) namedTerm(rs *pSide, feats []namedFeat, combo []uint16, f Family) *term {
	var b strings.Builder
	b.WriteString("P" + strconv.Itoa(int(f)) + ":")
	if rs.hasSel {
		b.WriteString(selKey(rs.sel, rs.nsSel, rs.scopeNS))
	}
	for _, ft := range feats {
		b.WriteString("\x00" + ft.name + "/" + strconv.Itoa(int(ft.proto)))
	}
	b.WriteString("=" + comboKey(combo))
	return c.term(b.String(), func() *term {
		return &term{kind: termNamed, fam: f, sel: rs.sel, nsSel: rs.nsSel, scopeNS: rs.scopeNS, hasSel: rs.hasSel,
			feats: feats, combo: append([]uint16(nil), combo...)}
	})
}
