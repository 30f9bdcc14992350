package header

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// recordRoute returns IPv4 options of exactly n bytes (n a positive multiple
// of 4): a Record Route option (RFC 791) with room for (n-4)/4 addresses,
// then End of Option List.
func recordRoute(n int) []layers.IPv4Option {
	data := make([]byte, n-3) // pointer, then the address slots
	data[0] = 4
	return []layers.IPv4Option{{OptionType: 7, OptionLength: uint8(n - 1), OptionData: data}, {OptionType: 0}}
}

type ipv4Case struct {
	name    string
	ip      *layers.IPv4
	payload []gopacket.SerializableLayer
	trailer int // bytes after the IPv4 packet (Ethernet padding)
}

func ipv4Cases(tb testing.TB) []ipv4Case {
	src, dst := ip4(192, 0, 2, 1), ip4(198, 51, 100, 200)
	udp := func() []gopacket.SerializableLayer {
		return []gopacket.SerializableLayer{&layers.UDP{SrcPort: 40000, DstPort: 40001}, gopacket.Payload("query")}
	}
	raw := []gopacket.SerializableLayer{gopacket.Payload("opaque payload of an unassigned protocol")}
	cases := []ipv4Case{
		{name: "UDP", ip: ipv4Layer(layers.IPProtocolUDP, src, dst), payload: udp()},
		{name: "TCP DF TOS", ip: &layers.IPv4{Version: 4, TOS: 0xb9, Id: 0xfffe, Flags: layers.IPv4DontFragment, TTL: 1,
			Protocol: layers.IPProtocolTCP, SrcIP: src, DstIP: dst},
			payload: []gopacket.SerializableLayer{&layers.TCP{SrcPort: 443, DstPort: 51000, Seq: 1, SYN: true, Window: 65535}}},
		{name: "first fragment", ip: &layers.IPv4{Version: 4, Id: 77, Flags: layers.IPv4MoreFragments, TTL: 255,
			Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}, payload: raw},
		{name: "middle fragment", ip: &layers.IPv4{Version: 4, Id: 77, Flags: layers.IPv4MoreFragments, FragOffset: 185, TTL: 64,
			Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}, payload: raw},
		{name: "last fragment max offset", ip: &layers.IPv4{Version: 4, Id: 77, FragOffset: 0x1fff, TTL: 0,
			Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}, payload: raw},
		{name: "reserved flag", ip: &layers.IPv4{Version: 4, Flags: layers.IPv4EvilBit | layers.IPv4DontFragment, TTL: 9,
			Protocol: 253, SrcIP: ip4(0, 0, 0, 0), DstIP: ip4(255, 255, 255, 255)}, payload: raw},
		{name: "ICMP with Ethernet padding", ip: ipv4Layer(layers.IPProtocolICMPv4, src, dst),
			payload: []gopacket.SerializableLayer{&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 2}}, trailer: 18},
		{name: "empty payload", ip: ipv4Layer(253, src, dst)},
		{name: "router alert and NOPs IHL 7", ip: &layers.IPv4{Version: 4, TTL: 1, Protocol: 253, SrcIP: src, DstIP: dst,
			Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1},
				{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}}, payload: raw},
	}
	for ihl := 6; ihl <= 15; ihl++ {
		ip := ipv4Layer(layers.IPProtocolUDP, src, dst)
		ip.Options = recordRoute((ihl - 5) * 4)
		cases = append(cases, ipv4Case{name: fmt.Sprintf("IHL %d record route", ihl), ip: ip, payload: udp()})
	}
	return cases
}

// buildIPv4 serializes c and returns the packet with its trailer.
func (c ipv4Case) build(tb testing.TB) []byte {
	ls := append([]gopacket.SerializableLayer{c.ip}, c.payload...)
	for _, l := range c.payload {
		switch l := l.(type) {
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(c.ip)
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(c.ip)
		}
	}
	data := serialize(tb, ls...)
	return append(data, make([]byte, c.trailer)...)
}

func TestIPv4MatchesGopacket(t *testing.T) {
	for _, tt := range ipv4Cases(t) {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.build(t)
			p := decodeFirst(t, data, layers.LayerTypeIPv4)
			g := layerOf[*layers.IPv4](t, p, layers.LayerTypeIPv4)
			checkIPv4(t, IPv4(data), g)
			if len(tt.ip.Options) > 0 && IPv4(data).HeaderLen() == IPv4MinLen {
				t.Error("case with options built a 20-byte header")
			}
			verifyChecksums(t, p)
		})
	}
}

// checkIPv4 compares every accessor of b with gopacket's decode g.
func checkIPv4(t *testing.T, b IPv4, g *layers.IPv4) {
	t.Helper()
	if !b.IsValid() {
		t.Fatal("IsValid = false")
	}
	if got, want := b.HeaderLen(), int(g.IHL)*4; got != want || got != len(g.Contents) {
		t.Errorf("HeaderLen = %d, want %d (contents %d)", got, want, len(g.Contents))
	}
	if b.TOS() != g.TOS {
		t.Errorf("TOS = %#02x, want %#02x", b.TOS(), g.TOS)
	}
	if b.TotalLen() != g.Length {
		t.Errorf("TotalLen = %d, want %d", b.TotalLen(), g.Length)
	}
	if b.ID() != g.Id {
		t.Errorf("ID = %d, want %d", b.ID(), g.Id)
	}
	if got, want := b.FlagsFragOff(), uint16(g.Flags)<<13|g.FragOffset; got != want {
		t.Errorf("FlagsFragOff = %#04x, want %#04x", got, want)
	}
	if got, want := b.DF(), g.Flags&layers.IPv4DontFragment != 0; got != want {
		t.Errorf("DF = %v, want %v", got, want)
	}
	if got, want := b.IsFragment(), g.Flags&layers.IPv4MoreFragments != 0 || g.FragOffset != 0; got != want {
		t.Errorf("IsFragment = %v, want %v", got, want)
	}
	if got, want := b.FragOffset(), int(g.FragOffset)*8; got != want {
		t.Errorf("FragOffset = %d, want %d", got, want)
	}
	if b.TTL() != g.TTL {
		t.Errorf("TTL = %d, want %d", b.TTL(), g.TTL)
	}
	if b.Protocol() != uint8(g.Protocol) {
		t.Errorf("Protocol = %d, want %d", b.Protocol(), g.Protocol)
	}
	if b.Checksum() != g.Checksum {
		t.Errorf("Checksum = %#04x, want %#04x", b.Checksum(), g.Checksum)
	}
	if b.Src() != [4]byte(g.SrcIP.To4()) || b.Dst() != [4]byte(g.DstIP.To4()) {
		t.Errorf("Src, Dst = %v, %v, want %v, %v", b.Src(), b.Dst(), g.SrcIP, g.DstIP)
	}
	if b.SrcUint32() != binary.BigEndian.Uint32(g.SrcIP.To4()) || b.DstUint32() != binary.BigEndian.Uint32(g.DstIP.To4()) {
		t.Errorf("SrcUint32, DstUint32 = %#08x, %#08x, want %v, %v", b.SrcUint32(), b.DstUint32(), g.SrcIP, g.DstIP)
	}
	if b.SrcAddr() != netip.MustParseAddr(g.SrcIP.String()) || b.DstAddr() != netip.MustParseAddr(g.DstIP.String()) {
		t.Errorf("SrcAddr, DstAddr = %v, %v, want %v, %v", b.SrcAddr(), b.DstAddr(), g.SrcIP, g.DstIP)
	}
	if !bytes.Equal(b.Payload(), g.Payload) {
		t.Errorf("Payload = %x, want %x", b.Payload(), g.Payload)
	}
	_, res := g.VerifyChecksum()
	if got := b.HeaderChecksumOK(); got != res.Valid {
		t.Errorf("HeaderChecksumOK = %v, gopacket says %v", got, res.Valid)
	}
}

func TestIPv4HeaderChecksum(t *testing.T) {
	for _, tt := range ipv4Cases(t) {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.build(t)
			b := IPv4(data)
			if !b.HeaderChecksumOK() {
				t.Fatal("HeaderChecksumOK = false for a gopacket-built header")
			}
			want := b.Checksum()

			// Any single flipped bit in the header is detected (bits of
			// the IHL would change what the header is, so they stay).
			for i := 4; i < b.HeaderLen()*8; i++ {
				b[i/8] ^= 1 << (i % 8)
				if b.HeaderChecksumOK() {
					t.Errorf("HeaderChecksumOK = true with bit %d flipped", i)
				}
				b[i/8] ^= 1 << (i % 8)
			}

			b.SetChecksum(^want)
			b.ComputeChecksum()
			if b.Checksum() != want {
				t.Errorf("ComputeChecksum = %#04x, gopacket computed %#04x", b.Checksum(), want)
			}

			// Setters, then ComputeChecksum, agree with gopacket building
			// the same header.
			tt.ip.TOS ^= 0xfc
			tt.ip.Length += 3
			b.SetTOS(tt.ip.TOS)
			b.SetTotalLen(tt.ip.Length)
			if b.HeaderChecksumOK() {
				t.Error("HeaderChecksumOK = true after SetTOS, SetTotalLen")
			}
			b.ComputeChecksum()
			buf := gopacket.NewSerializeBuffer()
			if err := tt.ip.SerializeTo(buf, gopacket.SerializeOptions{ComputeChecksums: true}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b[:b.HeaderLen()], buf.Bytes()) {
				t.Errorf("header after setters:\n%x\ngopacket:\n%x", b[:b.HeaderLen()], buf.Bytes())
			}
		})
	}
}

// TestIPv4ChecksumKnownAnswer checks a header whose checksum is widely
// published (RFC 1071 style example used in many texts).
func TestIPv4ChecksumKnownAnswer(t *testing.T) {
	b := IPv4{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61,
		0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	b = append(b, make([]byte, 0x73-20)...)
	if !b.IsValid() || !b.HeaderChecksumOK() {
		t.Fatalf("IsValid %v HeaderChecksumOK %v", b.IsValid(), b.HeaderChecksumOK())
	}
	b.ComputeChecksum()
	if b.Checksum() != 0xb861 {
		t.Errorf("ComputeChecksum = %#04x, want 0xb861", b.Checksum())
	}
}

func TestIPv4EncodeDecodesInGopacket(t *testing.T) {
	r := newRand(t)
	tests := []struct {
		name       string
		f          IPv4Fields
		payloadLen int
	}{
		{"UDP DF", IPv4Fields{TOS: 0, ID: 1, Flags: IPv4FlagDF, TTL: 64, Protocol: ProtoUDP,
			Src: [4]byte{10, 0, 0, 1}, Dst: [4]byte{10, 0, 0, 2}}, 8},
		{"first fragment", IPv4Fields{TOS: 0x2e, ID: 0xffff, Flags: IPv4FlagMF, TTL: 255, Protocol: ProtoTCP,
			Src: [4]byte{192, 0, 2, 1}, Dst: [4]byte{203, 0, 113, 9}}, 1480},
		{"last fragment", IPv4Fields{ID: 0xffff, Flags: 1480 / 8, TTL: 1, Protocol: ProtoTCP,
			Src: [4]byte{192, 0, 2, 1}, Dst: [4]byte{203, 0, 113, 9}}, 20},
		{"TTL 0 all-ones addresses", IPv4Fields{TOS: 0xff, Flags: 0xffff, Protocol: 0xff,
			Src: [4]byte{255, 255, 255, 255}, Dst: [4]byte{255, 255, 255, 255}}, 0},
		{"zero fields", IPv4Fields{}, 0},
		{"IP in IP", IPv4Fields{TTL: 64, Protocol: ProtoIPIP, Src: [4]byte{100, 64, 0, 1}, Dst: [4]byte{100, 64, 0, 2}}, 20},
	}
	for i := range 50 {
		tests = append(tests, struct {
			name       string
			f          IPv4Fields
			payloadLen int
		}{fmt.Sprintf("random %d", i), IPv4Fields{
			TOS: uint8(r.Uint32()), ID: uint16(r.Uint32()), Flags: uint16(r.Uint32()), TTL: uint8(r.Uint32()),
			Protocol: uint8(r.Uint32()), Src: [4]byte(randBytes(r, 4)), Dst: [4]byte(randBytes(r, 4)),
		}, r.IntN(1500)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.TotalLen = uint16(IPv4MinLen + tt.payloadLen)
			b := IPv4(randBytes(r, IPv4MinLen+tt.payloadLen))
			b.Encode(&tt.f)
			if !b.IsValid() || !b.HeaderChecksumOK() {
				t.Fatalf("IsValid %v HeaderChecksumOK %v", b.IsValid(), b.HeaderChecksumOK())
			}
			var g layers.IPv4
			if err := g.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
				t.Fatalf("gopacket: %v", err)
			}
			if g.Version != 4 || g.IHL != 5 || len(g.Options) != 0 {
				t.Errorf("gopacket: version %d IHL %d options %v", g.Version, g.IHL, g.Options)
			}
			want := layers.IPv4{TOS: tt.f.TOS, Length: tt.f.TotalLen, Id: tt.f.ID, Flags: layers.IPv4Flag(tt.f.Flags >> 13),
				FragOffset: tt.f.Flags & 0x1fff, TTL: tt.f.TTL, Protocol: layers.IPProtocol(tt.f.Protocol)}
			if g.TOS != want.TOS || g.Length != want.Length || g.Id != want.Id || g.Flags != want.Flags ||
				g.FragOffset != want.FragOffset || g.TTL != want.TTL || g.Protocol != want.Protocol ||
				!g.SrcIP.Equal(net.IP(tt.f.Src[:])) || !g.DstIP.Equal(net.IP(tt.f.Dst[:])) {
				t.Errorf("gopacket decoded %+v\nwant fields %+v", g, tt.f)
			}
			if _, res := g.VerifyChecksum(); !res.Valid {
				t.Errorf("gopacket: checksum %#04x, want %#04x", res.Actual, res.Correct)
			}
			checkIPv4(t, b, &g)
		})
	}
}

// TestIPv4DecTTL decrements every TTL value, in headers with and without
// options, and checks that the incremental update (RFC 1624) keeps the
// checksum valid and equal to a recomputation from scratch.
func TestIPv4DecTTL(t *testing.T) {
	r := newRand(t)
	for _, tt := range ipv4Cases(t) {
		t.Run(tt.name, func(t *testing.T) {
			b := IPv4(tt.build(t))
			for ttl := range 256 {
				b[8] = uint8(ttl)
				be.PutUint16(b[4:], uint16(r.Uint32())) // vary the rest of the sum
				b.ComputeChecksum()
				got := b.DecTTL()
				if want := uint8(ttl - 1); got != want || b.TTL() != want {
					t.Fatalf("TTL %d: DecTTL = %d, TTL() = %d, want %d", ttl, got, b.TTL(), want)
				}
				if !b.HeaderChecksumOK() {
					t.Fatalf("TTL %d: HeaderChecksumOK = false after DecTTL", ttl)
				}
				inc := b.Checksum()
				b.ComputeChecksum()
				if inc != b.Checksum() {
					t.Fatalf("TTL %d: incremental checksum %#04x, from scratch %#04x", ttl, inc, b.Checksum())
				}
			}

			// 255 hops in a row, each on the previous incremental result.
			b[8] = 255
			b.ComputeChecksum()
			for b.TTL() > 0 {
				ttl := b.TTL()
				b.DecTTL()
				if !b.HeaderChecksumOK() {
					t.Fatalf("chain: HeaderChecksumOK = false after DecTTL from %d", ttl)
				}
			}
			var g layers.IPv4
			if err := g.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
				t.Fatal(err)
			}
			if _, res := g.VerifyChecksum(); !res.Valid || g.TTL != 0 {
				t.Errorf("gopacket after 255 DecTTL: TTL %d checksum valid %v", g.TTL, res.Valid)
			}
		})
	}
}

// TestIPv4DecTTLChecksumCorners drives DecTTL into the two representations
// of zero (RFC 1624 §3): headers whose checksum after the decrement must be
// 0x0000, and headers that carry 0xffff before it (as valid to a receiver as
// 0x0000).
func TestIPv4DecTTLChecksumCorners(t *testing.T) {
	r := newRand(t)
	// header returns a random header whose ones'-complement sum, with the
	// checksum field zero and the TTL set to ttl, is 0xffff.
	header := func(ttl uint8) IPv4 {
		b := IPv4(randBytes(r, IPv4MinLen))
		b[0] = 0x45
		be.PutUint16(b[2:], IPv4MinLen)
		b[8] = ttl
		be.PutUint16(b[4:], 0)
		b.SetChecksum(0)
		be.PutUint16(b[4:], ^Checksum(b, 0))
		return b
	}
	for range 5000 {
		ttl := uint8(1 + r.IntN(255))

		b := header(ttl - 1)
		b[8] = ttl
		b.ComputeChecksum()
		b.DecTTL()
		if !b.HeaderChecksumOK() || b.Checksum() != 0x0000 {
			t.Fatalf("checksum after DecTTL = %#04x, want 0x0000 (valid %v): % x", b.Checksum(), b.HeaderChecksumOK(), b)
		}

		b = header(ttl)
		b.ComputeChecksum()
		if b.Checksum() != 0 {
			t.Fatalf("setup: checksum %#04x, want 0", b.Checksum())
		}
		b.SetChecksum(0xffff)
		if !b.HeaderChecksumOK() {
			t.Fatalf("setup: 0xffff does not verify: % x", b)
		}
		b.DecTTL()
		if !b.HeaderChecksumOK() {
			t.Fatalf("HeaderChecksumOK = false after DecTTL from a 0xffff checksum: % x", b)
		}
	}
}
