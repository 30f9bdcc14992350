package afxdp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// rxRing is a socket's RX ring: the kernel produces descriptors of
// received frames, this side consumes them. Owned by the socket's worker
// goroutine.
type rxRing struct {
	ring
	descs []unix.XDPDesc
}

func (r *rxRing) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.ring.init(mem, off, size)
	r.descs = unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&mem[off.Desc])), size)
}

// peek returns the index of the first unread descriptor and how many, at
// most max, can be read. Read them with desc and hand them back with
// consRelease.
func (r *rxRing) peek(max uint32) (idx, n uint32) {
	n = r.consAvail(max)
	return r.cachedCons, min(n, max)
}

// desc returns the descriptor at ring index i.
func (r *rxRing) desc(i uint32) *unix.XDPDesc { return &r.descs[i&r.mask] }
