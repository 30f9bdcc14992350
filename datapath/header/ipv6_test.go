package header

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestIPv6MatchesGopacket(t *testing.T) {
	tests := []struct {
		name    string
		ip      *layers.IPv6
		payload []byte
		trailer int
	}{
		{name: "defaults", ip: ipv6Layer(t, 253), payload: []byte("payload")},
		{name: "zero traffic class and flow label", ip: &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 1,
			SrcIP: mustIP6(t, "fe80::1"), DstIP: mustIP6(t, "ff02::1")}, payload: make([]byte, 8)},
		{name: "all-ones traffic class and flow label", ip: &layers.IPv6{Version: 6, TrafficClass: 0xff, FlowLabel: 0xfffff,
			NextHeader: 253, HopLimit: 255, SrcIP: mustIP6(t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
			DstIP: mustIP6(t, "::")}, payload: []byte{1}},
		{name: "ECN bits only", ip: &layers.IPv6{Version: 6, TrafficClass: 0x03, FlowLabel: 0x80000, NextHeader: 253,
			HopLimit: 0, SrcIP: mustIP6(t, "::ffff:192.0.2.1"), DstIP: mustIP6(t, "64:ff9b::c000:201")}, payload: []byte("x")},
		{name: "with Ethernet padding", ip: ipv6Layer(t, 253), payload: []byte("short"), trailer: 20},
		{name: "1400-byte payload", ip: ipv6Layer(t, 253), payload: bytes.Repeat([]byte{0xa5}, 1400)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := append(serialize(t, tt.ip, gopacket.Payload(tt.payload)), make([]byte, tt.trailer)...)
			g := layerOf[*layers.IPv6](t, decodeFirst(t, data, layers.LayerTypeIPv6), layers.LayerTypeIPv6)
			checkIPv6(t, IPv6(data), g)
		})
	}
}

// checkIPv6 compares every accessor of b with gopacket's decode g.
func checkIPv6(t *testing.T, b IPv6, g *layers.IPv6) {
	t.Helper()
	if !b.IsValid() {
		t.Fatal("IsValid = false")
	}
	if b.TrafficClass() != g.TrafficClass {
		t.Errorf("TrafficClass = %#02x, want %#02x", b.TrafficClass(), g.TrafficClass)
	}
	if b.FlowLabel() != g.FlowLabel {
		t.Errorf("FlowLabel = %#05x, want %#05x", b.FlowLabel(), g.FlowLabel)
	}
	if b.PayloadLen() != g.Length {
		t.Errorf("PayloadLen = %d, want %d", b.PayloadLen(), g.Length)
	}
	if b.NextHeader() != uint8(g.NextHeader) {
		t.Errorf("NextHeader = %d, want %d", b.NextHeader(), g.NextHeader)
	}
	if b.HopLimit() != g.HopLimit {
		t.Errorf("HopLimit = %d, want %d", b.HopLimit(), g.HopLimit)
	}
	if b.Src() != [16]byte(g.SrcIP) || b.Dst() != [16]byte(g.DstIP) {
		t.Errorf("Src, Dst = %x, %x, want %v, %v", b.Src(), b.Dst(), g.SrcIP, g.DstIP)
	}
	if b.SrcAddr() != netip.AddrFrom16([16]byte(g.SrcIP)) || b.DstAddr() != netip.AddrFrom16([16]byte(g.DstIP)) {
		t.Errorf("SrcAddr, DstAddr = %v, %v, want %v, %v", b.SrcAddr(), b.DstAddr(), g.SrcIP, g.DstIP)
	}
	if !b.SrcAddr().Is6() || !b.DstAddr().Is6() {
		t.Errorf("SrcAddr, DstAddr = %v, %v: not IPv6 addresses", b.SrcAddr(), b.DstAddr())
	}
}

func TestIPv6Setters(t *testing.T) {
	r := newRand(t)
	data := serialize(t, ipv6Layer(t, 253), gopacket.Payload("0123456789"))
	b := IPv6(data)
	for tc := range 256 {
		flow := r.Uint32() & 0xfffff
		be.PutUint32(b[0:], 6<<28|uint32(r.Uint32()&0xff)<<20|flow)
		b.SetTrafficClass(uint8(tc))
		var g layers.IPv6
		if err := g.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
			t.Fatal(err)
		}
		if g.Version != 6 || g.TrafficClass != uint8(tc) || g.FlowLabel != flow {
			t.Fatalf("SetTrafficClass(%#02x): gopacket version %d traffic class %#02x flow %#05x, want flow %#05x",
				tc, g.Version, g.TrafficClass, g.FlowLabel, flow)
		}
		if b.TrafficClass() != uint8(tc) || b.FlowLabel() != flow {
			t.Fatalf("SetTrafficClass(%#02x): TrafficClass %#02x FlowLabel %#05x", tc, b.TrafficClass(), b.FlowLabel())
		}
	}

	for _, n := range []uint16{0, 1, 10, 0xffff} {
		b.SetPayloadLen(n)
		if b.PayloadLen() != n || be.Uint16(b[4:]) != n {
			t.Errorf("SetPayloadLen(%d): PayloadLen %d", n, b.PayloadLen())
		}
	}
	b.SetPayloadLen(10)

	for hop := range 256 {
		b[7] = uint8(hop)
		want := uint8(hop - 1)
		if got := b.DecHopLimit(); got != want || b.HopLimit() != want {
			t.Errorf("DecHopLimit from %d = %d, HopLimit %d, want %d", hop, got, b.HopLimit(), want)
		}
	}
}

func TestIPv6EncodeDecodesInGopacket(t *testing.T) {
	r := newRand(t)
	tests := []struct {
		name       string
		f          IPv6Fields
		payloadLen int
		wantFlow   uint32
	}{
		{"UDP", IPv6Fields{NextHeader: ProtoUDP, HopLimit: 64, Src: [16]byte{0x20, 0x01, 0xd, 0xb8, 15: 1},
			Dst: [16]byte{0x20, 0x01, 0xd, 0xb8, 15: 2}}, 8, 0},
		{"all fields set", IPv6Fields{TrafficClass: 0xff, FlowLabel: 0xfffff, NextHeader: 0xff, HopLimit: 0xff,
			Src: [16]byte{0: 0xff, 15: 0xff}, Dst: [16]byte{0: 0xfe, 15: 0x80}}, 1, 0xfffff},
		{"flow label wider than 20 bits", IPv6Fields{TrafficClass: 0x01, FlowLabel: 0xfff12345, NextHeader: ProtoTCP,
			HopLimit: 1}, 20, 0x12345},
		{"hop-by-hop first", IPv6Fields{TrafficClass: 0x80, FlowLabel: 1, NextHeader: IPv6HopByHop, HopLimit: 1}, 8, 1},
	}
	for i := range 50 {
		fl := r.Uint32()
		tests = append(tests, struct {
			name       string
			f          IPv6Fields
			payloadLen int
			wantFlow   uint32
		}{fmt.Sprintf("random %d", i), IPv6Fields{
			TrafficClass: uint8(r.Uint32()), FlowLabel: fl, NextHeader: 253, HopLimit: uint8(r.Uint32()),
			Src: [16]byte(randBytes(r, 16)), Dst: [16]byte(randBytes(r, 16)),
		}, 1 + r.IntN(1500), fl & 0xfffff})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.PayloadLen = uint16(tt.payloadLen)
			b := IPv6(randBytes(r, IPv6Len+tt.payloadLen))
			if tt.f.NextHeader == IPv6HopByHop {
				copy(b[IPv6Len:], []byte{253, 0, 1, 4, 0, 0, 0, 0}) // PadN
			}
			b.Encode(&tt.f)
			if !b.IsValid() {
				t.Fatal("IsValid = false after Encode")
			}
			var g layers.IPv6
			if err := g.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
				t.Fatalf("gopacket: %v", err)
			}
			if g.Version != 6 || g.TrafficClass != tt.f.TrafficClass || g.FlowLabel != tt.wantFlow ||
				g.Length != tt.f.PayloadLen || uint8(g.NextHeader) != tt.f.NextHeader || g.HopLimit != tt.f.HopLimit ||
				!g.SrcIP.Equal(net.IP(tt.f.Src[:])) || !g.DstIP.Equal(net.IP(tt.f.Dst[:])) {
				t.Errorf("gopacket decoded %+v\nwant %+v (flow %#05x)", g, tt.f, tt.wantFlow)
			}
			checkIPv6(t, b, &g)
		})
	}
}
