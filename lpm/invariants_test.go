package lpm

import (
	"math/bits"
	"testing"
)

// newTestTable4 returns an empty Table4 whose internal invariants are checked
// when the test ends.
func newTestTable4(tb testing.TB) *Table4 {
	tb.Helper()
	t := NewTable4()
	tb.Cleanup(func() { checkTable4(tb, t) })
	return t
}

// newTestTable6 returns an empty Table6 whose internal invariants are checked
// when the test ends.
func newTestTable6(tb testing.TB) *Table6 {
	tb.Helper()
	t := NewTable6()
	tb.Cleanup(func() { checkTable6(tb, t) })
	return t
}

// checkTable4 verifies that the groups match the prefixes longer than /24
// and that MemoryBytes matches what the table holds.
func checkTable4(tb testing.TB, t *Table4) {
	tb.Helper()
	t.mu.Lock()
	defer t.mu.Unlock()
	more := map[uint32]int{} // /24 → prefixes longer than /24
	n := 0
	for l, m := range t.rules {
		n += len(m)
		if l > 24 {
			for addr := range m {
				more[addr>>8]++
			}
		}
	}
	if int(t.size.Load()) != n {
		tb.Errorf("size %d, %d prefixes in the index", t.size.Load(), n)
	}
	groups := 0
	for x, e := range t.tbl24 {
		if e&entryExt == 0 {
			continue
		}
		groups++
		g := t.groupOf(uint32(x))
		if g == nil || g.more != more[uint32(x)] || g.more == 0 {
			tb.Errorf("/24 %#x: group %p, %d longer prefixes", x, g, more[uint32(x)])
		}
	}
	if groups != len(more) || groups != t.groups {
		tb.Errorf("%d extended /24s, %d /24s with longer prefixes, %d groups counted", groups, len(more), t.groups)
	}
	want := 4<<24 + dirBytes + t.chunks*chunk4Bytes + t.groups*sizeClass(group4Bytes)
	if tbl24Mode == tbl24HeapHuge {
		want += hugePage
	}
	if got := t.MemoryBytes(); got != want {
		tb.Errorf("MemoryBytes %d, want %d", got, want)
	}
}

// checkTable6 walks the trie and verifies the shape of every node (bitmaps,
// their cumulative counts and the arrays agree; no empty node below a root),
// the node count and MemoryBytes.
func checkTable6(tb testing.TB, t *Table6) {
	tb.Helper()
	t.mu.Lock()
	defer t.mu.Unlock()
	if int(t.size.Load()) != len(t.rules) {
		tb.Errorf("size %d, %d prefixes in the index", t.size.Load(), len(t.rules))
	}
	nodes, bytes := 0, top6Bytes
	checkVals := func(where string, m *valMap) {
		if m.runs[0]&1 == 0 || m.runBase != cumulative(&m.runs) {
			tb.Errorf("%s: runs %x, runBase %v", where, m.runs, m.runBase)
		}
		if n := popcount4(&m.runs); len(m.vals) != n {
			tb.Errorf("%s: %d runs, %d values", where, n, len(m.vals))
		}
	}
	checkKids := func(where string, m *kidMap, n int) {
		if m.kidBase != cumulative(&m.kids) {
			tb.Errorf("%s: kids %x, kidBase %v", where, m.kids, m.kidBase)
		}
		if c := popcount4(&m.kids); c != n && !(c == 0 && n == 1) {
			tb.Errorf("%s: %d kids, %d children", where, c, n)
		}
	}
	var walk func(n *node6, depth int)
	walk = func(n *node6, depth int) {
		nodes++
		bytes += n.arrayBytes()
		if n.empty() {
			tb.Errorf("empty node at depth %d", depth)
		}
		checkVals("node", &n.valMap)
		checkKids("node", &n.kidMap, len(n.children))
		if !n.noChild() {
			for i := range n.children {
				walk(&n.children[i], depth+8)
			}
		}
	}
	seen := map[*root6]bool{}
	for i := range t.top {
		r := t.top[i].Load()
		if r == nil {
			continue
		}
		if r.empty() {
			tb.Errorf("top[%#x]: empty root", i)
		}
		if r.isDefOnly() != (t.defOnly[r.def] == r) {
			tb.Errorf("top[%#x]: default-only root not shared", i)
		}
		if seen[r] {
			continue
		}
		seen[r] = true
		nodes++
		bytes += r.bytes()
		checkVals("root", &r.valMap)
		checkKids("root", &r.kidMap, len(r.children))
		if !r.noChild() {
			for _, c := range r.children {
				bytes += sizeClass(node6Bytes)
				walk(c, 24)
			}
		}
	}
	if nodes != t.nodes {
		tb.Errorf("%d nodes in the trie, %d counted", nodes, t.nodes)
	}
	if got := t.MemoryBytes(); got != bytes {
		tb.Errorf("MemoryBytes %d, want %d", got, bytes)
	}
}

func popcount4(bm *[4]uint64) int {
	n := 0
	for _, w := range bm {
		n += bits.OnesCount64(w)
	}
	return n
}
