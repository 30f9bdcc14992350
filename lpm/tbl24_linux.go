package lpm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// adviseHuge asks the kernel to back b with transparent huge pages. It is
// best effort: without THP the table works on 4 KiB pages.
func adviseHuge(b []byte) {
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
}

// mapTbl24 maps an anonymous, zeroed, 2 MiB aligned region for tbl24 on huge
// pages, or returns nil if mmap fails. The region is never unmapped: a Lookup
// holds no Go pointer that would keep its table alive while it reads mapped
// memory, so unmapping when the table is collected could fault a lookup in
// flight. This mode serves only to compare with the heap (TestPerfTbl24Mode).
func mapTbl24() *[1 << 24]uint32 {
	const size = 4 << 24
	// Over-allocate by one huge page and trim, so the table starts on a
	// 2 MiB boundary and every one of its huge pages can be backed.
	p, err := unix.MmapPtr(-1, 0, nil, size+hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	head := (hugePage - uintptr(p)%hugePage) % hugePage
	if head > 0 {
		_ = unix.MunmapPtr(p, head)
	}
	base := unsafe.Add(p, head)
	if tail := hugePage - head; tail > 0 {
		_ = unix.MunmapPtr(unsafe.Add(base, size), tail)
	}
	adviseHuge(unsafe.Slice((*byte)(base), size))
	return (*[1 << 24]uint32)(base)
}
