package lpm

import (
	"fmt"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Table6 is an IPv6 longest-prefix-match table. Create it with NewTable6; see
// the package documentation for the concurrency contract.
type Table6 struct {
	// top holds, per value of the first 16 address bits, the immutable
	// root of that /16 (nil: no prefix there).
	top *[1 << 16]atomic.Pointer[root6]

	size     atomic.Int64 // number of prefixes
	memBytes atomic.Int64 // bytes of top and of the live nodes

	// Writer state, guarded by mu.
	mu    sync.Mutex
	rules map[key6]uint32 // prefix → next hop
	nodes int             // live roots and nodes
	// defOnly holds the shared roots that hold only a default (a /16
	// covered by a short prefix and holding nothing longer), one per value,
	// so that a short prefix such as ::/0 costs one root, not one per /16.
	// refs counts the top slots that point to each.
	defOnly map[uint32]*root6
	refs    map[uint32]int
}

const top6Bytes = int(unsafe.Sizeof([1 << 16]atomic.Pointer[root6]{}))

// NewTable6 returns an empty table.
func NewTable6() *Table6 {
	t := &Table6{
		top:     new([1 << 16]atomic.Pointer[root6]),
		rules:   map[key6]uint32{},
		defOnly: map[uint32]*root6{},
		refs:    map[uint32]int{},
	}
	t.memBytes.Store(int64(top6Bytes))
	return t
}

// Lookup returns the next hop of the longest prefix that contains addr and
// whether there is one. It does not allocate.
func (t *Table6) Lookup(addr [16]byte) (nh uint32, ok bool) {
	v := t.lookup(&addr)
	return v & nhMask, v != 0
}

// lookup returns the value of the longest prefix matching a, or 0.
func (t *Table6) lookup(a *[16]byte) uint32 {
	r := t.top[uint16(a[0])<<8|uint16(a[1])].Load()
	if r == nil {
		return 0
	}
	best := r.def
	b := a[2]
	w := b >> 6 & 3
	if v := r.vals[int(r.runBase[w])+bits.OnesCount64(r.runs[w]&(^uint64(0)>>(63-b&63)))-1]; v != 0 {
		best = v
	}
	bit := uint64(1) << (b & 63)
	if r.kids[w]&bit == 0 {
		return best
	}
	n := r.children[int(r.kidBase[w])+bits.OnesCount64(r.kids[w]&(bit-1))]
	for i := 3; i < 16; i++ {
		b := a[i]
		w := b >> 6 & 3
		if v := n.vals[int(n.runBase[w])+bits.OnesCount64(n.runs[w]&(^uint64(0)>>(63-b&63)))-1]; v != 0 {
			best = v
		}
		bit := uint64(1) << (b & 63)
		if n.kids[w]&bit == 0 {
			break
		}
		n = &n.children[int(n.kidBase[w])+bits.OnesCount64(n.kids[w]&(bit-1))]
	}
	return best
}

// LookupBatch writes to nhs[i] the next hop of addrs[i], or NoRoute. nhs must
// be at least as long as addrs.
func (t *Table6) LookupBatch(addrs [][16]byte, nhs []uint32) {
	nhs = nhs[:len(addrs)]
	for len(addrs) > 0 {
		n := min(len(addrs), batch6)
		t.lookupBatch(addrs[:n], nhs[:n])
		addrs, nhs = addrs[n:], nhs[n:]
	}
}

// batch6 is how many addresses lookupBatch walks down the trie together.
const batch6 = 64

// lookupBatch looks up at most batch6 addresses level by level: each level
// loads one node per address still descending, and those loads, independent
// of one another, overlap their cache misses.
//
// No branch depends on the loaded nodes (a mispredicted one would throw away
// the loads issued after it): values are chosen with conditional moves, and
// the child's address is computed whether or not there is a child (then it
// is another child, and the address leaves the active list).
func (t *Table6) lookupBatch(addrs [][16]byte, nhs []uint32) {
	var nodes [batch6]*node6
	var active [batch6]uint8
	nhs = nhs[:len(addrs)]
	// Level 0: the roots.
	k := 0
	for i := range addrs {
		a := &addrs[i]
		r := t.top[uint16(a[0])<<8|uint16(a[1])].Load()
		if r == nil {
			nhs[i] = 0
			continue
		}
		b := a[2]
		w, sh := b>>6&3, b&63
		best := r.def
		if v := r.vals[int(r.runBase[w])+bits.OnesCount64(r.runs[w]&(^uint64(0)>>(63-sh)))-1]; v != 0 {
			best = v
		}
		nhs[i] = best
		kw := r.kids[w]
		c := min(int(r.kidBase[w])+bits.OnesCount64(kw&(1<<sh-1)), len(r.children)-1)
		nodes[i&(batch6-1)] = r.children[c]
		active[k&(batch6-1)] = uint8(i)
		k += int(kw >> sh & 1)
	}
	// Levels 1..13: the nodes.
	for depth := 3; k > 0 && depth < 16; depth++ {
		live := 0
		for _, i := range active[:k] {
			n := nodes[i&(batch6-1)]
			b := addrs[i][depth]
			w, sh := b>>6&3, b&63
			best := nhs[i]
			if v := n.vals[int(n.runBase[w])+bits.OnesCount64(n.runs[w]&(^uint64(0)>>(63-sh)))-1]; v != 0 {
				best = v
			}
			nhs[i] = best
			kw := n.kids[w]
			c := min(int(n.kidBase[w])+bits.OnesCount64(kw&(1<<sh-1)), len(n.children)-1)
			nodes[i&(batch6-1)] = &n.children[c]
			active[live&(batch6-1)] = i
			live += int(kw >> sh & 1)
		}
		k = live
	}
	for i, v := range nhs {
		nhs[i] = nhOf6(v)
	}
}

// Len returns the number of prefixes in the table.
func (t *Table6) Len() int { return int(t.size.Load()) }

// MemoryBytes returns the bytes held by the lookup structures: the top-level
// array and the nodes. The writer's prefix index is not counted.
func (t *Table6) MemoryBytes() int { return int(t.memBytes.Load()) }

// liveNodes returns the number of roots and nodes.
func (t *Table6) liveNodes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nodes
}

// prefix6 validates p and returns it masked.
func prefix6(op string, p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() || !p.Addr().Is6() {
		return netip.Prefix{}, fmt.Errorf("lpm: %s %v: not an IPv6 prefix", op, p)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("lpm: %s %v: prefix has a zone", op, p)
	}
	return p.Masked(), nil
}

// Insert adds p with next hop nh, or replaces the next hop of p.
func (t *Table6) Insert(p netip.Prefix, nh uint32) error {
	p, err := prefix6("insert", p)
	if err != nil {
		return err
	}
	if nh > MaxNextHop {
		return fmt.Errorf("lpm: insert %v: next hop %d exceeds %d", p, nh, MaxNextHop)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	key := keyOf6(p)
	old, existed := t.rules[key]
	if existed && old == nh {
		return nil
	}
	t.rules[key] = nh
	d := p.Bits()
	t.update(p, 0, d+1, entry6(d, nh))
	if !existed {
		t.size.Add(1)
	}
	return nil
}

// Delete removes p and reports whether it was there.
func (t *Table6) Delete(p netip.Prefix) (existed bool, err error) {
	p, err = prefix6("delete", p)
	if err != nil {
		return false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	key := keyOf6(p)
	if _, ok := t.rules[key]; !ok {
		return false, nil
	}
	delete(t.rules, key)
	d := p.Bits()
	t.update(p, d+1, d+1, t.covering(p))
	t.size.Add(-1)
	return true, nil
}

// covering returns the entry6 of the longest prefix shorter than p that
// contains it and lives in the same node (or, for p ≤ /16, among the
// prefixes ≤ /16), or 0. Shorter prefixes are found by lookups in ancestor
// nodes, so they need not be copied into p's node.
func (t *Table6) covering(p netip.Prefix) uint32 {
	d := p.Bits()
	floor := 0
	if d > 16 {
		floor = 16 + (d-17)/8*8 + 1
	}
	key := keyOf6(p)
	for l := d - 1; l >= floor; l-- {
		// Clear bit l: key.addr becomes the address of the /l.
		key.addr[l/8] &^= 0x80 >> (l % 8)
		key.bits = uint8(l)
		if nh, ok := t.rules[key]; ok {
			return entry6(l, nh)
		}
	}
	return 0
}

// key6 is a prefix as the writer's index keys it: more compact than
// netip.Prefix.
type key6 struct {
	addr [16]byte // masked
	bits uint8
}

func keyOf6(p netip.Prefix) key6 { return key6{p.Addr().As16(), uint8(p.Bits())} }

// update stores v into the entries of prefix p whose length field (an
// entry6 holds the prefix length plus one, 0 for no prefix) is in lo..hi: an
// insert of a /d owns the entries of fields 0..d+1, a delete those of field
// d+1. It copies the path to them and publishes the new root.
func (t *Table6) update(p netip.Prefix, lo, hi int, v uint32) {
	a := p.Addr().As16()
	d := p.Bits()
	span := uint32(hi - lo)
	owned := func(e uint32) bool { return e != v && e>>24-uint32(lo) <= span }
	if d <= 16 {
		first := int(a[0])<<8 | int(a[1])
		for i := first; i < first+1<<(16-d); i++ {
			r := t.top[i].Load()
			def := uint32(0)
			if r != nil {
				def = r.def
			}
			if owned(def) {
				c := r.clone()
				c.def = v
				t.publish(i, r, &c)
			}
		}
		return
	}
	// The prefix lives at level k below the top (bit depth 16+8k: the root
	// for k = 0), in the bytes of a[2+k] that match its last d-16-8k bits.
	k := (d - 17) / 8
	i := int(a[0])<<8 | int(a[1])
	root := t.top[i].Load()
	var path [14]*node6 // path[j]: the node at level j ≥ 1, or nil
	if root != nil && k >= 1 {
		path[1] = root.child(a[2])
		for j := 2; j <= k && path[j-1] != nil; j++ {
			path[j] = path[j-1].child(a[1+j])
		}
	}
	var vals [256]uint32
	var target *valMap
	if k == 0 && root != nil {
		target = &root.valMap
	} else if k > 0 && path[k] != nil {
		target = &path[k].valMap
	}
	if target != nil {
		target.expand(&vals)
	}
	rel := d - 16 - 8*k
	first := int(a[2+k])
	changed := false
	for b := first; b < first+1<<(8-rel); b++ {
		if owned(vals[b]) {
			vals[b] = v
			changed = true
		}
	}
	if !changed {
		return
	}
	c := root.clone()
	if k == 0 {
		c.valMap.set(&vals)
		t.publish(i, root, &c)
		return
	}
	// Copy the path from the changed node up to the root, dropping nodes
	// left empty.
	n := path[k].clone()
	n.valMap.set(&vals)
	for j := k - 1; j >= 1; j-- {
		child := t.replace(path[j+1], &n)
		parent := path[j].clone()
		parent.setChild(a[2+j], child)
		n = parent
	}
	// The root points to its children: the new level-1 node gets its own
	// allocation.
	var child *node6
	if t.replace(path[1], &n) != nil {
		child = new(node6)
		*child = n
		t.memBytes.Add(int64(sizeClass(node6Bytes)))
	}
	if path[1] != nil {
		t.memBytes.Add(-int64(sizeClass(node6Bytes)))
	}
	c.setChild(a[2], child)
	t.publish(i, root, &c)
}

// clone returns a copy of n (an empty node if n is nil) that shares its
// arrays; the caller replaces the ones it changes.
func (n *node6) clone() node6 {
	if n == nil {
		return emptyNode6()
	}
	return *n
}

// clone returns a copy of r (an empty root if r is nil) that shares its
// arrays.
func (r *root6) clone() root6 {
	if r == nil {
		return emptyRoot6()
	}
	c := *r
	if c.noChild() {
		c.children = noRootChildren
	}
	return c
}

// replace records that node old (nil: none), below the root, is replaced by
// c, and returns c, or nil if c is empty.
func (t *Table6) replace(old, c *node6) *node6 {
	if old != nil {
		t.nodes--
		t.memBytes.Add(-int64(old.arrayBytes()))
	}
	if c.empty() {
		return nil
	}
	t.nodes++
	t.memBytes.Add(int64(c.arrayBytes()))
	return c
}

// publish makes c the root of slot i in place of old: nil if c is empty, the
// shared root of its default if c holds only a default, else a copy of c.
func (t *Table6) publish(i int, old, c *root6) {
	var r *root6
	switch {
	case c.empty():
	case c.isDefOnly():
		r = t.defOnly[c.def]
		if r == nil {
			r = new(root6)
			*r = *c
			t.defOnly[c.def] = r
			t.nodes++
			t.memBytes.Add(int64(r.bytes()))
		}
		t.refs[c.def]++
	default:
		r = new(root6)
		*r = *c
		t.nodes++
		t.memBytes.Add(int64(r.bytes()))
	}
	t.top[i].Store(r)
	switch {
	case old == nil:
	case old.isDefOnly():
		if t.refs[old.def]--; t.refs[old.def] == 0 {
			delete(t.refs, old.def)
			delete(t.defOnly, old.def)
			t.nodes--
			t.memBytes.Add(-int64(old.bytes()))
		}
	default:
		t.nodes--
		t.memBytes.Add(-int64(old.bytes()))
	}
}
