package afxdp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// fillRing is the UMEM fill ring: this side produces addresses of empty
// frames, the kernel consumes them to receive into. Owned by the socket's
// worker goroutine.
type fillRing struct {
	ring
	addrs []uint64
}

func (r *fillRing) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.ring.init(mem, off, size)
	r.addrs = unsafe.Slice((*uint64)(unsafe.Pointer(&mem[off.Desc])), size)
}

// free returns how many addresses can be produced now.
func (r *fillRing) free() uint32 { return r.prodFree(r.size) }

// put writes addrs into reserved slots; the caller checked free. It does
// not publish: call prodSubmit once per batch.
func (r *fillRing) put(addrs []uint64) {
	p := r.cachedProd
	for _, a := range addrs {
		r.addrs[p&r.mask] = a
		p++
	}
	r.cachedProd = p
}
