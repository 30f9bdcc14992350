package lpm

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Table4 is an IPv4 longest-prefix-match table. Create it with NewTable4; see
// the package documentation for the concurrency contract.
type Table4 struct {
	// tbl24 has one entry per /24, read by lookups with atomic loads.
	tbl24 *[1 << 24]uint32
	// dir finds the group of an extended /24 x: dir[x>>8] points to the
	// chunk4 of its /16, whose slot x&0xff holds the group. Pointers are
	// unsafe.Pointer, loaded and stored atomically, to keep Lookup within
	// the inlining budget.
	dir *[1 << 16]unsafe.Pointer

	size     atomic.Int64 // number of prefixes
	memBytes atomic.Int64 // bytes of tbl24, dir, chunks and groups

	// Writer state, guarded by mu.
	mu     sync.Mutex
	rules  [33]map[uint32]uint32 // per length: masked address → next hop
	groups int                   // live groups
	chunks int                   // directory chunks
}

// chunk4 is the directory of one /16: a slot per /24.
type chunk4 [256]slot4

// slot4 is where readers find the group of an extended /24.
type slot4 struct {
	// group is the *group4 of the /24, or nil.
	group unsafe.Pointer
	// last is the value the /24's group had when it was last collapsed: a
	// reader that saw the /24 extended and then finds no group reads it
	// (see the package documentation).
	last uint32
}

// group4 holds the entries of the 256 addresses of an extended /24. A group
// is a fresh object for each extension and is never reused.
type group4 struct {
	e [256]uint32
	// more counts the prefixes longer than /24 inside the /24 (writer only).
	more int
}

const (
	dirBytes    = int(unsafe.Sizeof([1 << 16]unsafe.Pointer{}))
	chunk4Bytes = int(unsafe.Sizeof(chunk4{}))
	group4Bytes = int(unsafe.Sizeof(group4{}))
)

// NewTable4 returns an empty table. Its 64 MiB tbl24 sits on huge pages
// where the system allows it.
func NewTable4() *Table4 {
	t := &Table4{dir: new([1 << 16]unsafe.Pointer)}
	t.memBytes.Store(int64(allocTbl24(t) + dirBytes))
	return t
}

// Lookup returns the next hop of the longest prefix that contains addr, the
// IPv4 address as a big-endian number (the value of its 4 bytes in order),
// and whether there is one. It does not allocate.
func (t *Table4) Lookup(addr uint32) (nh uint32, ok bool) {
	// Kept within the compiler's inlining budget (a test checks it): the
	// extended path is written out here rather than called.
	e := atomic.LoadUint32(&t.tbl24[addr>>8])
	if int32(e) < 0 { // entryExt
		s := &(*chunk4)(atomic.LoadPointer(&t.dir[addr>>16]))[addr>>8&0xff]
		p := &s.last
		if g := (*group4)(atomic.LoadPointer(&s.group)); g != nil {
			p = &g.e[addr&0xff]
		}
		e = atomic.LoadUint32(p)
	}
	return e & nhMask, e != 0 // an entry without a route is 0
}

// groupEntry returns the entry of addr, whose /24 was extended when its tbl24
// entry was read.
func (t *Table4) groupEntry(addr uint32) uint32 {
	s := &(*chunk4)(atomic.LoadPointer(&t.dir[addr>>16]))[addr>>8&0xff]
	if g := (*group4)(atomic.LoadPointer(&s.group)); g != nil {
		return atomic.LoadUint32(&g.e[addr&0xff])
	}
	return atomic.LoadUint32(&s.last)
}

// LookupBatch writes to nhs[i] the next hop of addrs[i], or NoRoute. nhs must
// be at least as long as addrs.
func (t *Table4) LookupBatch(addrs []uint32, nhs []uint32) {
	tbl := t.tbl24
	nhs = nhs[:len(addrs)]
	// Pass 1: independent loads, so the cache misses of the batch overlap.
	var ext uint32
	for i, a := range addrs {
		e := atomic.LoadUint32(&tbl[a>>8])
		nhs[i] = e
		ext |= e
	}
	// Pass 2: resolve the extended entries, convert to next hops.
	if ext&entryExt != 0 {
		for i, e := range nhs {
			if e&entryExt != 0 {
				nhs[i] = t.groupEntry(addrs[i])
			}
		}
	}
	for i, e := range nhs {
		nhs[i] = nhOf4(e)
	}
}

// Len returns the number of prefixes in the table.
func (t *Table4) Len() int { return int(t.size.Load()) }

// MemoryBytes returns the bytes held by the lookup structures: tbl24, the
// group directory and the groups. The writer's prefix index is not counted.
func (t *Table4) MemoryBytes() int { return int(t.memBytes.Load()) }

// liveGroups returns the number of groups (extended /24s).
func (t *Table4) liveGroups() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.groups
}

// prefix4 validates p and returns its masked address and length.
func prefix4(op string, p netip.Prefix) (addr uint32, bitsLen int, err error) {
	if !p.IsValid() || !p.Addr().Is4() {
		return 0, 0, fmt.Errorf("lpm: %s %v: not an IPv4 prefix", op, p)
	}
	b := p.Masked().Addr().As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), p.Bits(), nil
}

// Insert adds p with next hop nh, or replaces the next hop of p.
func (t *Table4) Insert(p netip.Prefix, nh uint32) error {
	addr, d, err := prefix4("insert", p)
	if err != nil {
		return err
	}
	if nh > MaxNextHop {
		return fmt.Errorf("lpm: insert %v: next hop %d exceeds %d", p, nh, MaxNextHop)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.rules[d]
	if m == nil {
		m = make(map[uint32]uint32)
		t.rules[d] = m
	}
	old, existed := m[addr]
	if existed && old == nh {
		return nil
	}
	m[addr] = nh
	v := entry4(d, nh)
	if d <= 24 {
		t.fill24(addr>>8, 1<<(24-d), 0, d, v)
	} else {
		x := addr >> 8
		g := t.group(x)
		if !existed {
			g.more++
		}
		fillGroup(g, addr&0xff, 1<<(32-d), 0, d, v)
	}
	if !existed {
		t.size.Add(1)
	}
	return nil
}

// Delete removes p and reports whether it was there.
func (t *Table4) Delete(p netip.Prefix) (existed bool, err error) {
	addr, d, err := prefix4("delete", p)
	if err != nil {
		return false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.rules[d][addr]; !ok {
		return false, nil
	}
	delete(t.rules[d], addr)
	repl := t.covering(addr, d)
	if d <= 24 {
		t.fill24(addr>>8, 1<<(24-d), d, d, repl)
	} else {
		x := addr >> 8
		g := t.groupOf(x)
		fillGroup(g, addr&0xff, 1<<(32-d), d, d, repl)
		if g.more--; g.more == 0 {
			t.collapse(x, g)
		}
	}
	t.size.Add(-1)
	return true, nil
}

// covering returns the entry of the longest prefix shorter than d that
// contains addr, or 0 (no route).
func (t *Table4) covering(addr uint32, d int) uint32 {
	for l := d - 1; l >= 0; l-- {
		if m := t.rules[l]; len(m) > 0 {
			if nh, ok := m[addr&mask4(l)]; ok {
				return entry4(l, nh)
			}
		}
	}
	return 0
}

// fill24 stores v into the n entries of tbl24 from first, and into the
// entries of their groups, that came from a prefix of length lo..hi: an
// insert of a /d owns the entries of lengths 0..d (an entry without a route
// is 0, so of length 0 too), a delete the entries of length d.
func (t *Table4) fill24(first, n uint32, lo, hi int, v uint32) {
	tbl := t.tbl24
	span := uint32(hi - lo)
	for x := first; x < first+n; x++ {
		e := tbl[x]
		if e&entryExt != 0 {
			fillGroup(t.groupOf(x), 0, 256, lo, hi, v)
			continue
		}
		if e != v && e>>depthShift&depthBits-uint32(lo) <= span {
			atomic.StoreUint32(&tbl[x], v)
		}
	}
}

// fillGroup stores v into the n entries of g from first that came from a
// prefix of length lo..hi (see fill24).
func fillGroup(g *group4, first, n uint32, lo, hi int, v uint32) {
	span := uint32(hi - lo)
	for i := first; i < first+n; i++ {
		if e := g.e[i&0xff]; e != v && e>>depthShift&depthBits-uint32(lo) <= span {
			atomic.StoreUint32(&g.e[i&0xff], v)
		}
	}
}

// chunkOf returns the directory chunk of /24 x, or nil.
func (t *Table4) chunkOf(x uint32) *chunk4 {
	return (*chunk4)(atomic.LoadPointer(&t.dir[x>>8]))
}

// groupOf returns the group of the extended /24 x.
func (t *Table4) groupOf(x uint32) *group4 {
	return (*group4)(atomic.LoadPointer(&t.chunkOf(x)[x&0xff].group))
}

// group returns the group of /24 x, extending x if it has none.
func (t *Table4) group(x uint32) *group4 {
	c := t.chunkOf(x)
	if c == nil {
		c = new(chunk4)
		atomic.StorePointer(&t.dir[x>>8], unsafe.Pointer(c))
		t.chunks++
		t.memBytes.Add(int64(chunk4Bytes))
	}
	e := t.tbl24[x]
	if e&entryExt != 0 {
		return (*group4)(atomic.LoadPointer(&c[x&0xff].group))
	}
	// Extend: the group starts as the /24's value everywhere, so the
	// answer for its addresses does not change when readers switch to it.
	g := new(group4)
	for i := range g.e {
		g.e[i] = e
	}
	atomic.StorePointer(&c[x&0xff].group, unsafe.Pointer(g)) // 1. publish the group,
	atomic.StoreUint32(&t.tbl24[x], entryExt)                // 2. then point tbl24 to it.
	t.groups++
	t.memBytes.Add(int64(sizeClass(group4Bytes)))
	return g
}

// collapse folds the group g of /24 x, which has no prefix longer than /24
// left and so holds one value everywhere, back into tbl24.
func (t *Table4) collapse(x uint32, g *group4) {
	v := g.e[0]
	s := &t.chunkOf(x)[x&0xff]
	atomic.StoreUint32(&t.tbl24[x], v) // 1. tbl24 holds the value,
	atomic.StoreUint32(&s.last, v)     // 2. so does the slot, for late readers,
	atomic.StorePointer(&s.group, nil) // 3. and the group goes.
	t.groups--
	t.memBytes.Add(-int64(sizeClass(group4Bytes)))
}
