package acl

import (
	"net/netip"
	"sort"
	"strconv"
	"unsafe"
)

// Compiled is one immutable policy snapshot: every local endpoint's
// classifiers, the address → endpoint map and the address → atom maps for
// addresses of no endpoint. Any number of goroutines may use it at once.
type Compiled struct {
	// Generation increases with every Compile of a Compiler; conntrack uses
	// it to revalidate flows after a policy change.
	Generation uint64

	ep4       table4
	ep6       table6
	trie4     *trie4
	reg6      []u128 // sorted region starts
	reg6Atom  []uint32
	endpoints []Endpoint
	tierNames []string
	slots     []string
	slotTier  []string
	logs      [][]logRef
	opt       Options
	stats     Stats

	pend4 []pending4
	pend6 []pending6
}

type epSlot struct {
	ep   int32
	atom uint32
	cls  [2]*Classifier
}

type pending4 struct {
	k uint32
	v epSlot
}

type pending6 struct {
	k [16]byte
	v epSlot
}

func (c *Compiled) addEndpointIP(a netip.Addr, s epSlot) {
	if a.Is4() {
		b := a.As4()
		c.pend4 = append(c.pend4, pending4{uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), s})
	} else {
		c.pend6 = append(c.pend6, pending6{a.As16(), s})
	}
}

// buildRegions finalises the address tables.
func (c *Compiled) buildRegions(w *world) {
	c.ep4.build(c.pend4)
	c.ep6.build(c.pend6)
	c.pend4, c.pend6 = nil, nil
	c.trie4 = &trie4{}
	r4 := w.regions[0]
	starts := make([]uint32, len(r4.starts))
	atoms := make([]uint32, len(r4.starts))
	for i, s := range r4.starts {
		starts[i] = uint32(s.lo)
		atoms[i] = uint32(w.atomIdx[0][atom{class: -1, region: r4.ids[i]}])
	}
	c.trie4.build(starts, atoms)
	r6 := w.regions[1]
	c.reg6 = append([]u128(nil), r6.starts...)
	c.reg6Atom = make([]uint32, len(r6.starts))
	for i := range r6.starts {
		c.reg6Atom[i] = uint32(w.atomIdx[1][atom{class: -1, region: r6.ids[i]}])
	}
}

func (c *Compiled) tableBytes() int {
	return 8*len(c.ep4.keys) + int(unsafe.Sizeof(epSlot{}))*(len(c.ep4.vals)+len(c.ep6.vals)) + 16*len(c.ep6.keys) +
		4*len(c.trie4.root) + 1024*len(c.trie4.full) + 20*len(c.trie4.compact) + 20*len(c.reg6)
}

// Stats returns the statistics of the compile that produced c.
func (c *Compiled) Stats() Stats { return c.stats }

// Check is the policy outcome for one packet.
type Check struct {
	Verdict Verdict
	// Egress is the source endpoint's egress result, Ingress the
	// destination endpoint's ingress result; Kind is MatchNone when that
	// side is not a local endpoint.
	Egress, Ingress Result
	// SrcEndpoint and DstEndpoint index Endpoint (-1: none).
	SrcEndpoint, DstEndpoint int32
}

// Check applies the egress policy of the packet's source endpoint and the
// ingress policy of its destination endpoint (each when local). A packet
// between two addresses of no local endpoint is allowed: it is not this
// node's to police. It does not allocate.
func (c *Compiled) Check(p *Packet) Check {
	var ss, ds *epSlot
	if p.Family == IPv4 {
		ss, ds = c.ep4.lookup(p.Src4), c.ep4.lookup(p.Dst4)
	} else {
		ss, ds = c.ep6.lookup(&p.Src6), c.ep6.lookup(&p.Dst6)
	}
	r := Check{Verdict: Allowed, SrcEndpoint: -1, DstEndpoint: -1}
	if ss != nil {
		r.SrcEndpoint = ss.ep
		if cl := ss.cls[Egress]; cl != nil {
			r.Egress = cl.result(cl.cellIndex(c.dstAtom(p, ds), p.Proto, p.SrcPort, p.DstPort))
			r.Verdict = r.Egress.Verdict
		}
	}
	if ds != nil {
		r.DstEndpoint = ds.ep
		if cl := ds.cls[Ingress]; cl != nil {
			r.Ingress = cl.result(cl.cellIndex(c.srcAtom(p, ss), p.Proto, p.SrcPort, p.DstPort))
			if r.Ingress.Verdict == Denied {
				r.Verdict = Denied
			}
		}
	}
	return r
}

// srcAtom returns the atom of the packet's source address: that of its
// endpoint slot ss when the source is local, else a lookup's. It is small
// enough to inline, so a local source costs no call.
func (c *Compiled) srcAtom(p *Packet, ss *epSlot) uint32 {
	if ss != nil {
		return ss.atom
	}
	return c.lookupSrcAtom(p)
}

// dstAtom is srcAtom for the destination address and its slot ds.
func (c *Compiled) dstAtom(p *Packet, ds *epSlot) uint32 {
	if ds != nil {
		return ds.atom
	}
	return c.lookupDstAtom(p)
}

func (c *Compiled) lookupSrcAtom(p *Packet) uint32 {
	if p.Family == IPv4 {
		return c.trie4.lookup(p.Src4)
	}
	return c.atom6(&p.Src6)
}

func (c *Compiled) lookupDstAtom(p *Packet) uint32 {
	if p.Family == IPv4 {
		return c.trie4.lookup(p.Dst4)
	}
	return c.atom6(&p.Dst6)
}

func (c *Compiled) atom6(a *[16]byte) uint32 {
	x := addrU128(netip.AddrFrom16(*a))
	lo, hi := 0, len(c.reg6)
	for hi-lo > 1 {
		m := int(uint(lo+hi) >> 1)
		if x.less(c.reg6[m]) {
			hi = m
		} else {
			lo = m
		}
	}
	return c.reg6Atom[lo]
}

// Endpoint returns endpoint i of a Check.
func (c *Compiled) Endpoint(i int32) *Endpoint { return &c.endpoints[i] }

// EndpointOf returns the index of the endpoint that owns an address.
func (c *Compiled) EndpointOf(a netip.Addr) (int32, bool) {
	s := c.slotOf(a)
	if s == nil {
		return -1, false
	}
	return s.ep, true
}

// Classifier returns the classifier of the endpoint that owns a (local)
// address for a direction, or nil.
func (c *Compiled) Classifier(a netip.Addr, d Direction) *Classifier {
	s := c.slotOf(a)
	if s == nil {
		return nil
	}
	return s.cls[d]
}

// slotOf returns the slot of the local endpoint that owns an address, or
// nil.
func (c *Compiled) slotOf(a netip.Addr) *epSlot {
	if a.Is4() {
		b := a.As4()
		return c.ep4.lookup(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
	}
	b := a.As16()
	return c.ep6.lookup(&b)
}

// Describe spells out a result of direction d.
func (c *Compiled) Describe(r Result, d Direction) Match {
	m := Match{Verdict: r.Verdict, Kind: r.Kind, Dir: d}
	switch r.Kind {
	case MatchRule:
		m.Tier, m.Policy, m.Index = c.tierName(r.Tier), c.policyName(r.Policy), int(r.Rule)
	case MatchEndOfTier:
		m.Tier = c.tierName(r.Tier)
	case MatchFailsafe:
		m.Index = int(r.Rule)
	}
	m.Logs = c.LogRules(r.Logs)
	return m
}

func (c *Compiled) tierName(s uint16) string {
	return nameAt(c.tierNames, s)
}

func (c *Compiled) policyName(s uint32) string {
	return nameAt(c.slots, s)
}

// LogRules lists the Log rules of a Result.Logs id (nil for 0).
func (c *Compiled) LogRules(id uint32) []RuleRef {
	if id == 0 || int(id) >= len(c.logs) {
		return nil
	}
	out := make([]RuleRef, len(c.logs[id]))
	for i, l := range c.logs[id] {
		out[i] = RuleRef{Policy: c.policyName(l.slot), Dir: l.dir, Index: int(l.rule)}
		if int(l.slot) < len(c.slotTier) {
			out[i].Tier = c.slotTier[l.slot]
		}
	}
	return out
}

// table4 is an open-addressing hash table from IPv4 address to endpoint
// slot (0.0.0.0 marks an empty cell; it is never an endpoint address).
type table4 struct {
	keys  []uint32
	vals  []epSlot
	shift uint32
}

func hash32(k uint32) uint32 { return k * 0x9e3779b1 }

func (t *table4) build(items []pending4) {
	n := 8
	for n < 2*len(items) {
		n <<= 1
	}
	t.keys = make([]uint32, n)
	t.vals = make([]epSlot, n)
	t.shift = 32 - uint32(log2(n))
	mask := uint32(n - 1)
	for _, it := range items {
		i := hash32(it.k) >> t.shift
		for t.keys[i] != 0 {
			i = (i + 1) & mask
		}
		t.keys[i], t.vals[i] = it.k, it.v
	}
}

func (t *table4) lookup(k uint32) *epSlot {
	if k == 0 {
		return nil
	}
	mask := uint32(len(t.keys) - 1)
	i := hash32(k) >> t.shift
	for {
		x := t.keys[i]
		if x == k {
			return &t.vals[i]
		}
		if x == 0 {
			return nil
		}
		i = (i + 1) & mask
	}
}

// table6 is table4 for IPv6 (the unspecified address marks an empty cell).
type table6 struct {
	keys  [][2]uint64
	vals  []epSlot
	shift uint64
}

func key6(a *[16]byte) [2]uint64 {
	var hi, lo uint64
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(a[i])
		lo = lo<<8 | uint64(a[8+i])
	}
	return [2]uint64{hi, lo}
}

func hash64(k [2]uint64) uint64 { return (k[0]*0x9e3779b97f4a7c15 ^ k[1]) * 0xbf58476d1ce4e5b9 }

func (t *table6) build(items []pending6) {
	n := 8
	for n < 2*len(items) {
		n <<= 1
	}
	t.keys = make([][2]uint64, n)
	t.vals = make([]epSlot, n)
	t.shift = 64 - uint64(log2(n))
	mask := uint64(n - 1)
	for _, it := range items {
		k := key6(&it.k)
		i := hash64(k) >> t.shift
		for t.keys[i] != [2]uint64{} {
			i = (i + 1) & mask
		}
		t.keys[i], t.vals[i] = k, it.v
	}
}

func (t *table6) lookup(a *[16]byte) *epSlot {
	k := key6(a)
	if k == [2]uint64{} {
		return nil
	}
	mask := uint64(len(t.keys) - 1)
	i := hash64(k) >> t.shift
	for {
		x := t.keys[i]
		if x == k {
			return &t.vals[i]
		}
		if x == [2]uint64{} {
			return nil
		}
		i = (i + 1) & mask
	}
}

func log2(n int) int {
	l := 0
	for 1<<l < n {
		l++
	}
	return l
}

// trie4 maps an IPv4 address to the atom of its region: a 65536-entry
// root indexed by the top 16 bits, then one node per further byte. An entry
// with leafBit holds an atom; otherwise it names a node: a full 256-entry
// node, or (compactBit) a node of at most four runs stored in 20 bytes, the
// common case for CIDR boundaries, which keeps the working set in cache.
type trie4 struct {
	root    []uint32
	full    [][256]uint32
	compact []compactNode
}

// compactNode is a node of n+1 runs: bytes below starts[0] map to vals[0],
// from starts[i-1] to vals[i].
type compactNode struct {
	starts [3]uint8
	n      uint8
	vals   [4]uint32
}

const (
	leafBit    = 1 << 31
	compactBit = 1 << 30
)

func (t *trie4) next(e, b uint32) uint32 {
	if e&compactBit != 0 {
		n := &t.compact[e&^compactBit]
		i := 0
		if b >= uint32(n.starts[0]) && n.n > 0 {
			i = 1
		}
		if b >= uint32(n.starts[1]) && n.n > 1 {
			i = 2
		}
		if b >= uint32(n.starts[2]) && n.n > 2 {
			i = 3
		}
		return n.vals[i]
	}
	return t.full[e][b]
}

func (t *trie4) lookup(a uint32) uint32 {
	e := t.root[a>>16]
	if e&leafBit != 0 {
		return e &^ leafBit
	}
	e = t.next(e, a>>8&0xff)
	if e&leafBit != 0 {
		return e &^ leafBit
	}
	return t.next(e, a&0xff) &^ leafBit
}

// build fills the trie from sorted region starts (starts[0] == 0).
func (t *trie4) build(starts, atoms []uint32) {
	t.root = make([]uint32, 1<<16)
	at := func(a uint32) int { // index of the region holding a
		return sort.Search(len(starts), func(i int) bool { return starts[i] > a }) - 1
	}
	var fill func(base uint32, shift uint, out []uint32)
	fill = func(base uint32, shift uint, out []uint32) {
		size := uint64(1) << shift
		for i := range out {
			lo := base + uint32(uint64(i)*size)
			k := at(lo)
			hi := uint64(lo) + size - 1
			if k+1 >= len(starts) || uint64(starts[k+1]) > hi {
				out[i] = atoms[k] | leafBit
				continue
			}
			var tmp [256]uint32
			fill(lo, shift-8, tmp[:])
			out[i] = t.node(&tmp)
		}
	}
	fill(0, 16, t.root)
}

// node stores a node, compact when it has at most four runs.
func (t *trie4) node(e *[256]uint32) uint32 {
	var n compactNode
	runs := 0
	n.vals[0] = e[0]
	for b := 1; b < 256; b++ {
		if e[b] == e[b-1] {
			continue
		}
		runs++
		if runs > 3 {
			t.full = append(t.full, *e)
			return uint32(len(t.full) - 1)
		}
		n.starts[runs-1] = uint8(b)
		n.vals[runs] = e[b]
	}
	n.n = uint8(runs)
	t.compact = append(t.compact, n)
	return uint32(len(t.compact)-1) | compactBit
}

// String formats a Match for traces: "allow rule tier/policy[2] (logs 1)".
func (m Match) String() string {
	s := m.Verdict.String() + " " + m.Kind.String()
	switch m.Kind {
	case MatchRule:
		s += " " + m.Tier + "/" + m.Policy + "[" + itoa(m.Index) + "]"
	case MatchEndOfTier:
		s += " " + m.Tier
	case MatchFailsafe:
		s += " [" + itoa(m.Index) + "]"
	}
	if len(m.Logs) > 0 {
		s += " (logs " + itoa(len(m.Logs)) + ")"
	}
	return s
}

func itoa(i int) string { return strconv.Itoa(i) }

// Trace formats a Decision for a per-packet trace (slow path only).
func (c *Compiled) Trace(d Decision) string {
	s := d.Verdict.String() + " " + d.Reason.String()
	if d.Check.Egress.Kind != MatchNone {
		s += "; egress " + c.Describe(d.Check.Egress, Egress).String()
	}
	if d.Check.Ingress.Kind != MatchNone {
		s += "; ingress " + c.Describe(d.Check.Ingress, Ingress).String()
	}
	return s
}
