package afxdp

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring is the part common to the four AF_XDP rings: the producer and
// consumer indices and flags word shared with the kernel, and this side's
// cached copies of them.
//
// Memory ordering. The kernel side of every ring (net/xdp/xsk_queue.h)
// publishes with smp_store_release and reads the other side's index with
// smp_load_acquire (or a full barrier). This side mirrors it with
// sync/atomic, whose operations are sequentially consistent (the Go memory
// model), hence at least acquire on load and release on store:
//
//   - Producer rings (fill, TX): descriptors are written with plain stores,
//     then the producer index is published with atomic.StoreUint32. The
//     kernel's load-acquire of the producer therefore sees the descriptors.
//     The consumer index is read with atomic.LoadUint32 before slots are
//     reused, so the kernel has finished reading them.
//   - Consumer rings (RX, completion): the producer index is read with
//     atomic.LoadUint32 before the descriptors are read, so they are the
//     ones the kernel wrote; the consumer index is published with
//     atomic.StoreUint32 after the descriptors were read, so the kernel
//     cannot overwrite a slot still being read.
//
// The cached indices are plain fields: a ring is used by one goroutine (the
// worker that owns its socket) and only the shared indices cross to the
// kernel. The cached copy of the other side's index is refreshed only when
// the cached view cannot satisfy a request, so a batch costs at most one
// atomic load and one atomic store per ring.
type ring struct {
	producer *uint32
	consumer *uint32
	flags    *uint32
	mask     uint32
	size     uint32
	// cachedProd and cachedCons are this side's view of the indices.
	cachedProd uint32
	cachedCons uint32
	// mem is the mapping, unmapped by close (nil for rings in Go memory).
	mem []byte
}

// init points the ring at its indices and snapshots them.
func (r *ring) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.mem = mem
	r.producer = (*uint32)(unsafe.Pointer(&mem[off.Producer]))
	r.consumer = (*uint32)(unsafe.Pointer(&mem[off.Consumer]))
	r.flags = (*uint32)(unsafe.Pointer(&mem[off.Flags]))
	r.size = size
	r.mask = size - 1
	r.cachedProd = atomic.LoadUint32(r.producer)
	r.cachedCons = atomic.LoadUint32(r.consumer)
}

// prodFree returns how many slots a producer can reserve, at least want if
// that many are free. It reads the kernel's consumer index only when the
// cached view shows fewer than want free.
func (r *ring) prodFree(want uint32) uint32 {
	free := r.size - (r.cachedProd - r.cachedCons)
	if free >= want {
		return free
	}
	r.cachedCons = atomic.LoadUint32(r.consumer)
	return r.size - (r.cachedProd - r.cachedCons)
}

// prodSubmit publishes every reserved slot to the kernel.
func (r *ring) prodSubmit() { atomic.StoreUint32(r.producer, r.cachedProd) }

// consAvail returns how many entries a consumer can read. It reads the
// kernel's producer index only when the cached view shows fewer than want.
func (r *ring) consAvail(want uint32) uint32 {
	n := r.cachedProd - r.cachedCons
	if n >= want {
		return n
	}
	r.cachedProd = atomic.LoadUint32(r.producer)
	return r.cachedProd - r.cachedCons
}

// consRelease hands n read entries back to the kernel.
func (r *ring) consRelease(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}

// needWakeup reports whether the kernel asked to be woken (XDP_USE_NEED_WAKEUP).
func (r *ring) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

// pending returns how many published entries the kernel has not consumed
// yet (producer rings).
func (r *ring) pending() uint32 {
	return r.cachedProd - atomic.LoadUint32(r.consumer)
}

func (r *ring) close() error {
	if r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	return err
}

// mapRing maps one ring of fd: the index page and size descriptors of
// descSize bytes at pgoff.
func mapRing(fd int, off unix.XDPRingOffset, size uint32, descSize uintptr, pgoff int64) ([]byte, error) {
	length := int(off.Desc) + int(size)*int(descSize)
	mem, err := unix.Mmap(fd, pgoff, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap ring at %#x: %w", pgoff, err)
	}
	return mem, nil
}

// testRingMemory lays out a ring in ordinary memory the way the kernel does,
// for tests and benchmarks that drive both sides of a ring.
func testRingMemory(size uint32, descSize uintptr) ([]byte, unix.XDPRingOffset) {
	off := unix.XDPRingOffset{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}
	mem := make([]byte, int(off.Desc)+int(size)*int(descSize))
	return mem, off
}
