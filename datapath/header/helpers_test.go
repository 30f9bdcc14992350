package header

import (
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Test helpers shared by the files of this package: gopacket builders and
// decoders, the naive checksum reference and a seeded PRNG.

// serializeOpts makes gopacket fill in lengths and checksums, as a real
// sender would.
var serializeOpts = gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}

// serialize builds a packet from gopacket layers (outermost first).
func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, ls...); err != nil {
		tb.Fatalf("gopacket serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// decode decodes data with gopacket, starting at layer first, and fails the
// test if gopacket could not decode some layer.
func decode(tb testing.TB, data []byte, first gopacket.LayerType) gopacket.Packet {
	tb.Helper()
	p := gopacket.NewPacket(data, first, gopacket.DecodeOptions{NoCopy: true})
	if el := p.ErrorLayer(); el != nil {
		tb.Fatalf("gopacket decode: %v\n%v", el.Error(), p)
	}
	return p
}

// decodeFirst decodes data with gopacket like decode, but tolerates a
// failure in a layer after the first (a payload gopacket does not know).
func decodeFirst(tb testing.TB, data []byte, first gopacket.LayerType) gopacket.Packet {
	tb.Helper()
	p := gopacket.NewPacket(data, first, gopacket.DecodeOptions{NoCopy: true})
	if ls := p.Layers(); len(ls) == 0 || ls[0].LayerType() != first {
		tb.Fatalf("gopacket did not decode %v:\n%v", first, p)
	}
	return p
}

// layerOf returns the first layer of type lt in p as a T.
func layerOf[T gopacket.Layer](tb testing.TB, p gopacket.Packet, lt gopacket.LayerType) T {
	tb.Helper()
	l := p.Layer(lt)
	if l == nil {
		tb.Fatalf("no %v layer in\n%v", lt, p)
	}
	return l.(T)
}

// verifyChecksums fails the test if gopacket finds a wrong checksum in p.
func verifyChecksums(tb testing.TB, p gopacket.Packet) {
	tb.Helper()
	// gopacket's decoder does not tell TCP and UDP their network layer.
	if nl := p.NetworkLayer(); nl != nil {
		for _, l := range p.Layers() {
			if c, ok := l.(interface {
				SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
			}); ok {
				if err := c.SetNetworkLayerForChecksum(nl); err != nil {
					tb.Fatal(err)
				}
			}
		}
	}
	err, mismatches := p.VerifyChecksums()
	if err != nil {
		tb.Fatalf("gopacket VerifyChecksums: %v", err)
	}
	for _, m := range mismatches {
		tb.Errorf("gopacket: %v checksum: have %#04x, want %#04x", m.Layer.LayerType(), m.Actual, m.Correct)
	}
}

// naiveChecksum is the reference for Checksum: big-endian 16-bit words added
// one at a time with an end-around carry after each (RFC 1071 §4.1), a
// trailing odd byte padded with a zero byte.
func naiveChecksum(b []byte, initial uint16) uint16 {
	sum := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
		sum = sum&0xffff + sum>>16
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// testSeed seeds every PRNG of the tests, so that a failure reproduces.
const testSeed = 0x7ab6_1e5e_ed00_0001

// newRand returns a PRNG seeded with testSeed and the test's name.
func newRand(tb testing.TB) *rand.Rand {
	var h uint64 = 14695981039346656037 // FNV-1a of the name: one stream per test
	for _, c := range []byte(tb.Name()) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return rand.New(rand.NewPCG(testSeed, h))
}

// randBytes returns n bytes from r.
func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func hwAddr(m MAC) net.HardwareAddr { return net.HardwareAddr(append([]byte(nil), m[:]...)) }

func ip4(a, b, c, d byte) net.IP { return net.IPv4(a, b, c, d).To4() }

func mustIP6(tb testing.TB, s string) net.IP {
	tb.Helper()
	ip := net.ParseIP(s)
	if ip == nil {
		tb.Fatalf("bad IPv6 address %q", s)
	}
	return ip.To16()
}

// ipv4Layer returns a gopacket IPv4 layer with the usual fields set.
func ipv4Layer(proto layers.IPProtocol, src, dst net.IP) *layers.IPv4 {
	return &layers.IPv4{Version: 4, TTL: 64, Id: 0x1234, Protocol: proto, SrcIP: src, DstIP: dst}
}

// ipv6Layer returns a gopacket IPv6 layer with the usual fields set.
func ipv6Layer(tb testing.TB, next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{
		Version: 6, TrafficClass: 0xb8, FlowLabel: 0xabcde, NextHeader: next, HopLimit: 64,
		SrcIP: mustIP6(tb, "2001:db8::1"), DstIP: mustIP6(tb, "2001:db8:ffff::2"),
	}
}
