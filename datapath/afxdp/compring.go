package afxdp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// completionRing is the UMEM completion ring: the kernel produces the
// addresses of transmitted frames, this side consumes them. Owned by the
// socket's worker goroutine.
type completionRing struct {
	ring
	addrs []uint64
}

func (r *completionRing) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.ring.init(mem, off, size)
	r.addrs = unsafe.Slice((*uint64)(unsafe.Pointer(&mem[off.Desc])), size)
}

// take copies up to len(out) completed addresses into out, releases them
// to the kernel in one store, and returns how many.
func (r *completionRing) take(out []uint64) int {
	n := r.consAvail(uint32(len(out)))
	if n == 0 {
		return 0
	}
	n = min(n, uint32(len(out)))
	c := r.cachedCons
	for i := range out[:n] {
		out[i] = r.addrs[c&r.mask]
		c++
	}
	r.consRelease(n)
	return int(n)
}
