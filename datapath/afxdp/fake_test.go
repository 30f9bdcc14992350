package afxdp

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeKernel plays the kernel's side of a socket's rings in ordinary
// memory, so the port logic (accounting, validation, batching) is tested
// and benchmarked without syscalls. It behaves like copy mode: received
// data lands XDP_PACKET_HEADROOM into the frame.
type fakeKernel struct {
	s       *Socket
	rxMem   []byte
	txMem   []byte
	fillMem []byte
	compMem []byte
	rxOff   unix.XDPRingOffset
	fillQ   []uint64 // frames the kernel took from the fill ring
	fillPos int      // next unused entry of fillQ
}

// newFakeSocket returns a socket of u whose rings live in Go memory, and
// the fake kernel driving their other side.
func newFakeSocket(u *UMEM, port PortID, size uint32) (*Socket, *fakeKernel) {
	return newElasticFakeSocket(u, port, size, int(size))
}

// newElasticFakeSocket is newFakeSocket lending base frames at rest
// (SocketConfig.FillBase).
func newElasticFakeSocket(u *UMEM, port PortID, size uint32, base int) (*Socket, *fakeKernel) {
	id, err := u.freeID()
	if err != nil {
		panic(err)
	}
	s := &Socket{
		umem: u, id: id, fd: -1, log: u.log, port: port,
		mode: ModeZeroCopy, needWakeup: true, fillTarget: base, fillBase: base, txBudget: copyModeTxBatch,
		scratch: make([]uint64, size),
	}
	k := &fakeKernel{s: s}
	descSize, addrSize := unsafe.Sizeof(unix.XDPDesc{}), unsafe.Sizeof(uint64(0))
	var off unix.XDPRingOffset
	k.rxMem, off = testRingMemory(size, descSize)
	s.rx.init(k.rxMem, off, size)
	k.txMem, off = testRingMemory(size, descSize)
	s.tx.init(k.txMem, off, size)
	k.fillMem, off = testRingMemory(size, addrSize)
	s.fill.init(k.fillMem, off, size)
	k.compMem, off = testRingMemory(size, addrSize)
	s.comp.init(k.compMem, off, size)
	s.rx.mem, s.tx.mem, s.fill.mem, s.comp.mem = nil, nil, nil, nil // not mmap'd
	u.sockets = append(u.sockets, s)
	u.bound = true
	s.refill()
	u.publish()
	return s, k
}

// newFakeUMEM returns a UMEM with a Go-memory frame area.
func newFakeUMEM(frames, frameSize int) *UMEM {
	u := newUMEMState(UMEMConfig{Frames: frames, FrameSize: frameSize})
	u.area = make([]byte, frames*frameSize)
	return u
}

// deliver receives pkts: each takes a fill-ring frame and lands on the RX
// ring, as the kernel's copy-mode receive does. It returns how many were
// delivered (fewer when the fill or RX ring runs dry).
func (k *fakeKernel) deliver(pkts ...[]byte) int {
	s := k.s
	n := 0
	for _, p := range pkts {
		if k.fillPos == len(k.fillQ) {
			k.fillQ, k.fillPos = k.fillQ[:0], 0
			prod := atomic.LoadUint32(s.fill.producer)
			cons := atomic.LoadUint32(s.fill.consumer)
			for ; cons != prod; cons++ {
				k.fillQ = append(k.fillQ, s.fill.addrs[cons&s.fill.mask])
			}
			atomic.StoreUint32(s.fill.consumer, cons)
		}
		rxProd := atomic.LoadUint32(s.rx.producer)
		if k.fillPos == len(k.fillQ) || rxProd-atomic.LoadUint32(s.rx.consumer) == s.rx.size {
			break
		}
		a := k.fillQ[k.fillPos]
		k.fillPos++
		copy(s.umem.area[a+xdpPacketHeadroom:], p)
		s.rx.descs[rxProd&s.rx.mask] = unix.XDPDesc{Addr: a + xdpPacketHeadroom, Len: uint32(len(p))}
		atomic.StoreUint32(s.rx.producer, rxProd+1)
		n++
	}
	return n
}

// deliverDesc puts a raw descriptor on the RX ring (for bad-input tests).
func (k *fakeKernel) deliverDesc(d unix.XDPDesc) {
	s := k.s
	p := atomic.LoadUint32(s.rx.producer)
	s.rx.descs[p&s.rx.mask] = d
	atomic.StoreUint32(s.rx.producer, p+1)
}

// takeFill takes one frame from the fill ring, as the kernel does before
// receiving into it.
func (k *fakeKernel) takeFill() uint64 {
	s := k.s
	if k.fillPos == len(k.fillQ) {
		c := atomic.LoadUint32(s.fill.consumer)
		a := s.fill.addrs[c&s.fill.mask]
		atomic.StoreUint32(s.fill.consumer, c+1)
		return a
	}
	a := k.fillQ[k.fillPos]
	k.fillPos++
	return a
}

// complete sends everything on the TX ring: the packets are returned (as
// copies when keep is set) and the addresses go to the completion ring.
func (k *fakeKernel) complete(keep bool) [][]byte {
	s := k.s
	var out [][]byte
	prod := atomic.LoadUint32(s.tx.producer)
	cons := atomic.LoadUint32(s.tx.consumer)
	cp := atomic.LoadUint32(s.comp.producer)
	for ; cons != prod; cons++ {
		d := s.tx.descs[cons&s.tx.mask]
		if keep {
			out = append(out, append([]byte(nil), s.umem.area[d.Addr:d.Addr+uint64(d.Len)]...))
		}
		s.comp.addrs[cp&s.comp.mask] = d.Addr
		cp++
	}
	atomic.StoreUint32(s.tx.consumer, cons)
	atomic.StoreUint32(s.comp.producer, cp)
	return out
}
