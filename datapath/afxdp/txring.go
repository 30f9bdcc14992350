package afxdp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// txRing is a socket's TX ring: this side produces descriptors of frames
// to send, the kernel consumes them and reports each frame's address on
// the completion ring once it is done with it. Owned by the socket's worker
// goroutine.
type txRing struct {
	ring
	descs []unix.XDPDesc
}

func (r *txRing) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.ring.init(mem, off, size)
	r.descs = unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&mem[off.Desc])), size)
}

// free returns how many descriptors can be written now, at least want if
// that many slots are free.
func (r *txRing) free(want uint32) uint32 { return r.prodFree(want) }

// put writes one descriptor into the next reserved slot; the caller checked
// free. Publish with prodSubmit once per batch.
func (r *txRing) put(addr uint64, length uint32) {
	d := &r.descs[r.cachedProd&r.mask]
	d.Addr, d.Len, d.Options = addr, length, 0
	r.cachedProd++
}
