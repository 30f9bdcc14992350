package lpm

import (
	"math/bits"
	"unsafe"
)

// The IPv6 trie has stride-8 nodes: a node covers one byte of the address
// at bit depth D (16, 24, ..., 120) and holds the prefixes of length
// D+1..D+8. The node at depth 16 of each /16 is a root6, reached from
// Table6.top; the nodes below are node6s. All of them are immutable once
// published: the writer replaces them by modified copies.
//
// A root6 points to its children (a /16's first byte below the top has up to
// 256 of them, and copying them by value on every update would be costly); a
// node6 stores its children by value in one array, so that a lookup goes from
// a node to its child with one memory access, not two.
//
// Lookups index children and values without a branch on whether there is a
// child or a value (see Table6.lookupBatch), so values and children are
// never empty: a node without values has one 0 value, a node without
// children shares a one-element array holding an empty node.

// kidMap says which bytes have a child: the child of byte b is at index
// kidBase[b>>6] + (the bits of kids below b) of the children array.
type kidMap struct {
	kids    [4]uint64
	kidBase [4]uint8 // kidBase[w] counts the bits of kids[:w]
}

// valMap holds the values of a node: the prefixes of length D+1..D+8 that
// match up to its byte, expanded over the 256 byte values (longest wins) and
// run-length compressed. runs marks each byte where a new run of values
// starts (byte 0 always), vals holds one value per run, so the value of b is
// vals[runBase[b>>6] + (the bits of runs up to b) - 1]. A value is an
// entry6; 0 means no prefix.
type valMap struct {
	runBase [4]uint8
	runs    [4]uint64
	vals    []uint32
}

// node6 is a trie node below the root. Its layout puts what a descent reads
// (kidMap, children) in the first 64-byte cache line, the values in the
// second.
type node6 struct {
	kidMap
	children []node6
	valMap
}

// root6 is the node at depth 16 of a /16.
type root6 struct {
	kidMap
	children []*node6
	valMap
	// def is the entry6 of the longest prefix of length ≤ 16 that covers
	// the /16, or 0.
	def uint32
}

const (
	node6Bytes = int(unsafe.Sizeof(node6{}))
	root6Bytes = int(unsafe.Sizeof(root6{}))
)

var (
	// noChildren is the children array of node6s without children: one
	// empty node (whose children are noChildren again). Never modified.
	noChildren = make([]node6, 1)
	// noRootChildren is the children array of root6s without children.
	noRootChildren = []*node6{&noChildren[0]}
	// noValues is the vals of nodes without values.
	noValues = []uint32{0}
)

func init() { noChildren[0] = emptyNode6() }

var emptyVals = valMap{runs: [4]uint64{1}, runBase: [4]uint8{0, 1, 1, 1}, vals: noValues}

func emptyNode6() node6 { return node6{children: noChildren, valMap: emptyVals} }

func emptyRoot6() root6 { return root6{children: noRootChildren, valMap: emptyVals} }

// index returns the children index of byte b and whether b has a child.
func (m *kidMap) index(b uint8) (int, bool) {
	w := b >> 6 & 3
	bit := uint64(1) << (b & 63)
	return int(m.kidBase[w]) + bits.OnesCount64(m.kids[w]&(bit-1)), m.kids[w]&bit != 0
}

func (m *kidMap) noChild() bool { return m.kids == [4]uint64{} }

// mark records whether byte b has a child.
func (m *kidMap) mark(b uint8, has bool) {
	bit := uint64(1) << (b & 63)
	if has {
		m.kids[b>>6&3] |= bit
	} else {
		m.kids[b>>6&3] &^= bit
	}
	m.kidBase = cumulative(&m.kids)
}

// value returns the value of byte b.
func (m *valMap) value(b uint8) uint32 {
	w := b >> 6 & 3
	return m.vals[int(m.runBase[w])+bits.OnesCount64(m.runs[w]&(^uint64(0)>>(63-b&63)))-1]
}

func (m *valMap) noValue() bool { return len(m.vals) == 1 && m.vals[0] == 0 }

// expand writes the value of every byte to out.
func (m *valMap) expand(out *[256]uint32) {
	// Walk the runs from the last: each fills from its start to the end of
	// the next one.
	end := 256
	r := len(m.vals) - 1
	for w := 3; w >= 0; w-- {
		for bm := m.runs[w]; bm != 0; {
			hi := 63 - bits.LeadingZeros64(bm)
			bm &^= 1 << hi
			v := m.vals[r]
			r--
			start := w<<6 | hi
			for b := start; b < end; b++ {
				out[b] = v
			}
			end = start
		}
	}
}

// set makes m hold vals.
func (m *valMap) set(vals *[256]uint32) {
	var buf [256]uint32
	var runs [4]uint64
	buf[0] = vals[0]
	count := 1
	runs[0] = 1
	prev := vals[0]
	for b := 1; b < 256; b++ {
		if v := vals[b]; v != prev {
			runs[b>>6] |= 1 << (b & 63)
			buf[count] = v
			count++
			prev = v
		}
	}
	m.runs = runs
	m.runBase = cumulative(&m.runs)
	if count == 1 && vals[0] == 0 {
		m.vals = noValues
		return
	}
	m.vals = append([]uint32(nil), buf[:count]...)
}

// bytes returns the heap bytes of the values array (0 when shared).
func (m *valMap) bytes() int {
	if m.noValue() {
		return 0
	}
	return sizeClass(4 * cap(m.vals))
}

// child returns the child of byte b, or nil.
func (n *node6) child(b uint8) *node6 {
	if i, ok := n.index(b); ok {
		return &n.children[i]
	}
	return nil
}

// child returns the child of byte b, or nil.
func (r *root6) child(b uint8) *node6 {
	if i, ok := r.index(b); ok {
		return r.children[i]
	}
	return nil
}

// setChild makes a copy of c (nil: none) the child of byte b of n. It
// copies n.children, which may be shared with the node n was cloned from.
func (n *node6) setChild(b uint8, c *node6) {
	i, had := n.index(b)
	old := n.children
	if n.noChild() {
		old = nil // not noChildren's empty node
	}
	var kids []node6
	switch {
	case had && c != nil:
		kids = make([]node6, len(old))
		copy(kids, old)
		kids[i] = *c
	case had && len(old) == 1:
		kids = noChildren
	case had:
		kids = make([]node6, 0, len(old)-1)
		kids = append(kids, old[:i]...)
		kids = append(kids, old[i+1:]...)
	case c != nil:
		kids = make([]node6, 0, len(old)+1)
		kids = append(kids, old[:i]...)
		kids = append(kids, *c)
		kids = append(kids, old[i:]...)
	default:
		return
	}
	n.children = kids
	n.mark(b, c != nil)
}

// setChild makes c (nil: none) the child of byte b of r. It copies
// r.children, which may be shared with the root r was cloned from.
func (r *root6) setChild(b uint8, c *node6) {
	i, had := r.index(b)
	old := r.children
	if r.noChild() {
		old = nil
	}
	var kids []*node6
	switch {
	case had && c != nil:
		kids = make([]*node6, len(old))
		copy(kids, old)
		kids[i] = c
	case had && len(old) == 1:
		kids = noRootChildren
	case had:
		kids = make([]*node6, 0, len(old)-1)
		kids = append(kids, old[:i]...)
		kids = append(kids, old[i+1:]...)
	case c != nil:
		kids = make([]*node6, 0, len(old)+1)
		kids = append(kids, old[:i]...)
		kids = append(kids, c)
		kids = append(kids, old[i:]...)
	default:
		return
	}
	r.children = kids
	r.mark(b, c != nil)
}

// empty reports whether n holds nothing.
func (n *node6) empty() bool { return n.noValue() && n.noChild() }

// empty reports whether r holds nothing.
func (r *root6) empty() bool { return r.def == 0 && r.noValue() && r.noChild() }

// isDefOnly reports whether r holds a default and nothing else.
func (r *root6) isDefOnly() bool { return r.def != 0 && r.noValue() && r.noChild() }

// arrayBytes returns the heap bytes of the arrays n owns: its children
// (stored by value, so a node6's own struct is counted in its parent's
// array) and its values.
func (n *node6) arrayBytes() int {
	b := n.valMap.bytes()
	if !n.noChild() {
		b += sizeClass(node6Bytes * cap(n.children))
	}
	return b
}

// bytes returns the heap bytes r holds itself: its struct and arrays.
func (r *root6) bytes() int {
	b := sizeClass(root6Bytes) + r.valMap.bytes()
	if !r.noChild() {
		b += sizeClass(8 * cap(r.children))
	}
	return b
}

// cumulative returns, for each word of bm, the number of bits set in the
// words before it.
func cumulative(bm *[4]uint64) [4]uint8 {
	var base [4]uint8
	sum := 0
	for w := range 3 {
		sum += bits.OnesCount64(bm[w])
		base[w+1] = uint8(sum)
	}
	return base
}

// sizeClass rounds an allocation size up to the Go allocator's size class,
// so MemoryBytes reports what the heap holds.
func sizeClass(n int) int {
	switch {
	case n == 0:
		return 0
	case n <= 32<<10:
		return int(sizeClassOf[(n+7)/8])
	}
	return (n + 8191) &^ 8191
}

// sizeClassOf maps a size in 8-byte words (up to 32 KiB) to its size class.
var sizeClassOf = func() (t [4097]uint16) {
	// The Go allocator's small size classes (runtime/sizeclasses.go).
	classes := [...]int{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256,
		288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792,
		2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472, 9728, 10240,
		10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264, 28672, 32768}
	c := 0
	for w := 1; w <= 4096; w++ {
		for classes[c] < 8*w {
			c++
		}
		t[w] = uint16(classes[c])
	}
	return t
}()
