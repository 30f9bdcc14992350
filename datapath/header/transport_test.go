package header

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestUDPMatchesGopacket(t *testing.T) {
	tests := []struct {
		name     string
		udp      *layers.UDP
		payload  []byte
		v6       bool
		trailer  int
		noChksum bool
	}{
		{name: "IPv4 empty payload", udp: &layers.UDP{SrcPort: 1, DstPort: 2}},
		{name: "IPv4 odd payload", udp: &layers.UDP{SrcPort: 40000, DstPort: 40001}, payload: []byte("odd")},
		{name: "IPv4 VXLAN port", udp: &layers.UDP{SrcPort: 51234, DstPort: 4790}, payload: bytes.Repeat([]byte{7}, 64)},
		{name: "IPv4 no checksum", udp: &layers.UDP{SrcPort: 65535, DstPort: 65535}, payload: []byte("x"), noChksum: true},
		{name: "IPv4 with trailing bytes", udp: &layers.UDP{SrcPort: 1000, DstPort: 2000}, payload: []byte("abc"), trailer: 9},
		{name: "IPv6 1400-byte payload", udp: &layers.UDP{SrcPort: 40000, DstPort: 40001}, payload: bytes.Repeat([]byte{0xfe}, 1400), v6: true},
		{name: "IPv6 empty payload", udp: &layers.UDP{SrcPort: 0, DstPort: 9}, v6: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var net gopacket.SerializableLayer
			var nl gopacket.NetworkLayer
			if tt.v6 {
				ip := ipv6Layer(t, layers.IPProtocolUDP)
				net, nl = ip, ip
			} else {
				ip := ipv4Layer(layers.IPProtocolUDP, ip4(10, 0, 0, 1), ip4(10, 0, 0, 2))
				net, nl = ip, ip
			}
			if err := tt.udp.SetNetworkLayerForChecksum(nl); err != nil {
				t.Fatal(err)
			}
			data := serialize(t, net, tt.udp, gopacket.Payload(tt.payload))
			first := layers.LayerTypeIPv4
			hl := 20
			if tt.v6 {
				first, hl = layers.LayerTypeIPv6, 40
			}
			if tt.noChksum {
				data[hl+6], data[hl+7] = 0, 0
			}
			p := decodeFirst(t, data, first)
			verifyChecksums(t, p)
			g := layerOf[*layers.UDP](t, p, layers.LayerTypeUDP)
			u := UDP(append(data[hl:], make([]byte, tt.trailer)...))
			if !u.IsValid() {
				t.Fatal("IsValid = false")
			}
			if u.SrcPort() != uint16(g.SrcPort) || u.DstPort() != uint16(g.DstPort) {
				t.Errorf("ports %d, %d, want %d, %d", u.SrcPort(), u.DstPort(), g.SrcPort, g.DstPort)
			}
			if u.Length() != g.Length {
				t.Errorf("Length = %d, want %d", u.Length(), g.Length)
			}
			if u.Checksum() != g.Checksum {
				t.Errorf("Checksum = %#04x, want %#04x", u.Checksum(), g.Checksum)
			}
			if !bytes.Equal(u.Payload(), g.Payload) || !bytes.Equal(u.Payload(), tt.payload) {
				t.Errorf("Payload = %q, want %q", u.Payload(), g.Payload)
			}
			u.SetChecksum(0x1234)
			if u.Checksum() != 0x1234 || be.Uint16(u[6:]) != 0x1234 {
				t.Errorf("SetChecksum(0x1234): Checksum %#04x", u.Checksum())
			}
		})
	}
}

// TestUDPEncodeDecodesInGopacket encodes UDP headers, checksummed with the
// pseudo-header functions, into IPv4 and IPv6 packets gopacket verifies.
func TestUDPEncodeDecodesInGopacket(t *testing.T) {
	r := newRand(t)
	for i := range 60 {
		v6 := i%2 == 1
		n := r.IntN(1472)
		if i < 4 {
			n = i // tiny payloads, odd and even
		}
		name := fmt.Sprintf("IPv4 %d-byte payload", n)
		if v6 {
			name = fmt.Sprintf("IPv6 %d-byte payload", n)
		}
		t.Run(name, func(t *testing.T) {
			src, dst := uint16(r.Uint32()), uint16(r.Uint32())
			length := uint16(UDPLen + n)
			var pkt []byte
			var seg UDP
			if v6 {
				pkt = make([]byte, IPv6Len+int(length))
				ip := IPv6(pkt)
				ip.Encode(&IPv6Fields{PayloadLen: length, NextHeader: ProtoUDP, HopLimit: 64,
					Src: [16]byte(randBytes(r, 16)), Dst: [16]byte(randBytes(r, 16))})
				seg = UDP(pkt[IPv6Len:])
				copy(seg[UDPLen:], randBytes(r, n))
				seg.Encode(src, dst, length, 0)
				c := ^Checksum(seg, PseudoHeaderChecksumIPv6(ProtoUDP, ip.Src(), ip.Dst(), uint32(length)))
				if c == 0 {
					c = 0xffff
				}
				seg.SetChecksum(c)
			} else {
				pkt = make([]byte, IPv4MinLen+int(length))
				ip := IPv4(pkt)
				ip.Encode(&IPv4Fields{TotalLen: uint16(len(pkt)), TTL: 64, Protocol: ProtoUDP,
					Src: [4]byte(randBytes(r, 4)), Dst: [4]byte(randBytes(r, 4))})
				seg = UDP(pkt[IPv4MinLen:])
				copy(seg[UDPLen:], randBytes(r, n))
				seg.Encode(src, dst, length, 0)
				c := ^Checksum(seg, PseudoHeaderChecksumIPv4(ProtoUDP, ip.Src(), ip.Dst(), length))
				if c == 0 {
					c = 0xffff // RFC 768: zero means no checksum
				}
				seg.Encode(src, dst, length, c)
			}
			if !seg.IsValid() {
				t.Fatal("IsValid = false")
			}
			first := layers.LayerTypeIPv4
			if v6 {
				first = layers.LayerTypeIPv6
			}
			p := decodeFirst(t, pkt, first)
			verifyChecksums(t, p)
			g := layerOf[*layers.UDP](t, p, layers.LayerTypeUDP)
			if uint16(g.SrcPort) != src || uint16(g.DstPort) != dst || g.Length != length || g.Checksum != seg.Checksum() {
				t.Errorf("gopacket decoded %+v", g)
			}
			if !bytes.Equal(g.Payload, seg.Payload()) {
				t.Error("payload differs")
			}
		})
	}
}

func TestTCPMatchesGopacket(t *testing.T) {
	ts := func(v, echo uint32) []byte {
		b := make([]byte, 8)
		be.PutUint32(b, v)
		be.PutUint32(b[4:], echo)
		return b
	}
	tests := []struct {
		name string
		tcp  *layers.TCP
		v6   bool
	}{
		{name: "SYN", tcp: &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 0xffffffff, SYN: true, Window: 64240}},
		{name: "SYN with options (data offset 10)", tcp: &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 12345, SYN: true, Window: 64240,
			Options: []layers.TCPOption{
				{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
				{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: ts(1, 0)},
				{OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
			}}},
		{name: "SYN-ACK over IPv6", tcp: &layers.TCP{SrcPort: 443, DstPort: 40000, Seq: 1, Ack: 12346, SYN: true, ACK: true, Window: 65535}, v6: true},
		{name: "all flags", tcp: &layers.TCP{SrcPort: 1, DstPort: 2, Seq: 3, Ack: 4, FIN: true, SYN: true, RST: true, PSH: true,
			ACK: true, URG: true, ECE: true, CWR: true, Window: 5, Urgent: 6}},
		{name: "RST", tcp: &layers.TCP{SrcPort: 80, DstPort: 65535, Seq: 0x80000000, RST: true}},
		{name: "FIN ECE CWR", tcp: &layers.TCP{SrcPort: 80, DstPort: 8080, Seq: 7, Ack: 0xfffffffe, FIN: true, ACK: true, ECE: true, CWR: true}},
		{name: "max options (data offset 15)", tcp: &layers.TCP{SrcPort: 5, DstPort: 6, ACK: true,
			Options: []layers.TCPOption{{OptionType: 253, OptionLength: 40, OptionData: make([]byte, 38)}}}, v6: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var net gopacket.SerializableLayer
			first, hl := layers.LayerTypeIPv4, IPv4MinLen
			if tt.v6 {
				ip := ipv6Layer(t, layers.IPProtocolTCP)
				_ = tt.tcp.SetNetworkLayerForChecksum(ip)
				net, first, hl = ip, layers.LayerTypeIPv6, IPv6Len
			} else {
				ip := ipv4Layer(layers.IPProtocolTCP, ip4(192, 0, 2, 1), ip4(192, 0, 2, 2))
				_ = tt.tcp.SetNetworkLayerForChecksum(ip)
				net = ip
			}
			data := serialize(t, net, tt.tcp, gopacket.Payload("segment data"))
			p := decodeFirst(t, data, first)
			verifyChecksums(t, p)
			g := layerOf[*layers.TCP](t, p, layers.LayerTypeTCP)
			seg := TCP(data[hl:])
			if !seg.IsValid() {
				t.Fatal("IsValid = false")
			}
			if seg.SrcPort() != uint16(g.SrcPort) || seg.DstPort() != uint16(g.DstPort) {
				t.Errorf("ports %d, %d, want %d, %d", seg.SrcPort(), seg.DstPort(), g.SrcPort, g.DstPort)
			}
			if seg.Seq() != g.Seq || seg.Ack() != g.Ack {
				t.Errorf("Seq, Ack = %d, %d, want %d, %d", seg.Seq(), seg.Ack(), g.Seq, g.Ack)
			}
			if seg.HeaderLen() != int(g.DataOffset)*4 || seg.HeaderLen() != len(g.Contents) {
				t.Errorf("HeaderLen = %d, want %d", seg.HeaderLen(), int(g.DataOffset)*4)
			}
			if len(tt.tcp.Options) > 0 && seg.HeaderLen() == TCPMinLen {
				t.Error("options did not lengthen the header")
			}
			for _, f := range []struct {
				name string
				flag uint8
				want bool
			}{
				{"FIN", TCPFlagFIN, g.FIN}, {"SYN", TCPFlagSYN, g.SYN}, {"RST", TCPFlagRST, g.RST}, {"PSH", TCPFlagPSH, g.PSH},
				{"ACK", TCPFlagACK, g.ACK}, {"URG", TCPFlagURG, g.URG}, {"ECE", TCPFlagECE, g.ECE}, {"CWR", TCPFlagCWR, g.CWR},
			} {
				if got := seg.Flags()&f.flag != 0; got != f.want {
					t.Errorf("Flags() = %#02x: %s is %v, want %v", seg.Flags(), f.name, got, f.want)
				}
			}
			if seg.Checksum() != g.Checksum {
				t.Errorf("Checksum = %#04x, want %#04x", seg.Checksum(), g.Checksum)
			}

			// Recompute the checksum with the pseudo-header functions.
			var pseudo uint16
			if tt.v6 {
				ip := IPv6(data)
				pseudo = PseudoHeaderChecksumIPv6(ProtoTCP, ip.Src(), ip.Dst(), uint32(len(seg)))
			} else {
				ip := IPv4(data)
				pseudo = PseudoHeaderChecksumIPv4(ProtoTCP, ip.Src(), ip.Dst(), uint16(len(seg)))
			}
			if Checksum(seg, pseudo) != 0xffff {
				t.Errorf("segment does not verify: sum %#04x", Checksum(seg, pseudo))
			}
			seg.SetChecksum(0)
			seg.SetChecksum(^Checksum(seg, pseudo))
			if seg.Checksum() != g.Checksum {
				t.Errorf("recomputed checksum %#04x, gopacket %#04x", seg.Checksum(), g.Checksum)
			}
		})
	}
}

func TestICMPv4MatchesGopacket(t *testing.T) {
	tests := []struct {
		name      string
		typ, code uint8
		id, seq   uint16
		isError   bool
	}{
		{"echo request", ICMPv4EchoRequest, 0, 0x1234, 1, false},
		{"echo reply", ICMPv4EchoReply, 0, 0xffff, 0xffff, false},
		{"fragmentation needed", ICMPv4DestUnreachable, ICMPv4CodeFragNeeded, 0, 1400, true},
		{"host unreachable", ICMPv4DestUnreachable, ICMPv4CodeHostUnreachable, 0, 0, true},
		{"source quench", 4, 0, 0, 0, true},
		{"redirect", 5, 1, 0xc000, 0x0201, true},
		{"TTL exceeded", ICMPv4TimeExceeded, ICMPv4CodeTTLExceeded, 0, 0, true},
		{"parameter problem", 12, 0, 0x1400, 0, true},
		{"timestamp", 13, 0, 9, 9, false},
		{"router advertisement", 9, 0, 0x0101, 0x0708, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := serialize(t, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(tt.typ, tt.code), Id: tt.id, Seq: tt.seq},
				gopacket.Payload("quoted or echoed data"))
			p := decodeFirst(t, data, layers.LayerTypeICMPv4)
			verifyChecksums(t, p)
			g := layerOf[*layers.ICMPv4](t, p, layers.LayerTypeICMPv4)
			m := ICMPv4(data)
			if !m.IsValid() {
				t.Fatal("IsValid = false")
			}
			if m.Type() != g.TypeCode.Type() || m.Code() != g.TypeCode.Code() {
				t.Errorf("Type, Code = %d, %d, want %d, %d", m.Type(), m.Code(), g.TypeCode.Type(), g.TypeCode.Code())
			}
			if m.Checksum() != g.Checksum || Checksum(m, 0) != 0xffff {
				t.Errorf("Checksum = %#04x, want %#04x (sum %#04x)", m.Checksum(), g.Checksum, Checksum(m, 0))
			}
			if m.ID() != g.Id || m.Seq() != g.Seq {
				t.Errorf("ID, Seq = %d, %d, want %d, %d", m.ID(), m.Seq(), g.Id, g.Seq)
			}
			if m.MTU() != g.Seq { // RFC 1191: the next-hop MTU is the low half of the rest of header
				t.Errorf("MTU = %d, want %d", m.MTU(), g.Seq)
			}
			if m.IsError() != tt.isError {
				t.Errorf("IsError = %v, want %v", m.IsError(), tt.isError)
			}
			m.SetChecksum(0)
			m.SetChecksum(^Checksum(m, 0))
			if m.Checksum() != g.Checksum {
				t.Errorf("recomputed checksum %#04x, gopacket %#04x", m.Checksum(), g.Checksum)
			}
		})
	}
}

func TestICMPv6MatchesGopacket(t *testing.T) {
	tests := []struct {
		name      string
		typ, code uint8
		echo      bool
		id        uint16
		isError   bool
	}{
		{"echo request", ICMPv6EchoRequest, 0, true, 0x1234, false},
		{"echo reply", ICMPv6EchoReply, 0, true, 0xffff, false},
		{"destination unreachable", ICMPv6DestUnreachable, 4, false, 0, true},
		{"packet too big", ICMPv6PacketTooBig, 0, false, 0, true},
		{"time exceeded", ICMPv6TimeExceeded, 0, false, 0, true},
		{"parameter problem", ICMPv6ParamProblem, 1, false, 0, true},
		{"private experimentation error", 127, 0, false, 0, true},
		{"private experimentation info", 255, 0, false, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip := ipv6Layer(t, layers.IPProtocolICMPv6)
			icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(tt.typ, tt.code)}
			_ = icmp.SetNetworkLayerForChecksum(ip)
			ls := []gopacket.SerializableLayer{ip, icmp}
			if tt.echo {
				ls = append(ls, &layers.ICMPv6Echo{Identifier: tt.id, SeqNumber: 77})
			} else {
				ls = append(ls, gopacket.Payload("\x00\x00\x05\x00")) // rest of header: MTU, pointer or unused
			}
			ls = append(ls, gopacket.Payload("quoted packet..."))
			data := serialize(t, ls...)
			p := decodeFirst(t, data, layers.LayerTypeIPv6)
			verifyChecksums(t, p)
			g := layerOf[*layers.ICMPv6](t, p, layers.LayerTypeICMPv6)
			m := ICMPv6(data[IPv6Len:])
			if !m.IsValid() {
				t.Fatal("IsValid = false")
			}
			if m.Type() != g.TypeCode.Type() || m.Code() != g.TypeCode.Code() {
				t.Errorf("Type, Code = %d, %d, want %d, %d", m.Type(), m.Code(), g.TypeCode.Type(), g.TypeCode.Code())
			}
			if m.Checksum() != g.Checksum {
				t.Errorf("Checksum = %#04x, want %#04x", m.Checksum(), g.Checksum)
			}
			if tt.echo {
				e := layerOf[*layers.ICMPv6Echo](t, p, layers.LayerTypeICMPv6Echo)
				if m.ID() != e.Identifier {
					t.Errorf("ID = %d, want %d", m.ID(), e.Identifier)
				}
			}
			if m.IsError() != tt.isError {
				t.Errorf("IsError = %v, want %v", m.IsError(), tt.isError)
			}
			ip6 := IPv6(data)
			pseudo := PseudoHeaderChecksumIPv6(ProtoICMPv6, ip6.Src(), ip6.Dst(), uint32(len(m)))
			m.SetChecksum(0)
			m.SetChecksum(^Checksum(m, pseudo))
			if m.Checksum() != g.Checksum {
				t.Errorf("recomputed checksum %#04x, gopacket %#04x", m.Checksum(), g.Checksum)
			}
		})
	}
}

func TestVXLANMatchesGopacket(t *testing.T) {
	tests := []struct {
		name string
		vx   *layers.VXLAN
	}{
		{"VNI 0", &layers.VXLAN{ValidIDFlag: true, VNI: 0}},
		{"VNI 1", &layers.VXLAN{ValidIDFlag: true, VNI: 1}},
		{"VNI max", &layers.VXLAN{ValidIDFlag: true, VNI: 0xffffff}},
		{"VNI with group policy", &layers.VXLAN{ValidIDFlag: true, VNI: 0x123456, GBPExtension: true, GBPApplied: true,
			GBPGroupPolicyID: 0xbeef}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := serialize(t, tt.vx, gopacket.Payload("inner frame"))
			g := layerOf[*layers.VXLAN](t, decodeFirst(t, data, layers.LayerTypeVXLAN), layers.LayerTypeVXLAN)
			v := VXLAN(data)
			if v.IsValid() != g.ValidIDFlag {
				t.Errorf("IsValid = %v, gopacket I flag %v", v.IsValid(), g.ValidIDFlag)
			}
			if v.VNI() != g.VNI {
				t.Errorf("VNI = %#06x, want %#06x", v.VNI(), g.VNI)
			}
		})
	}
}

func TestVXLANEncodeDecodesInGopacket(t *testing.T) {
	r := newRand(t)
	tests := []struct {
		name    string
		vni     uint32
		wantVNI uint32
	}{
		{"0", 0, 0},
		{"1", 1, 1},
		{"max", 0xffffff, 0xffffff},
		{"wider than 24 bits keeps the low 24", 0xff123456, 0x123456},
		{"random", r.Uint32() & 0xffffff, 0},
	}
	tests[len(tests)-1].wantVNI = tests[len(tests)-1].vni
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := VXLAN(randBytes(r, VXLANLen)) // garbage must be overwritten
			v.Encode(tt.vni)
			if !v.IsValid() || v.VNI() != tt.wantVNI {
				t.Errorf("IsValid %v VNI %#06x, want %#06x", v.IsValid(), v.VNI(), tt.wantVNI)
			}
			var g layers.VXLAN
			if err := g.DecodeFromBytes(v, gopacket.NilDecodeFeedback); err != nil {
				t.Fatal(err)
			}
			if !g.ValidIDFlag || g.VNI != tt.wantVNI || g.GBPExtension || g.GBPApplied || g.GBPDontLearn || g.GBPGroupPolicyID != 0 {
				t.Errorf("gopacket decoded %+v", g)
			}
			if !bytes.Equal(v[1:4], []byte{0, 0, 0}) || v[7] != 0 || v[0] != VXLANFlagVNI {
				t.Errorf("reserved bits set: % x", v)
			}
		})
	}
}
