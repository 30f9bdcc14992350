package lpm

import "unsafe"

const hugePage = 2 << 20

// tbl24Mode selects where tbl24 lives. TestPerfTbl24Mode switches it to
// compare the options; the default was the fastest there (see the package
// documentation).
var tbl24Mode = tbl24HeapHuge

const (
	// tbl24HeapHuge: a Go array, aligned to 2 MiB inside a slightly larger
	// allocation and advised to use transparent huge pages. A lookup holds
	// an interior pointer to it, so the collector keeps it alive for as long
	// as any lookup reads it: nothing to release by hand.
	tbl24HeapHuge = iota
	// tbl24Heap: a plain Go array (4 KiB pages).
	tbl24Heap
	// tbl24Mmap: an anonymous mapping on huge pages, never released (see
	// mapTbl24); for comparison only.
	tbl24Mmap
)

// allocTbl24 allocates a zeroed tbl24 for t and returns the bytes it holds.
func allocTbl24(t *Table4) int {
	const size = 4 << 24
	switch tbl24Mode {
	case tbl24Mmap:
		if t.tbl24 = mapTbl24(); t.tbl24 != nil {
			return size
		}
	case tbl24HeapHuge:
		buf := make([]uint32, (size+hugePage)/4)
		off := (hugePage - uintptr(unsafe.Pointer(&buf[0]))%hugePage) % hugePage / 4
		t.tbl24 = (*[1 << 24]uint32)(buf[off:])
		adviseHuge(unsafe.Slice((*byte)(unsafe.Pointer(t.tbl24)), size))
		return size + hugePage
	}
	t.tbl24 = new([1 << 24]uint32)
	return size
}
