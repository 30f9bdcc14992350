package header

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// checksumInput returns n bytes of one of several shapes: uniform random
// bytes, and runs of 0xff and 0x00 that drive the carries to their limits.
func checksumInput(r *rand.Rand, n int) []byte {
	b := randBytes(r, n)
	switch r.IntN(4) {
	case 0: // all ones: every addition carries
		for i := range b {
			b[i] = 0xff
		}
	case 1: // mostly ones
		for i := range b {
			if r.IntN(16) != 0 {
				b[i] = 0xff
			}
		}
	case 2: // mostly zeros
		for i := range b {
			if r.IntN(16) != 0 {
				b[i] = 0
			}
		}
	}
	return b
}

func randInitial(r *rand.Rand) uint16 {
	switch r.IntN(4) {
	case 0:
		return 0
	case 1:
		return 0xffff
	}
	return uint16(r.Uint32())
}

// TestChecksumMatchesReference compares Checksum with the naive reference
// (and gopacket's sum) for every length 0..2000, at every alignment of the
// slice, and for data checksummed in pieces chained through the initial
// value.
func TestChecksumMatchesReference(t *testing.T) {
	r := newRand(t)
	const maxLen = 2000
	backing := make([]byte, maxLen+8)
	for n := 0; n <= maxLen; n++ {
		data := checksumInput(r, n)
		initial := randInitial(r)
		want := naiveChecksum(data, initial)
		if got := Checksum(data, initial); got != want {
			t.Fatalf("len %d initial %#04x: Checksum = %#04x, reference %#04x", n, initial, got, want)
		}
		if g := ^gopacket.FoldChecksum(gopacket.ComputeChecksum(data, uint32(initial))); g != want {
			t.Fatalf("len %d: reference %#04x disagrees with gopacket %#04x", n, want, g)
		}

		// The same bytes at another alignment.
		shift := r.IntN(8)
		moved := backing[shift : shift+n]
		copy(moved, data)
		if got := Checksum(moved, initial); got != want {
			t.Fatalf("len %d at offset %d: Checksum = %#04x, reference %#04x", n, shift, got, want)
		}

		// In pieces: every piece but the last of even length.
		for range 4 {
			sum, rest := initial, data
			var cuts []int
			for len(rest) > 1 && r.IntN(4) != 0 {
				k := 2 * r.IntN(len(rest)/2+1)
				cuts = append(cuts, k)
				sum = Checksum(rest[:k], sum)
				rest = rest[k:]
			}
			if got := Checksum(rest, sum); got != want {
				t.Fatalf("len %d in pieces %v + %d: Checksum = %#04x, reference %#04x", n, cuts, len(rest), got, want)
			}
		}
	}
}

func TestChecksumKnownAnswers(t *testing.T) {
	rfc1071 := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	tests := []struct {
		name    string
		b       []byte
		initial uint16
		want    uint16
	}{
		// RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is 2ddf0, folded ddf2.
		{"RFC 1071 example", rfc1071, 0, 0xddf2},
		// RFC 1071 §2(B): byte order independence — swapped input, swapped sum.
		{"RFC 1071 example byte-swapped", []byte{0x01, 0x00, 0x03, 0xf2, 0xf5, 0xf4, 0xf7, 0xf6}, 0, 0xf2dd},
		{"RFC 1071 example in two pieces", rfc1071[4:], Checksum(rfc1071[:4], 0), 0xddf2},
		{"RFC 1071 example odd tail", rfc1071[:7], 0, 0xddf2 - 0xf7},
		{"nil", nil, 0, 0},
		{"nil keeps the initial value", nil, 0xabcd, 0xabcd},
		{"nil keeps 0xffff", nil, 0xffff, 0xffff},
		{"one byte is the high half", []byte{0x12}, 0, 0x1200},
		{"zeros sum to 0", make([]byte, 1500), 0, 0},
		{"zeros after 0xffff stay 0xffff", make([]byte, 64), 0xffff, 0xffff},
		{"ones sum to 0xffff", bytes.Repeat([]byte{0xff}, 1500), 0, 0xffff},
		{"ones and one carry", []byte{0xff, 0xff, 0x00, 0x01}, 0, 0x0001},
		{"end-around carry", []byte{0x80, 0x00, 0x80, 0x00}, 0, 0x0001},
		{"initial carries", []byte{0x00, 0x01}, 0xffff, 0x0001},
		{"64-bit accumulator carry", bytes.Repeat([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}, 3), 0x0003, 0xffff},
		{"IPv4 header with checksum", []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61,
			0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}, 0, 0xffff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ref := naiveChecksum(tt.b, tt.initial); ref != tt.want {
				t.Fatalf("test case is wrong: reference says %#04x, case %#04x", ref, tt.want)
			}
			if got := Checksum(tt.b, tt.initial); got != tt.want {
				t.Errorf("Checksum = %#04x, want %#04x", got, tt.want)
			}
		})
	}
}

func TestChecksumCombine(t *testing.T) {
	tests := []struct {
		name    string
		a, b    uint16
		want    uint16
		comment string
	}{
		{"zeros", 0, 0, 0, ""},
		{"no carry", 0x1234, 0x4321, 0x5555, ""},
		{"carry", 0x8000, 0x8000, 0x0001, ""},
		{"ones", 0xffff, 0xffff, 0xffff, ""},
		{"0xffff plus 1", 0xffff, 1, 1, ""},
		{"0xffff plus 0", 0xffff, 0, 0xffff, ""},
		{"0xfffe plus 1", 0xfffe, 1, 0xffff, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ChecksumCombine(tt.a, tt.b); got != tt.want {
				t.Errorf("ChecksumCombine(%#04x, %#04x) = %#04x, want %#04x", tt.a, tt.b, got, tt.want)
			}
			if got := ChecksumCombine(tt.b, tt.a); got != tt.want {
				t.Errorf("ChecksumCombine(%#04x, %#04x) = %#04x, want %#04x", tt.b, tt.a, got, tt.want)
			}
		})
	}

	r := newRand(t)
	for range 10000 {
		a := checksumInput(r, 2*r.IntN(100))
		b := checksumInput(r, r.IntN(200))
		want := naiveChecksum(append(append([]byte(nil), a...), b...), 0)
		if got := ChecksumCombine(Checksum(a, 0), Checksum(b, 0)); got != want {
			t.Fatalf("ChecksumCombine of %d and %d bytes = %#04x, checksum of both %#04x", len(a), len(b), got, want)
		}
	}
}

func TestPseudoHeaderChecksumMatchesReference(t *testing.T) {
	r := newRand(t)
	for range 10000 {
		proto := uint8(r.Uint32())
		src4, dst4 := [4]byte(checksumInput(r, 4)), [4]byte(checksumInput(r, 4))
		len16 := uint16(r.Uint32())
		// RFC 768 / RFC 793 pseudo-header: src, dst, zero, protocol, length.
		p4 := append(append(append([]byte(nil), src4[:]...), dst4[:]...), 0, proto, byte(len16>>8), byte(len16))
		if got, want := PseudoHeaderChecksumIPv4(proto, src4, dst4, len16), naiveChecksum(p4, 0); got != want {
			t.Fatalf("PseudoHeaderChecksumIPv4(%d, %v, %v, %d) = %#04x, reference %#04x", proto, src4, dst4, len16, got, want)
		}

		src6, dst6 := [16]byte(checksumInput(r, 16)), [16]byte(checksumInput(r, 16))
		len32 := r.Uint32()
		if r.IntN(2) == 0 {
			len32 &= 0xffff
		}
		// RFC 8200 §8.1 pseudo-header: src, dst, 32-bit length, 3 zero bytes, next header.
		p6 := append(append(append([]byte(nil), src6[:]...), dst6[:]...), make([]byte, 8)...)
		binary.BigEndian.PutUint32(p6[32:], len32)
		p6[39] = proto
		if got, want := PseudoHeaderChecksumIPv6(proto, src6, dst6, len32), naiveChecksum(p6, 0); got != want {
			t.Fatalf("PseudoHeaderChecksumIPv6(%d, %x, %x, %d) = %#04x, reference %#04x", proto, src6, dst6, len32, got, want)
		}
	}
}

// TestPseudoHeaderChecksumMatchesGopacket checks TCP and UDP checksums that
// gopacket computed over random IPv4 and IPv6 packets.
func TestPseudoHeaderChecksumMatchesGopacket(t *testing.T) {
	r := newRand(t)
	for i := range 400 {
		v6, isTCP := i%2 == 1, i/2%2 == 1
		n := r.IntN(1400)
		if i < 16 {
			n = i / 4 // empty and tiny payloads
		}
		name := fmt.Sprintf("IPv%d %s %d bytes", map[bool]int{false: 4, true: 6}[v6], map[bool]string{false: "UDP", true: "TCP"}[isTCP], n)
		t.Run(name, func(t *testing.T) {
			var ipl gopacket.SerializableLayer
			var nl gopacket.NetworkLayer
			proto := layers.IPProtocolUDP
			if isTCP {
				proto = layers.IPProtocolTCP
			}
			if v6 {
				ip := ipv6Layer(t, proto)
				ip.SrcIP, ip.DstIP = randBytes(r, 16), randBytes(r, 16)
				ipl, nl = ip, ip
			} else {
				ip := ipv4Layer(proto, randBytes(r, 4), randBytes(r, 4))
				ipl, nl = ip, ip
			}
			var tl interface {
				gopacket.SerializableLayer
				SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
			}
			if isTCP {
				tl = &layers.TCP{SrcPort: layers.TCPPort(r.Uint32()), DstPort: layers.TCPPort(r.Uint32()), Seq: r.Uint32(),
					Ack: r.Uint32(), ACK: true, Window: uint16(r.Uint32())}
			} else {
				tl = &layers.UDP{SrcPort: layers.UDPPort(r.Uint32()), DstPort: layers.UDPPort(r.Uint32())}
			}
			_ = tl.SetNetworkLayerForChecksum(nl)
			data := serialize(t, ipl, tl, gopacket.Payload(checksumInput(r, n)))

			var seg []byte
			var pseudo uint16
			if v6 {
				ip := IPv6(data)
				seg = data[IPv6Len:]
				pseudo = PseudoHeaderChecksumIPv6(uint8(proto), ip.Src(), ip.Dst(), uint32(len(seg)))
			} else {
				ip := IPv4(data)
				seg = ip.Payload()
				pseudo = PseudoHeaderChecksumIPv4(uint8(proto), ip.Src(), ip.Dst(), uint16(len(seg)))
			}
			field := 6 // UDP checksum offset
			if isTCP {
				field = 16
			}
			want := be.Uint16(seg[field:])
			if got := Checksum(seg, pseudo); got != 0xffff {
				t.Errorf("gopacket's segment sums to %#04x with the pseudo-header, want 0xffff", got)
			}
			be.PutUint16(seg[field:], 0)
			got := ^Checksum(seg, pseudo)
			if got == 0 && !isTCP {
				got = 0xffff // RFC 768
			}
			if got != want {
				t.Errorf("checksum from pseudo-header %#04x, gopacket %#04x", got, want)
			}
		})
	}
}

// TestRFC1624Example is the example of RFC 1624 §3: eqn. 2 gives 0xffff
// where recomputation gives 0x0000; eqn. 3, which ChecksumUpdate16 uses,
// gives 0x0000.
func TestRFC1624Example(t *testing.T) {
	// The other words of the header sum to 0xcd7a; m changes 0x5555 → 0x3285.
	data := []byte{0xcd, 0x7a, 0x55, 0x55, 0x00, 0x00}
	be.PutUint16(data[4:], ^Checksum(data, 0))
	if hc := be.Uint16(data[4:]); hc != 0xdd2f {
		t.Fatalf("HC = %#04x, RFC 1624 says 0xdd2f", hc)
	}
	got := ChecksumUpdate16(0xdd2f, 0x5555, 0x3285)
	if got != 0x0000 {
		t.Errorf("ChecksumUpdate16(0xdd2f, 0x5555, 0x3285) = %#04x, want 0x0000", got)
	}
	be.PutUint16(data[2:], 0x3285)
	be.PutUint16(data[4:], 0)
	if scratch := ^Checksum(data, 0); scratch != got {
		t.Errorf("recomputed %#04x, incremental %#04x", scratch, got)
	}
	be.PutUint16(data[4:], got)
	if Checksum(data, 0) != 0xffff {
		t.Error("updated data does not verify")
	}
	got32 := ChecksumUpdate32(0xdd2f, 0xcd7a5555, 0xcd7a3285)
	gotBytes := ChecksumUpdateBytes(0xdd2f, []byte{0x55, 0x55}, []byte{0x32, 0x85})
	if got32 != 0 || gotBytes != 0 {
		t.Errorf("ChecksumUpdate32 = %#04x, ChecksumUpdateBytes = %#04x, want 0x0000", got32, gotBytes)
	}
}

// randHeader returns random data of even length 8..60 with a valid checksum
// computed from scratch at checkAt, like an IPv4 header. Its first word is
// never zero and never changed: RFC 1624 §3 counts on a non-zero field, and
// data that is all zero is the one input where eqn. 3 and recomputation
// differ (0x0000 against 0xffff).
func randHeader(r *rand.Rand) (data []byte, checkAt int) {
	data = checksumInput(r, 8+2*r.IntN(27))
	data[0] = 0x45
	checkAt = 2 + 2*r.IntN(len(data)/2-1)
	be.PutUint16(data[checkAt:], 0)
	be.PutUint16(data[checkAt:], ^Checksum(data, 0))
	return data, checkAt
}

// scratch returns the checksum of data recomputed from nothing.
func scratch(data []byte, checkAt int) uint16 {
	c := append([]byte(nil), data...)
	be.PutUint16(c[checkAt:], 0)
	return ^Checksum(c, 0)
}

// TestChecksumUpdateMatchesRecomputation changes random fields of random
// headers and compares the incremental update (RFC 1624 eqn. 3) with a
// recomputation from scratch, chaining many updates on the same header.
func TestChecksumUpdateMatchesRecomputation(t *testing.T) {
	r := newRand(t)
	for range 2000 {
		data, at := randHeader(r)
		for step := range 20 {
			// A field that does not overlap the checksum: 2, 4 or more bytes.
			var off, size int
			for {
				size = []int{2, 4, 2 * (1 + r.IntN(8))}[r.IntN(3)]
				if size > len(data)-4 {
					continue
				}
				off = 2 + 2*r.IntN((len(data)-2-size)/2+1)
				if off+size <= at || off >= at+2 {
					break
				}
			}
			old := append([]byte(nil), data[off:off+size]...)
			nw := checksumInput(r, size)
			switch r.IntN(8) {
			case 0:
				copy(nw, old) // no change
			case 1: // 0x0000 ↔ 0xffff: the same value in ones' complement
				for i := range nw {
					nw[i] = ^old[i]
					if old[i] != 0 && old[i] != 0xff {
						nw[i] = 0xff
					}
				}
			case 2: // make the new sum 0xffff, so the new checksum is 0x0000
				if size == 2 {
					be.PutUint16(data[off:], 0)
					be.PutUint16(data[at:], 0)
					be.PutUint16(nw, ^Checksum(data, 0))
					copy(data[off:], old)
					be.PutUint16(data[at:], scratch(data, at))
				}
			}
			check := be.Uint16(data[at:])
			var got uint16
			switch {
			case size == 2 && r.IntN(2) == 0:
				got = ChecksumUpdate16(check, be.Uint16(old), be.Uint16(nw))
			case size == 4 && r.IntN(2) == 0:
				got = ChecksumUpdate32(check, be.Uint32(old), be.Uint32(nw))
			default:
				got = ChecksumUpdateBytes(check, old, nw)
			}
			copy(data[off:], nw)
			if want := scratch(data, at); got != want {
				t.Fatalf("step %d: %d-byte field at %d changed % x → % x: incremental %#04x, recomputed %#04x\ndata % x",
					step, size, off, old, nw, got, want, data)
			}
			be.PutUint16(data[at:], got)
			if Checksum(data, 0) != 0xffff {
				t.Fatalf("step %d: updated data does not verify", step)
			}
		}
	}
}

// TestChecksumUpdateCorners covers the representations of zero named in
// RFC 1624: a field changing between 0x0000 and 0xffff, a checksum field of
// 0xffff (valid, though recomputation gives 0x0000), and updates to and from
// a checksum of 0x0000.
func TestChecksumUpdateCorners(t *testing.T) {
	tests := []struct {
		name     string
		others   uint16 // ones'-complement sum of the words not changed
		old, new uint16
	}{
		{"field 0x0000 to 0xffff", 0x1234, 0x0000, 0xffff},
		{"field 0xffff to 0x0000", 0x1234, 0xffff, 0x0000},
		{"new checksum 0x0000", 0x1234, 0x0001, 0xedcb},
		{"old checksum 0x0000", 0x1234, 0xedcb, 0x0001},
		{"others sum to 0xffff, field 0 to 0", 0xffff, 0x0000, 0x0000},
		{"others sum to 0xffff, field 0 to 0xffff", 0xffff, 0x0000, 0xffff},
		{"others sum to 0xffff, field 0xffff to 0", 0xffff, 0xffff, 0x0000},
		{"others sum to 0xffff, field 1 to 0", 0xffff, 0x0001, 0x0000},
		{"no change", 0xabcd, 0x1111, 0x1111},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := make([]byte, 6)
			be.PutUint16(data[0:], tt.others)
			be.PutUint16(data[2:], tt.old)
			for _, check := range []uint16{scratch(data, 4), 0xffff} {
				be.PutUint16(data[2:], tt.old)
				be.PutUint16(data[4:], check)
				if Checksum(data, 0) != 0xffff {
					continue // 0xffff is valid only where recomputation gives 0x0000
				}
				for _, u := range []struct {
					name string
					got  uint16
				}{
					{"ChecksumUpdate16", ChecksumUpdate16(check, tt.old, tt.new)},
					{"ChecksumUpdate32", ChecksumUpdate32(check, uint32(tt.others)<<16|uint32(tt.old), uint32(tt.others)<<16|uint32(tt.new))},
					{"ChecksumUpdateBytes", ChecksumUpdateBytes(check, data[2:4], binary.BigEndian.AppendUint16(nil, tt.new))},
				} {
					c := append([]byte(nil), data...)
					be.PutUint16(c[2:], tt.new)
					be.PutUint16(c[4:], u.got)
					if Checksum(c, 0) != 0xffff {
						t.Errorf("%s from checksum %#04x = %#04x: data % x does not verify", u.name, check, u.got, c)
					}
					if want := scratch(c, 4); check != 0xffff && u.got != want {
						t.Errorf("%s from checksum %#04x = %#04x, recomputed %#04x", u.name, check, u.got, want)
					}
				}
			}
		})
	}
}
