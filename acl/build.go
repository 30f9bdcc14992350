package acl

import (
	"encoding/binary"
	"math"
	"sort"
	"unsafe"
)

// entry is one conjunctive match of a program: all of pos, none of neg
// (address terms on the remote side), protocol, source and destination
// port sets. A rule becomes zero or more entries with the same result.
type entry struct {
	pos, neg     []*term
	pEq, pNe     int16    // protocol must equal pEq / differ from pNe (-1: unset)
	sport, dport []prange // normalised; nil: any
	act          uint8
	tier         int32 // position of the entry's tier in the program (Pass scope)
	res          Result
	log          logRef
}

const (
	actFinal uint8 = iota // Allow or Deny: decides
	actPass               // ends the tier
	actLog                // records and continues
)

// logRef names a Log rule.
type logRef struct {
	slot uint32
	dir  Direction
	rule uint16
}

// logInterner numbers lists of Log rules; id 0 is the empty list. It is
// append-only for the life of a Compiler, so classifiers reused across
// snapshots keep valid ids.
type logInterner struct {
	lists [][]logRef
	ext   map[logExt]uint32
	byKey map[string]uint32
}

type logExt struct {
	prev uint32
	ref  logRef
}

func newLogInterner() *logInterner {
	return &logInterner{lists: [][]logRef{nil}, ext: map[logExt]uint32{}, byKey: map[string]uint32{"": 0}}
}

func (li *logInterner) extend(prev uint32, r logRef) uint32 {
	if id, ok := li.ext[logExt{prev, r}]; ok {
		return id
	}
	l := append(append([]logRef(nil), li.lists[prev]...), r)
	var k []byte
	for _, x := range l {
		k = binary.LittleEndian.AppendUint32(k, x.slot)
		k = append(k, byte(x.dir))
		k = binary.LittleEndian.AppendUint16(k, x.rule)
	}
	id, ok := li.byKey[string(k)]
	if !ok {
		id = uint32(len(li.lists))
		li.lists = append(li.lists, l)
		li.byKey[string(k)] = id
	}
	li.ext[logExt{prev, r}] = id
	return id
}

// Classifier is the compiled policy for one endpoint class, local region,
// family and direction. It is immutable. A lookup is a fixed sequence of
// table reads whatever the number of rules:
//
//	pc := proto[p]; sc := sport(sp); dc := dport(dp)    // per-field classes
//	pi := pp[(pc*ns+sc)*nd+dc]                          // port/proto class
//	a  := alpha[atom(remote address)]                   // address class
//	r  := results[matrix[pi*nA+a]]                      // first match, precomputed
type Classifier struct {
	proto   [256]uint8
	sport   *portTable
	dport   *portTable
	ns, nd  uint32
	pp      []uint32
	alpha16 []uint16
	alpha32 []uint32
	nA      uint32
	// matrix16 holds result indexes when there are at most 65536 results
	// (the usual case: half the cache footprint), matrix32 otherwise.
	matrix16 []uint16
	matrix32 []uint32
	results  []Result

	// Compile-side data, never read by lookups.
	key      string
	terms    []*term
	sigAlpha map[string]uint32
	nAtoms   int
	entries  int
}

// cellIndex returns the index of the matrix cell for a packet whose remote
// address is in atom a: Check reads its result at once, CheckBatch a stage
// later. It does not allocate.
func (c *Classifier) cellIndex(a uint32, proto uint8, sport, dport uint16) uint32 {
	pc := uint32(c.proto[proto])
	sc := uint32(c.sport.lookup(sport))
	dc := uint32(c.dport.lookup(dport))
	pi := c.pp[(pc*c.ns+sc)*c.nd+dc]
	var al uint32
	if c.alpha32 != nil {
		al = c.alpha32[a]
	} else {
		al = uint32(c.alpha16[a])
	}
	return pi*c.nA + al
}

// MemoryBytes estimates the classifier's lookup memory.
func (c *Classifier) MemoryBytes() int {
	n := int(unsafe.Sizeof(*c)) + 4*len(c.pp) + 2*len(c.alpha16) + 4*len(c.alpha32) + 2*len(c.matrix16) + 4*len(c.matrix32) +
		int(unsafe.Sizeof(Result{}))*len(c.results)
	for _, t := range []*portTable{c.sport, c.dport} {
		n += int(unsafe.Sizeof(*t)) + 2*len(t.chunks)
	}
	return n
}

// Size reports the classifier's dimensions: protocol, source-port and
// destination-port classes, port/protocol classes, address classes and
// distinct results.
func (c *Classifier) Size() (protoClasses, sportClasses, dportClasses, ppClasses, addrClasses, results int) {
	np := 0
	for _, v := range c.proto {
		np = max(np, int(v)+1)
	}
	npp := 0
	for _, v := range c.pp {
		npp = max(npp, int(v)+1)
	}
	return np, int(c.ns), int(c.nd), npp, int(c.nA), len(c.results)
}

// forceWide makes every classifier use 32-bit tables (tests of the wide
// paths).
var forceWide = false

// buildClassifier compiles ordered entries over nAtoms atoms.
func buildClassifier(entries []entry, nAtoms int, li *logInterner) *Classifier {
	c := &Classifier{nAtoms: nAtoms, entries: len(entries)}

	// 1. Address classes: refine the atoms by every term.
	termIdx := map[*term]int{}
	for i := range entries {
		for _, t := range entries[i].pos {
			if _, ok := termIdx[t]; !ok {
				termIdx[t] = len(c.terms)
				c.terms = append(c.terms, t)
			}
		}
		for _, t := range entries[i].neg {
			if _, ok := termIdx[t]; !ok {
				termIdx[t] = len(c.terms)
				c.terms = append(c.terms, t)
			}
		}
	}
	cls := make([]int32, nAtoms)
	nCls := int32(1)
	if nAtoms == 0 {
		nCls = 0
	}
	splitOf := []int32{-1}
	stamp := []int32{-1}
	for ti, t := range c.terms {
		t.bits.each(func(g int) {
			if g >= nAtoms {
				return
			}
			old := cls[g]
			if stamp[old] != int32(ti) {
				stamp[old] = int32(ti)
				splitOf[old] = nCls
				splitOf = append(splitOf, -1)
				stamp = append(stamp, -1)
				nCls++
			}
			cls[g] = splitOf[old]
		})
	}
	// Classes left empty by a split (every member moved) are dropped.
	rep := make([]int32, nCls)
	for i := range rep {
		rep[i] = -1
	}
	for g := nAtoms - 1; g >= 0; g-- {
		rep[cls[g]] = int32(g)
	}
	remap := make([]int32, nCls)
	nA := int32(0)
	for i, r := range rep {
		remap[i] = -1
		if r >= 0 {
			remap[i] = nA
			rep[nA] = r
			nA++
		}
	}
	rep = rep[:nA]
	for g := range cls {
		cls[g] = remap[cls[g]]
	}
	if nA == 0 {
		// No atoms at all: one empty address class keeps lookups in bounds.
		nA = 1
		rep = []int32{-1}
	}
	repHas := func(t *term, a int32) bool { return rep[a] >= 0 && t.bits.has(int(rep[a])) }

	// 2. Address class lists per entry (nil alphas + universal: all).
	type eAddr struct {
		universal bool
		alphas    []int32
	}
	addr := make([]eAddr, len(entries))
	seen := make([]int32, nA)
	for i := range seen {
		seen[i] = -1
	}
	for i := range entries {
		e := &entries[i]
		if len(e.pos) == 0 && len(e.neg) == 0 {
			addr[i].universal = true
			continue
		}
		ok := func(a int32) bool {
			for _, t := range e.pos {
				if !repHas(t, a) {
					return false
				}
			}
			for _, t := range e.neg {
				if repHas(t, a) {
					return false
				}
			}
			return true
		}
		var list []int32
		if len(e.pos) > 0 {
			e.pos[0].bits.each(func(g int) {
				if g >= nAtoms {
					return
				}
				a := cls[g]
				if seen[a] == int32(i) {
					return
				}
				seen[a] = int32(i)
				if ok(a) {
					list = append(list, a)
				}
			})
		} else {
			for a := int32(0); a < nA; a++ {
				if ok(a) {
					list = append(list, a)
				}
			}
		}
		addr[i].alphas = list
	}

	// 3. Port and protocol classes.
	pcOf, pReps, pOther := protoClasses(entries)
	sStarts, sCls, sVecs, sSetOf := portClasses(entries, func(e *entry) []prange { return e.sport })
	dStarts, dCls, dVecs, dSetOf := portClasses(entries, func(e *entry) []prange { return e.dport })
	type triple struct {
		pEq, pNe int16
		s, d     int32
	}
	tripleIdx := map[triple]int{}
	var triples []triple
	eTriple := make([]int32, len(entries))
	for i := range entries {
		t := triple{entries[i].pEq, entries[i].pNe, sSetOf[i], dSetOf[i]}
		id, ok := tripleIdx[t]
		if !ok {
			id = len(triples)
			tripleIdx[t] = id
			triples = append(triples, t)
		}
		eTriple[i] = int32(id)
	}
	np, ns, nd := len(pReps), len(sVecs), len(dVecs)
	c.ns, c.nd = uint32(ns), uint32(nd)
	c.pp = make([]uint32, np*ns*nd)
	nT := len(triples)
	words := (nT + 63) / 64
	// Triples admitted by each (protocol class, source-port class)...
	psBits := make([]bitset, np*ns)
	for pc := 0; pc < np; pc++ {
		for sc := 0; sc < ns; sc++ {
			b := make(bitset, words)
			for ti, t := range triples {
				pv := pReps[pc]
				pOK := (t.pEq < 0 || (!pOther[pc] && int16(pv) == t.pEq)) && (t.pNe < 0 || pOther[pc] || int16(pv) != t.pNe)
				if pOK && sVecs[sc].has(int(t.s)) {
					b[ti>>6] |= 1 << (ti & 63)
				}
			}
			psBits[pc*ns+sc] = b
		}
	}
	// ...and by each destination-port class.
	byDset := map[int32][]int{}
	for ti, t := range triples {
		byDset[t.d] = append(byDset[t.d], ti)
	}
	piIdx := map[string]uint32{}
	var piVecs []bitset
	db := make(bitset, words)
	and := make(bitset, words)
	for dc := 0; dc < nd; dc++ {
		clear(db)
		dVecs[dc].each(func(s int) {
			for _, ti := range byDset[int32(s)] {
				db[ti>>6] |= 1 << (ti & 63)
			}
		})
		for ps := range psBits {
			for i := range and {
				and[i] = psBits[ps][i] & db[i]
			}
			k := bitsKey(and)
			id, ok := piIdx[k]
			if !ok {
				id = uint32(len(piVecs))
				piIdx[k] = id
				piVecs = append(piVecs, append(bitset(nil), and...))
			}
			c.pp[ps*nd+dc] = id
		}
	}

	// 4. Paint the (port class × address class) matrix by first match.
	nPi := len(piVecs)
	resIdx := map[Result]uint32{}
	var results []Result
	intern := func(r Result) uint32 {
		id, ok := resIdx[r]
		if !ok {
			id = uint32(len(results))
			resIdx[r] = id
			results = append(results, r)
		}
		return id
	}
	baseID := make([]uint32, len(entries))
	for i := range baseID {
		baseID[i] = math.MaxUint32
	}
	cells := make([]uint32, nPi*int(nA))
	open := make([]bool, nA)
	passed := make([]int32, nA)
	logs := make([]uint32, nA)
	openList := make([]int32, 0, nA)
	for pi := 0; pi < nPi; pi++ {
		row := cells[pi*int(nA) : (pi+1)*int(nA)]
		openList = openList[:0]
		for a := int32(0); a < nA; a++ {
			open[a], passed[a], logs[a] = true, math.MinInt32, 0
			openList = append(openList, a)
		}
		nOpen := int(nA)
		closedSince := 0
		vec := piVecs[pi]
		for i := range entries {
			if nOpen == 0 {
				break
			}
			if !vec.has(int(eTriple[i])) {
				continue
			}
			e := &entries[i]
			list := addr[i].alphas
			if addr[i].universal {
				list = openList
			}
			tier, act := e.tier, e.act
			for _, a := range list {
				if !open[a] || passed[a] == tier {
					continue
				}
				switch act {
				case actLog:
					logs[a] = li.extend(logs[a], e.log)
				case actPass:
					passed[a] = tier
				default:
					if logs[a] == 0 {
						if baseID[i] == math.MaxUint32 {
							baseID[i] = intern(e.res)
						}
						row[a] = baseID[i]
					} else {
						r := e.res
						r.Logs = logs[a]
						row[a] = intern(r)
					}
					open[a] = false
					nOpen--
					closedSince++
				}
			}
			if addr[i].universal && closedSince > len(openList)/2 {
				k := 0
				for _, a := range openList {
					if open[a] {
						openList[k] = a
						k++
					}
				}
				openList = openList[:k]
				closedSince = 0
			}
		}
		if nOpen > 0 {
			// Programs end with a universal final entry; this is a safety net.
			for a := int32(0); a < nA; a++ {
				if open[a] {
					row[a] = intern(Result{Verdict: Denied, Kind: MatchProfile})
				}
			}
		}
	}
	c.results = results

	// 5. Merge equal columns (address classes) and rows (port classes).
	// Columns are compared by two independent 64-bit hashes (a false merge
	// needs a 128-bit collision).
	colID := make([]uint32, nA)
	colHash := make([][2]uint64, nA)
	for pi := 0; pi < nPi; pi++ {
		row := cells[pi*int(nA) : (pi+1)*int(nA)]
		for a, v := range row {
			h := &colHash[a]
			h[0] = (h[0]^uint64(v))*0x100000001b3 + 1
			h[1] = (h[1]+uint64(v)+0x9e3779b97f4a7c15)*0xbf58476d1ce4e5b9 ^ h[1]>>29
		}
	}
	byHash := map[[2]uint64]uint32{}
	var colRep []int32
	for a := int32(0); a < nA; a++ {
		id, ok := byHash[colHash[a]]
		if !ok {
			id = uint32(len(colRep))
			colRep = append(colRep, a)
			byHash[colHash[a]] = id
		}
		colID[a] = id
	}
	var buf []byte
	nA2 := uint32(len(colRep))
	rowID := make([]uint32, nPi)
	rowIdx := map[string]uint32{}
	var rows [][]uint32
	for pi := 0; pi < nPi; pi++ {
		r := make([]uint32, nA2)
		for j, a := range colRep {
			r[j] = cells[pi*int(nA)+int(a)]
		}
		buf = buf[:0]
		for _, v := range r {
			buf = binary.LittleEndian.AppendUint32(buf, v)
		}
		id, ok := rowIdx[string(buf)]
		if !ok {
			id = uint32(len(rows))
			rowIdx[string(buf)] = id
			rows = append(rows, r)
		}
		rowID[pi] = id
	}
	c.nA = nA2
	if len(results) > 1<<16 || forceWide {
		c.matrix32 = make([]uint32, 0, len(rows)*int(nA2))
		for _, r := range rows {
			c.matrix32 = append(c.matrix32, r...)
		}
	} else {
		c.matrix16 = make([]uint16, 0, len(rows)*int(nA2))
		for _, r := range rows {
			for _, v := range r {
				c.matrix16 = append(c.matrix16, uint16(v))
			}
		}
	}
	for i, pi := range c.pp {
		c.pp[i] = rowID[pi]
	}

	// 6. Lookup tables.
	for v := 0; v < 256; v++ {
		c.proto[v] = uint8(pcOf[v])
	}
	c.sport = buildPortTable(sStarts, sCls)
	c.dport = buildPortTable(dStarts, dCls)
	if nA2 > 0xffff || forceWide {
		c.alpha32 = make([]uint32, nAtoms)
		for g := range cls {
			c.alpha32[g] = colID[cls[g]]
		}
	} else {
		c.alpha16 = make([]uint16, nAtoms)
		for g := range cls {
			c.alpha16[g] = uint16(colID[cls[g]])
		}
	}
	// 7. Signatures of address classes (the terms their atoms are in), to
	// place atoms created later.
	sigs := make([][]byte, nA)
	for ti, t := range c.terms {
		t.bits.each(func(g int) {
			if g < nAtoms && rep[cls[g]] == int32(g) {
				sigs[cls[g]] = binary.LittleEndian.AppendUint32(sigs[cls[g]], uint32(ti))
			}
		})
	}
	c.sigAlpha = make(map[string]uint32, nA)
	for a := int32(0); a < nA; a++ {
		if rep[a] >= 0 {
			c.sigAlpha[string(sigs[a])] = colID[a]
		}
	}
	return c
}

// sigOf returns the term-membership signature of atom g.
func (c *Classifier) sigOf(g int) string {
	var b []byte
	for i, t := range c.terms {
		if t.bits.has(g) {
			b = binary.LittleEndian.AppendUint32(b, uint32(i))
		}
	}
	return string(b)
}

// extend returns a copy of c whose address map covers nAtoms atoms, or nil
// when a new atom has a signature the classifier has never seen (it must
// then be rebuilt).
func (c *Classifier) extend(nAtoms int) *Classifier {
	if nAtoms == c.nAtoms {
		return c
	}
	n := *c
	if c.alpha32 != nil {
		n.alpha32 = append(make([]uint32, 0, nAtoms), c.alpha32...)
	} else {
		n.alpha16 = append(make([]uint16, 0, nAtoms), c.alpha16...)
	}
	for g := c.nAtoms; g < nAtoms; g++ {
		a, ok := c.sigAlpha[c.sigOf(g)]
		if !ok {
			return nil
		}
		if n.alpha32 != nil {
			n.alpha32 = append(n.alpha32, a)
		} else {
			n.alpha16 = append(n.alpha16, uint16(a))
		}
	}
	n.nAtoms = nAtoms
	return &n
}

func bitsKey(b bitset) string {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	buf := make([]byte, 8*len(b))
	for i, w := range b {
		binary.LittleEndian.PutUint64(buf[8*i:], w)
	}
	return string(buf)
}

// protoClasses gives every protocol number a class: one per protocol some
// entry names, one for all the others. pOther marks the "others" class.
func protoClasses(entries []entry) (pcOf [256]int, reps []int, other []bool) {
	var named [256]bool
	for i := range entries {
		if v := entries[i].pEq; v >= 0 {
			named[v] = true
		}
		if v := entries[i].pNe; v >= 0 {
			named[v] = true
		}
	}
	otherRep := -1
	for v := 0; v < 256; v++ {
		if !named[v] {
			otherRep = v
			break
		}
	}
	if otherRep >= 0 {
		reps = append(reps, otherRep)
		other = append(other, true)
	}
	for v := 0; v < 256; v++ {
		if named[v] {
			pcOf[v] = len(reps)
			reps = append(reps, v)
			other = append(other, false)
		}
	}
	return pcOf, reps, other
}

func classOf(idx map[string]uint16, vecs *[]bitset, v bitset) uint16 {
	k := bitsKey(v)
	id, ok := idx[k]
	if !ok {
		id = uint16(len(*vecs))
		idx[k] = id
		*vecs = append(*vecs, append(bitset(nil), v...))
	}
	return id
}

// portClasses interns the entries' port sets for one field and splits the
// 16-bit space into classes by which sets contain a value. It returns the
// starts of the elementary intervals with their classes, each class's
// membership vector over the interned sets, and each entry's set id.
func portClasses(entries []entry, field func(*entry) []prange) (starts []uint32, cls []uint16, vecs []bitset, setOf []int32) {
	setIdx := map[string]int32{}
	var sets [][]prange
	setOf = make([]int32, len(entries))
	for i := range entries {
		rs := field(&entries[i])
		if rs == nil {
			rs = anyPorts
		}
		var kb []byte
		for _, r := range rs {
			kb = binary.LittleEndian.AppendUint16(kb, r.lo)
			kb = binary.LittleEndian.AppendUint16(kb, r.hi)
		}
		id, ok := setIdx[string(kb)]
		if !ok {
			id = int32(len(sets))
			setIdx[string(kb)] = id
			sets = append(sets, rs)
		}
		setOf[i] = id
	}
	// Sweep the value space: each set toggles on at its ranges' starts and
	// off after their ends.
	type ev struct {
		at  uint32
		set int32
	}
	var evs []ev
	for si, rs := range sets {
		for _, r := range rs {
			evs = append(evs, ev{uint32(r.lo), int32(si)}, ev{uint32(r.hi) + 1, int32(si)})
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	active := make(bitset, (len(sets)+63)/64)
	vecIdx := map[string]uint16{}
	for k := 0; k < len(evs); {
		at := evs[k].at
		for ; k < len(evs) && evs[k].at == at; k++ {
			s := evs[k].set
			active[s>>6] ^= 1 << (s & 63)
		}
		if at > 0xffff {
			break
		}
		if at > 0 && len(starts) == 0 {
			starts = append(starts, 0)
			cls = append(cls, classOf(vecIdx, &vecs, make(bitset, len(active))))
		}
		starts = append(starts, at)
		cls = append(cls, classOf(vecIdx, &vecs, active))
	}
	if len(starts) == 0 {
		starts = append(starts, 0)
		cls = append(cls, classOf(vecIdx, &vecs, active))
	}
	return starts, cls, vecs, setOf
}
