package header

import (
	"fmt"
	"testing"
)

// BenchmarkChecksum measures Checksum against the naive word-at-a-time
// reference on a header, a small packet and a full frame.
func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{20, 64, 1500} {
		data := randBytes(newRand(b), n)
		b.Run(fmt.Sprintf("%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				sinkU16 = Checksum(data, 0)
			}
		})
		b.Run(fmt.Sprintf("%d/reference", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				sinkU16 = naiveChecksum(data, 0)
			}
		})
	}
}

func BenchmarkChecksumUpdate32(b *testing.B) {
	b.ReportAllocs()
	check, old, nw := uint16(0x1c46), uint32(0xc0a80001), uint32(0x0a000001)
	for b.Loop() {
		check = ChecksumUpdate32(check, old, nw)
		old, nw = nw, old
	}
	sinkU16 = check
}

// BenchmarkIPv6Transport walks a hop-by-hop and a destination options header
// to TCP.
func BenchmarkIPv6Transport(b *testing.B) {
	c := v6Case{exts: []ext{hopByHop(8), destOpts(8)}, upper: 6, payload: tcpPayload}
	pkt := IPv6(c.build(b))
	if p, off, _, ok := IPv6Transport(pkt); !ok || p != ProtoTCP || off != 56 {
		b.Fatalf("IPv6Transport = %d, %d, %v", p, off, ok)
	}
	b.ReportAllocs()
	for b.Loop() {
		sinkU8, sinkInt, sinkBool, sinkBool = IPv6Transport(pkt)
	}
}
