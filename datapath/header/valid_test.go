package header

import (
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// validCase is one buffer and what the view's IsValid must say about it.
type validCase struct {
	name string
	b    []byte
	want bool
}

// mutated returns a copy of b changed by f.
func mutated(b []byte, f func(b []byte)) []byte {
	c := append([]byte(nil), b...)
	f(c)
	return c
}

func runValid(t *testing.T, isValid func([]byte) bool, tests []validCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isValid(tt.b); got != tt.want {
				t.Errorf("IsValid(% x) = %v, want %v", tt.b, got, tt.want)
			}
		})
	}
}

func TestEthernetIsValid(t *testing.T) {
	frame := make([]byte, EthernetLen)
	runValid(t, func(b []byte) bool { return Ethernet(b).IsValid() }, []validCase{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"one byte short", frame[:EthernetLen-1], false},
		{"header only", frame, true},
		{"with payload", make([]byte, 1514), true},
	})
}

func TestARPIsValid(t *testing.T) {
	a := make([]byte, ARPLen)
	ARP(a).Encode(ARPRequest, MAC{2}, [4]byte{10, 0, 0, 1}, MAC{}, [4]byte{10, 0, 0, 2})
	runValid(t, func(b []byte) bool { return ARP(b).IsValid() }, []validCase{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"one byte short", a[:ARPLen-1], false},
		{"exact", a, true},
		{"Ethernet padding", append(a[:ARPLen:ARPLen], make([]byte, 18)...), true},
		{"hardware type 6 (IEEE 802)", mutated(a, func(b []byte) { b[1] = 6 }), false},
		{"protocol type IPv6", mutated(a, func(b []byte) { be.PutUint16(b[2:], EtherTypeIPv6) }), false},
		{"hardware length 8", mutated(a, func(b []byte) { b[4] = 8 }), false},
		{"protocol length 16", mutated(a, func(b []byte) { b[5] = 16 }), false},
		{"unknown op is still a valid packet", mutated(a, func(b []byte) { b[7] = 9 }), true},
	})
}

func TestIPv4IsValid(t *testing.T) {
	h := make([]byte, IPv4MinLen)
	IPv4(h).Encode(&IPv4Fields{TotalLen: IPv4MinLen, TTL: 64, Protocol: ProtoUDP})
	// withIHL returns a header of IHL ihl, total length tl, in a buffer of n bytes.
	withIHL := func(ihl, tl, n int) []byte {
		b := make([]byte, n)
		copy(b, h)
		b[0] = 0x40 | byte(ihl)
		be.PutUint16(b[2:], uint16(tl))
		return b
	}
	tests := []validCase{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"one byte short of the fixed header", h[:IPv4MinLen-1], false},
		{"minimal", h, true},
		{"version 6", mutated(h, func(b []byte) { b[0] = 0x65 }), false},
		{"version 0", mutated(h, func(b []byte) { b[0] = 0x05 }), false},
		{"version 15", mutated(h, func(b []byte) { b[0] = 0xf5 }), false},
		{"total length one byte past buffer", withIHL(5, 101, 100), false},
		{"total length 0xffff", withIHL(5, 0xffff, 1500), false},
		{"total length fits with Ethernet padding", withIHL(5, 40, 60), true},
		{"total length less than 20", withIHL(5, 19, 60), false},
		{"total length 0 (TSO)", withIHL(5, 0, 60), false},
		{"IHL 6 total length 20", withIHL(6, 20, 60), false},
		{"IHL 6 total length 24", withIHL(6, 24, 24), true},
		{"IHL 15 total length 60", withIHL(15, 60, 60), true},
		{"IHL 15 buffer one byte short", withIHL(15, 60, 59), false},
		{"IHL 15 total length 59", withIHL(15, 59, 60), false},
	}
	for ihl := range 5 {
		tests = append(tests, validCase{"IHL " + string(rune('0'+ihl)), withIHL(ihl, 20, 20), false})
	}
	runValid(t, func(b []byte) bool { return IPv4(b).IsValid() }, tests)
}

func TestIPv6IsValid(t *testing.T) {
	h := make([]byte, IPv6Len)
	IPv6(h).Encode(&IPv6Fields{NextHeader: IPv6NoNext, HopLimit: 64})
	withPayload := func(pl, n int) []byte {
		b := make([]byte, n)
		copy(b, h)
		be.PutUint16(b[4:], uint16(pl))
		return b
	}
	runValid(t, func(b []byte) bool { return IPv6(b).IsValid() }, []validCase{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"one byte short of the fixed header", h[:IPv6Len-1], false},
		{"no payload", h, true},
		{"version 4", mutated(h, func(b []byte) { b[0] = 0x40 }), false},
		{"version 0", mutated(h, func(b []byte) { b[0] = 0x00 }), false},
		{"payload length one byte past buffer", withPayload(61, 100), false},
		{"payload length 0xffff", withPayload(0xffff, 1500), false},
		{"payload length exact", withPayload(60, 100), true},
		{"payload length with Ethernet padding", withPayload(6, 64), true},
		{"max payload length", withPayload(0xffff, IPv6Len+0xffff), true},
	})
}

func TestUDPIsValid(t *testing.T) {
	withLength := func(l, n int) []byte {
		b := make([]byte, n)
		UDP(b).Encode(1, 2, uint16(l), 0)
		return b
	}
	tests := []validCase{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"one byte short", withLength(8, 8)[:7], false},
		{"header only", withLength(8, 8), true},
		{"length one byte past buffer", withLength(9, 8), false},
		{"length 0xffff", withLength(0xffff, 1500), false},
		{"length less than buffer", withLength(10, 64), true},
		{"length equals buffer", withLength(1472, 1472), true},
	}
	for l := range 8 {
		tests = append(tests, validCase{"length " + string(rune('0'+l)), withLength(l, 64), false})
	}
	runValid(t, func(b []byte) bool { return UDP(b).IsValid() }, tests)
}

func TestTCPIsValid(t *testing.T) {
	withOffset := func(words, n int) []byte {
		b := make([]byte, n)
		b[12] = byte(words << 4)
		return b
	}
	tests := []validCase{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"one byte short", withOffset(5, 20)[:19], false},
		{"minimal", withOffset(5, 20), true},
		{"with payload", withOffset(5, 1460), true},
		{"data offset 6 in 20 bytes", withOffset(6, 20), false},
		{"data offset 6 in 24 bytes", withOffset(6, 24), true},
		{"data offset 15 in 60 bytes", withOffset(15, 60), true},
		{"data offset 15 one byte short", withOffset(15, 59), false},
		{"reserved bits set", mutated(withOffset(5, 20), func(b []byte) { b[12] |= 0x0f }), true},
	}
	for w := range 5 {
		tests = append(tests, validCase{"data offset " + string(rune('0'+w)), withOffset(w, 60), false})
	}
	runValid(t, func(b []byte) bool { return TCP(b).IsValid() }, tests)
}

func TestICMPIsValid(t *testing.T) {
	tests := []validCase{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"type and code only", make([]byte, 2), false},
		{"one byte short", make([]byte, 7), false},
		{"header only", make([]byte, 8), true},
		{"with data", make([]byte, 64), true},
	}
	t.Run("ICMPv4", func(t *testing.T) { runValid(t, func(b []byte) bool { return ICMPv4(b).IsValid() }, tests) })
	t.Run("ICMPv6", func(t *testing.T) { runValid(t, func(b []byte) bool { return ICMPv6(b).IsValid() }, tests) })
}

func TestVXLANIsValid(t *testing.T) {
	v := make([]byte, VXLANLen)
	VXLAN(v).Encode(42)
	runValid(t, func(b []byte) bool { return VXLAN(b).IsValid() }, []validCase{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"one byte short", v[:VXLANLen-1], false},
		{"header only", v, true},
		{"with inner frame", append(v[:VXLANLen:VXLANLen], make([]byte, 60)...), true},
		{"I flag clear", mutated(v, func(b []byte) { b[0] = 0 }), false},
		{"other flags without I", mutated(v, func(b []byte) { b[0] = 0xf7 }), false},
		{"other flags with I", mutated(v, func(b []byte) { b[0] = 0xff }), true},
	})
}

// TestIsValidOneByteShort cuts gopacket-built packets one byte short of what
// their length fields claim: every view rejects them.
func TestIsValidOneByteShort(t *testing.T) {
	src, dst := ip4(10, 0, 0, 1), ip4(10, 0, 0, 2)
	ip := ipv4Layer(layers.IPProtocolUDP, src, dst)
	ip.Options = recordRoute(8)
	udp := &layers.UDP{SrcPort: 1, DstPort: 2}
	_ = udp.SetNetworkLayerForChecksum(ip)
	v4 := serialize(t, ip, udp, gopacket.Payload("payload"))
	ip6 := ipv6Layer(t, layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: 1, DstPort: 2, SYN: true, Options: []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}}}}
	_ = tcp.SetNetworkLayerForChecksum(ip6)
	v6 := serialize(t, ip6, tcp)

	tests := []struct {
		name    string
		b       []byte
		isValid func([]byte) bool
	}{
		{"IPv4 with options", v4, func(b []byte) bool { return IPv4(b).IsValid() }},
		{"UDP", v4[28:], func(b []byte) bool { return UDP(b).IsValid() }},
		{"IPv6", v6, func(b []byte) bool { return IPv6(b).IsValid() }},
		{"TCP with options", v6[IPv6Len:], func(b []byte) bool { return TCP(b).IsValid() }},
		{"ARP", serialize(t, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: 1, SourceHwAddress: make([]byte, 6), SourceProtAddress: src,
			DstHwAddress: make([]byte, 6), DstProtAddress: dst}), func(b []byte) bool { return ARP(b).IsValid() }},
		{"VXLAN", serialize(t, &layers.VXLAN{ValidIDFlag: true, VNI: 7}), func(b []byte) bool { return VXLAN(b).IsValid() }},
		{"ICMPv4", serialize(t, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}), func(b []byte) bool { return ICMPv4(b).IsValid() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.isValid(tt.b) {
				t.Fatalf("IsValid = false for the whole packet % x", tt.b)
			}
			if tt.isValid(tt.b[:len(tt.b)-1]) {
				t.Errorf("IsValid = true one byte short: % x", tt.b[:len(tt.b)-1])
			}
		})
	}
}
