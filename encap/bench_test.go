package encap_test

import (
	"fmt"
	"testing"

	"github.com/tabbynet/tabby/encap"
)

var benchSizes = []int{64, 1500}

// benchSized runs body as one sub-benchmark per size in benchSizes (named
// by the size), with a test tunnel and a buffer holding a test frame of
// that size at offset 256.
func benchSized(b *testing.B, body func(b *testing.B, tun *encap.Tunnel, buf []byte, size int)) {
	tun := newTunnel(b, nil)
	for _, size := range benchSizes {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			buf := make([]byte, 256+size)
			testFrame(buf, 256, size, 0)
			body(b, tun, buf, size)
		})
	}
}

func BenchmarkVXLANEncap(b *testing.B) {
	benchSized(b, func(b *testing.B, tun *encap.Tunnel, buf []byte, size int) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			encap.VXLANEncap(buf, 256, size, tun, 0x9e3779b9)
		}
	})
}

func BenchmarkVXLANDecap(b *testing.B) {
	benchSized(b, func(b *testing.B, tun *encap.Tunnel, buf []byte, size int) {
		o, l := encap.VXLANEncap(buf, 256, size, tun, 0x9e3779b9)
		b.SetBytes(int64(l))
		b.ReportAllocs()
		for b.Loop() {
			encap.VXLANDecap(buf, o, l, encap.DefaultVNI)
		}
	})
}

func BenchmarkIPIPEncap(b *testing.B) {
	benchSized(b, func(b *testing.B, tun *encap.Tunnel, buf []byte, size int) {
		var eth [14]byte
		copy(eth[:], buf[256:])
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			copy(buf[256:], eth[:]) // the encapsulation overwrote it
			encap.IPIPEncap(buf, 256, size, tun)
		}
	})
}

func BenchmarkIPIPDecap(b *testing.B) {
	benchSized(b, func(b *testing.B, tun *encap.Tunnel, buf []byte, size int) {
		o, l := encap.IPIPEncap(buf, 256, size, tun)
		var outer [34]byte
		copy(outer[:], buf[o:])
		b.SetBytes(int64(l))
		b.ReportAllocs()
		for b.Loop() {
			copy(buf[o:], outer[:]) // the decapsulation overwrote it
			encap.IPIPDecap(buf, o, l)
		}
	})
}

func BenchmarkFlowHash(b *testing.B) {
	buf := make([]byte, 256+64)
	testFrame(buf, 256, 64, 0)
	b.ReportAllocs()
	var h uint32
	for b.Loop() {
		h += encap.FlowHash(buf[256:320], 1)
	}
	_ = h
}

func BenchmarkFragNeededIPv4(b *testing.B) {
	buf := make([]byte, 256+1500)
	testFrame(buf, 256, 1500, 0)
	var eth [14]byte
	copy(eth[:], buf[256:])
	b.ReportAllocs()
	for b.Loop() {
		copy(buf[256:], eth[:])
		encap.FragNeededIPv4(buf, 256, 1500, 1450, [4]byte{10, 0, 0, 1})
	}
}

func BenchmarkFragmentIPv4(b *testing.B) {
	buf := make([]byte, 256+1514)
	testFrame(buf, 256, 1514, 0)
	dst := fragBufs(2, 1500)
	b.ReportAllocs()
	for b.Loop() {
		dst[0], dst[1] = dst[0][:1500], dst[1][:1500]
		encap.FragmentIPv4(buf[256+14:256+1514], 1450, dst)
	}
}
