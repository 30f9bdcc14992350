package acl

import (
	"math"
	"math/bits"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/tabbynet/tabby/acl/selector"
)

var inf = math.Inf(1)

// u128 is an address as an unsigned integer (IPv4 in lo).
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) inc() (u128, bool) {
	lo, c := bits.Add64(a.lo, 1, 0)
	hi, c2 := bits.Add64(a.hi, 0, c)
	return u128{hi, lo}, c2 != 0
}

func addrU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var hi, lo uint64
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return u128{hi, lo}
}

// prefixRange returns the first and last address of a prefix.
func prefixRange(p netip.Prefix) (first, last u128) {
	first = addrU128(p.Addr())
	host := p.Addr().BitLen() - p.Bits()
	last = first
	switch {
	case host >= 128:
		last = u128{math.MaxUint64, math.MaxUint64}
	case host >= 64:
		last.hi |= 1<<(host-64) - 1
		last.lo = math.MaxUint64
	case host > 0:
		last.lo |= 1<<host - 1
	}
	return first, last
}

func famOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

func famIdx(f Family) int {
	if f == IPv6 {
		return 1
	}
	return 0
}

// bitset is a growable set of small integers.
type bitset []uint64

func (b bitset) has(i int) bool { return i>>6 < len(b) && b[i>>6]&(1<<(i&63)) != 0 }

func (b *bitset) set(i int) {
	for i>>6 >= len(*b) {
		*b = append(*b, 0)
	}
	(*b)[i>>6] |= 1 << (i & 63)
}

// each calls f for every member in increasing order.
func (b bitset) each(f func(int)) {
	for w, x := range b {
		for x != 0 {
			t := bits.TrailingZeros64(x)
			f(w<<6 | t)
			x &= x - 1
		}
	}
}

// class is a group of endpoints that selectors cannot tell apart: same
// namespace (and namespace labels), kind, labels and named ports.
type class struct {
	id     int32
	key    string
	ns     string
	host   bool
	labels map[string]string
	nsl    selector.Labels
	ports  []NamedPort
	refs   int
}

func classKey(e *Endpoint, nsl map[string]string) string {
	var b strings.Builder
	b.WriteString(e.Namespace)
	if e.Host {
		b.WriteString("\x00H")
	}
	writeMap := func(m map[string]string) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString("\x01")
			b.WriteString(k)
			b.WriteString("\x02")
			b.WriteString(m[k])
		}
	}
	b.WriteString("\x03")
	writeMap(e.Labels)
	b.WriteString("\x03")
	if !e.Host {
		writeMap(nsl)
	}
	ports := append([]NamedPort(nil), e.Ports...)
	sort.Slice(ports, func(i, j int) bool { return portLess(ports[i], ports[j]) })
	for _, p := range ports {
		b.WriteString("\x04")
		b.WriteString(p.Name)
		b.WriteString("/")
		b.WriteString(strconv.Itoa(int(p.Protocol)))
		b.WriteString("/")
		b.WriteString(strconv.Itoa(int(p.Port)))
	}
	return b.String()
}

func portLess(a, b NamedPort) bool {
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	if a.Protocol != b.Protocol {
		return a.Protocol < b.Protocol
	}
	return a.Port < b.Port
}

// atom is a set of addresses no term can split: the addresses of the
// endpoints of one class inside one region, or (class -1) the addresses of
// a region that belong to no endpoint.
type atom struct {
	class  int32
	region int32
}

// regionSet partitions one family's address space into intervals by every
// CIDR boundary of every rule. Region ids are stable across compiles (keyed
// by their first address), so atoms and classifiers survive unrelated
// changes.
type regionSet struct {
	fam    Family
	starts []u128 // sorted
	ids    []int32
	byAddr map[u128]int32
	next   int32
	start  []u128 // by region id: first address
}

func newRegionSet(f Family) *regionSet {
	return &regionSet{fam: f, byAddr: map[u128]int32{}}
}

// rebuild recomputes the partition for a set of prefixes (of rs.fam).
func (rs *regionSet) rebuild(prefixes []netip.Prefix) {
	bounds := []u128{{}}
	for _, p := range prefixes {
		first, last := prefixRange(p)
		bounds = append(bounds, first)
		if n, wrap := last.inc(); !wrap && (rs.fam == IPv6 || n.lo <= math.MaxUint32) {
			bounds = append(bounds, n)
		}
	}
	sort.Slice(bounds, func(i, j int) bool { return bounds[i].less(bounds[j]) })
	rs.starts = rs.starts[:0]
	rs.ids = rs.ids[:0]
	for i, b := range bounds {
		if i > 0 && b == bounds[i-1] {
			continue
		}
		id, ok := rs.byAddr[b]
		if !ok {
			id = rs.next
			rs.next++
			rs.byAddr[b] = id
			rs.start = append(rs.start, b)
		}
		rs.starts = append(rs.starts, b)
		rs.ids = append(rs.ids, id)
	}
}

// find returns the region id of an address.
func (rs *regionSet) find(a u128) int32 {
	i := sort.Search(len(rs.starts), func(i int) bool { return a.less(rs.starts[i]) }) - 1
	return rs.ids[i]
}

// termKind is how a term decides membership.
type termKind uint8

const (
	termNets   termKind = iota // address in one of nets
	termSel                    // owner endpoint selected by a rule side's selector (scoped)
	termNotSel                 // owner endpoint matches a notSelector (unscoped)
	termNamed                  // owner's named-port values equal combo
)

// term is an address predicate: a set of atoms of one family.
type term struct {
	key  string
	kind termKind
	fam  Family
	nets []netip.Prefix
	// termSel / termNotSel / termNamed admission:
	sel     *selector.Selector
	nsSel   *selector.Selector
	scopeNS string
	hasSel  bool // termNamed: admission needs sel/nsSel/scopeNS
	feats   []namedFeat
	combo   []uint16
	// cache of class evaluations: 0 unknown, 1 no, 2 yes
	classEval []uint8
	// atom bitmap, valid for atoms [0, covered)
	bits    bitset
	covered int
}

type namedFeat struct {
	name  string
	proto Protocol
}

func (t *term) classMatches(w *world, c *class) bool {
	for int(c.id) >= len(t.classEval) {
		t.classEval = append(t.classEval, 0)
	}
	if v := t.classEval[c.id]; v != 0 {
		return v == 2
	}
	var ok bool
	switch t.kind {
	case termSel:
		ok = sideSelectsClass(t.sel, t.nsSel, t.scopeNS, c)
	case termNotSel:
		ok = t.sel.MatchesMap(c.labels)
	case termNamed:
		vals := namedValues(t, c)
		ok = true
		for i := range vals {
			if vals[i] != t.combo[i] {
				ok = false
			}
		}
	}
	t.classEval[c.id] = 1
	if ok {
		t.classEval[c.id] = 2
	}
	return ok
}

// namedValues returns, for each feature of t, the port the class declares
// (0: none, or the class is not admitted).
func namedValues(t *term, c *class) []uint16 {
	vals := make([]uint16, len(t.feats))
	if c == nil || (t.hasSel && !sideSelectsClass(t.sel, t.nsSel, t.scopeNS, c)) {
		return vals
	}
	for i, f := range t.feats {
		for _, p := range c.ports {
			if p.Name == f.name && p.Protocol == f.proto {
				vals[i] = p.Port
				break
			}
		}
	}
	return vals
}

func sideSelectsClass(sel, nsSel *selector.Selector, scopeNS string, c *class) bool {
	if nsSel != nil {
		if !nsSel.Matches(c.nsl) {
			return false
		}
	} else if scopeNS != "" && (c.host || c.ns != scopeNS) {
		return false
	}
	return sel.MatchesMap(c.labels)
}

// atomMember reports whether atom a of the term's family belongs to t.
func (t *term) atomMember(w *world, a atom) bool {
	if t.kind == termNets {
		st := w.regions[famIdx(t.fam)].start[a.region]
		for _, p := range t.nets {
			first, last := prefixRange(p)
			if !st.less(first) && !last.less(st) {
				return true
			}
		}
		return false
	}
	if a.class < 0 {
		if t.kind == termNamed {
			for _, v := range t.combo {
				if v != 0 {
					return false
				}
			}
			return true
		}
		return false
	}
	return t.classMatches(w, w.classes[a.class])
}

// update extends the atom bitmap to every atom of the family.
func (t *term) update(w *world) {
	atoms := w.atoms[famIdx(t.fam)]
	for g := t.covered; g < len(atoms); g++ {
		if t.atomMember(w, atoms[g]) {
			t.bits.set(g)
		}
	}
	t.covered = len(atoms)
}
