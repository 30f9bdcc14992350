package afxdp

import (
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reportPerFrame reports the time per frame of a benchmark that moves 64
// frames per iteration.
func reportPerFrame(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/frame")
}

// newFakeBatch returns a socket on a fake kernel, with a UMEM of umemFrames
// 2048-byte frames and rings of ringSize, and a batch of 64 distinct
// 64-byte packets for the kernel to deliver.
func newFakeBatch(umemFrames int, ringSize uint32) (*UMEM, *Socket, *fakeKernel, [][]byte) {
	u := newFakeUMEM(umemFrames, 2048)
	s, k := newFakeSocket(u, 0, ringSize)
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = testPacket(64, byte(i))
	}
	return u, s, k, pkts
}

// BenchmarkFillRing measures producing a batch of 64 addresses on a fill
// ring and the kernel consuming them (index updates only, no syscalls).
func BenchmarkFillRing(b *testing.B) {
	var r fillRing
	mem, off := testRingMemory(1024, unsafe.Sizeof(uint64(0)))
	r.init(mem, off, 1024)
	addrs := make([]uint64, 64)
	b.ReportAllocs()
	for b.Loop() {
		if r.free() < 64 {
			b.Fatal("full")
		}
		r.put(addrs)
		r.prodSubmit()
		atomic.StoreUint32(r.consumer, atomic.LoadUint32(r.producer)) // kernel consumed
	}
	reportPerFrame(b)
}

// BenchmarkCompletionRing measures taking a batch of 64 addresses from a
// completion ring the kernel filled.
func BenchmarkCompletionRing(b *testing.B) {
	var r completionRing
	mem, off := testRingMemory(1024, unsafe.Sizeof(uint64(0)))
	r.init(mem, off, 1024)
	out := make([]uint64, 64)
	b.ReportAllocs()
	for b.Loop() {
		atomic.StoreUint32(r.producer, atomic.LoadUint32(r.producer)+64) // kernel produced
		if r.take(out) != 64 {
			b.Fatal("short")
		}
	}
	reportPerFrame(b)
}

// BenchmarkTxRing measures writing and publishing 64 TX descriptors.
func BenchmarkTxRing(b *testing.B) {
	var r txRing
	mem, off := testRingMemory(1024, unsafe.Sizeof(unix.XDPDesc{}))
	r.init(mem, off, 1024)
	b.ReportAllocs()
	for b.Loop() {
		if r.free(64) < 64 {
			b.Fatal("full")
		}
		for i := range 64 {
			r.put(uint64(i)<<11, 60)
		}
		r.prodSubmit()
		atomic.StoreUint32(r.consumer, atomic.LoadUint32(r.producer))
	}
	reportPerFrame(b)
}

// BenchmarkReceiveRelease is the port's receive path in steady state: 64
// frames received (descriptor checks, frame states, refill of the fill
// ring) and released. The fake kernel's share is included.
func BenchmarkReceiveRelease(b *testing.B) {
	_, s, k, pkts := newFakeBatch(4096, 1024)
	frames := make([]Frame, 64)
	b.ReportAllocs()
	for b.Loop() {
		k.deliver(pkts...)
		n := s.Receive(frames)
		s.Release(frames[:n])
	}
	reportPerFrame(b)
}

// BenchmarkReceiveTransmit is the forwarding path: 64 frames received,
// transmitted (TX descriptors, completion reaping, refill), completed.
func BenchmarkReceiveTransmit(b *testing.B) {
	_, s, k, pkts := newFakeBatch(4096, 1024)
	frames := make([]Frame, 64)
	b.ReportAllocs()
	for b.Loop() {
		k.deliver(pkts...)
		n := s.Receive(frames)
		s.Transmit(frames[:n])
		k.complete(false)
	}
	reportPerFrame(b)
}

// BenchmarkFakeKernel measures the fake kernel alone (deliver + complete),
// to subtract from the two benchmarks above.
func BenchmarkFakeKernel(b *testing.B) {
	_, s, k, pkts := newFakeBatch(4096, 1024)
	b.ReportAllocs()
	for b.Loop() {
		k.deliver(pkts...)
		// Hand the RX ring and frames back without the port.
		p := atomic.LoadUint32(s.rx.producer)
		for c := atomic.LoadUint32(s.rx.consumer); c != p; c++ {
			d := s.rx.descs[c&s.rx.mask]
			s.fill.addrs[s.fill.cachedProd&s.fill.mask] = d.Addr &^ 2047
			s.fill.cachedProd++
		}
		atomic.StoreUint32(s.rx.consumer, p)
		s.fill.prodSubmit()
	}
	reportPerFrame(b)
}
