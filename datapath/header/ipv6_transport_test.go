package header

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// ext is one IPv6 extension header of a chain under construction: its
// protocol number and a constructor given the header that follows it.
type ext struct {
	proto layers.IPProtocol
	layer func(next layers.IPProtocol) gopacket.SerializableLayer
}

// tlvOption returns one option that fills an options header of size bytes
// (a multiple of 8) exactly, so that gopacket adds no padding. Type 0x1e is
// the RFC 3692 experimental type with "skip" action.
func tlvOption(size int) (typ uint8, data []byte) { return 0x1e, make([]byte, size-4) }

func hopByHop(size int) ext {
	return ext{layers.IPProtocolIPv6HopByHop, func(next layers.IPProtocol) gopacket.SerializableLayer {
		h := &layers.IPv6HopByHop{}
		h.NextHeader = next
		typ, data := tlvOption(size)
		h.Options = []*layers.IPv6HopByHopOption{{OptionType: typ, OptionData: data}}
		return h
	}}
}

func destOpts(size int) ext {
	return ext{layers.IPProtocolIPv6Destination, func(next layers.IPProtocol) gopacket.SerializableLayer {
		h := &layers.IPv6Destination{}
		h.NextHeader = next
		typ, data := tlvOption(size)
		h.Options = []*layers.IPv6DestinationOption{{OptionType: typ, OptionData: data}}
		return h
	}}
}

// routing returns a Segment Routing header (type 4) of size bytes.
func routing(size int, segmentsLeft uint8) ext {
	return ext{layers.IPProtocolIPv6Routing, func(next layers.IPProtocol) gopacket.SerializableLayer {
		h := &layers.IPv6Routing{RoutingType: 4, SegmentsLeft: segmentsLeft, Reserved: make([]byte, 4), Data: make([]byte, size-8)}
		h.NextHeader = next
		for i := range h.Data {
			h.Data[i] = byte(i)
		}
		return h
	}}
}

// fragment returns a fragment header; offset is in 8-byte units.
func fragment(offset uint16, more bool, reserved uint8) ext {
	return ext{layers.IPProtocolIPv6Fragment, func(next layers.IPProtocol) gopacket.SerializableLayer {
		return &layers.IPv6Fragment{NextHeader: next, FragmentOffset: offset, MoreFragments: more, Reserved2: reserved,
			Identification: 0xdeadbeef}
	}}
}

// ah returns an Authentication Header (RFC 4302) with an ICV of icv bytes.
// gopacket cannot serialize AH, so the bytes are built here.
func ah(icv int) ext {
	return ext{layers.IPProtocolAH, func(next layers.IPProtocol) gopacket.SerializableLayer {
		b := make([]byte, 12+icv)
		b[0], b[1] = uint8(next), uint8(len(b)/4-2)
		binary.BigEndian.PutUint32(b[4:], 0x1000) // SPI
		binary.BigEndian.PutUint32(b[8:], 7)      // sequence number
		for i := 12; i < len(b); i++ {
			b[i] = 0xac
		}
		return gopacket.Payload(b)
	}}
}

// mobility returns a Mobility header (RFC 6275) of size bytes, which gopacket
// does not decode.
func mobility(size int) ext {
	return ext{135, func(next layers.IPProtocol) gopacket.SerializableLayer {
		b := make([]byte, size)
		b[0], b[1], b[2] = uint8(next), uint8(size/8-1), 5 // MH type 5: binding update
		return gopacket.Payload(b)
	}}
}

// raw returns an extension header given as bytes; byte 0 is set to next.
func raw(proto layers.IPProtocol, b ...byte) ext {
	return ext{proto, func(next layers.IPProtocol) gopacket.SerializableLayer {
		b := append([]byte(nil), b...)
		b[0] = uint8(next)
		return gopacket.Payload(b)
	}}
}

func repeatExt(n int, e ext) []ext {
	es := make([]ext, n)
	for i := range es {
		es[i] = e
	}
	return es
}

// v6Case is one IPv6 packet for the IPv6Transport tests.
type v6Case struct {
	name      string
	exts      []ext
	upper     layers.IPProtocol
	payload   func(tb testing.TB) []gopacket.SerializableLayer // nil: no upper-layer bytes
	mutate    func(b []byte) []byte
	wantProto uint8
	wantOff   int
	wantFrag  bool
	wantOK    bool
	// noGopacket: gopacket decodes the chain differently by design (a
	// header it does not know, a malformed chain, no limit on its length).
	noGopacket bool
}

func tcpPayload(tb testing.TB) []gopacket.SerializableLayer {
	return []gopacket.SerializableLayer{&layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1, Ack: 2, ACK: true, PSH: true,
		Window: 512}, gopacket.Payload("GET / HTTP/1.1\r\n")}
}

func udpPayload(tb testing.TB) []gopacket.SerializableLayer {
	return []gopacket.SerializableLayer{&layers.UDP{SrcPort: 40000, DstPort: 40001}, gopacket.Payload("datagram")}
}

func icmpv6Payload(tb testing.TB) []gopacket.SerializableLayer {
	return []gopacket.SerializableLayer{&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)},
		&layers.ICMPv6Echo{Identifier: 9, SeqNumber: 1}, gopacket.Payload("ping")}
}

func espPayload(tb testing.TB) []gopacket.SerializableLayer {
	return []gopacket.SerializableLayer{gopacket.Payload("\x00\x00\x10\x00\x00\x00\x00\x01encrypted....")}
}

func junkPayload(tb testing.TB) []gopacket.SerializableLayer {
	return []gopacket.SerializableLayer{gopacket.Payload("bytes a receiver ignores")}
}

func ipv6InIPv6(tb testing.TB) []gopacket.SerializableLayer {
	return []gopacket.SerializableLayer{ipv6Layer(tb, layers.IPProtocolUDP), &layers.UDP{SrcPort: 1, DstPort: 2},
		gopacket.Payload("inner")}
}

func setPayloadLen(n uint16) func([]byte) []byte {
	return func(b []byte) []byte { binary.BigEndian.PutUint16(b[4:], n); return b }
}

func setByte(i int, v byte) func([]byte) []byte {
	return func(b []byte) []byte { b[i] = v; return b }
}

func v6Cases() []v6Case {
	cases := []v6Case{
		{name: "TCP", upper: layers.IPProtocolTCP, payload: tcpPayload, wantProto: 6, wantOff: 40, wantOK: true},
		{name: "UDP", upper: layers.IPProtocolUDP, payload: udpPayload, wantProto: 17, wantOff: 40, wantOK: true},
		{name: "ICMPv6", upper: layers.IPProtocolICMPv6, payload: icmpv6Payload, wantProto: 58, wantOff: 40, wantOK: true},
		{name: "hop-by-hop TCP", exts: []ext{hopByHop(8)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			wantProto: 6, wantOff: 48, wantOK: true},
		{name: "24-byte hop-by-hop UDP", exts: []ext{hopByHop(24)}, upper: layers.IPProtocolUDP, payload: udpPayload,
			wantProto: 17, wantOff: 64, wantOK: true},
		{name: "routing TCP", exts: []ext{routing(24, 0)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			wantProto: 6, wantOff: 64, wantOK: true},
		{name: "destination options ICMPv6", exts: []ext{destOpts(16)}, upper: layers.IPProtocolICMPv6, payload: icmpv6Payload,
			wantProto: 58, wantOff: 56, wantOK: true},
		{name: "hop-by-hop routing destination options TCP", exts: []ext{hopByHop(8), routing(40, 1), destOpts(8)},
			upper: layers.IPProtocolTCP, payload: tcpPayload, wantProto: 6, wantOff: 96, wantOK: true},
		{name: "atomic fragment TCP", exts: []ext{fragment(0, false, 0)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			wantProto: 6, wantOff: 48, wantFrag: true, wantOK: true},
		{name: "first fragment UDP", exts: []ext{fragment(0, true, 0)}, upper: layers.IPProtocolUDP, payload: udpPayload,
			wantProto: 17, wantOff: 48, wantFrag: true, wantOK: true},
		{name: "first fragment with reserved bits set", exts: []ext{fragment(0, true, 3)}, upper: layers.IPProtocolUDP,
			payload: udpPayload, wantProto: 17, wantOff: 48, wantFrag: true, wantOK: true},
		{name: "non-first fragment", exts: []ext{fragment(185, true, 0)}, upper: layers.IPProtocolTCP, payload: junkPayload,
			wantProto: 6, wantOff: 48, wantFrag: true, wantOK: true},
		{name: "last fragment at offset 1", exts: []ext{fragment(1, false, 0)}, upper: layers.IPProtocolUDP, payload: junkPayload,
			wantProto: 17, wantOff: 48, wantFrag: true, wantOK: true},
		{name: "last fragment at max offset", exts: []ext{fragment(0x1fff, false, 3)}, upper: layers.IPProtocolUDP,
			payload: junkPayload, wantProto: 17, wantOff: 48, wantFrag: true, wantOK: true},
		{name: "non-first fragment after hop-by-hop and routing stops before AH", exts: []ext{hopByHop(8), routing(24, 0),
			fragment(2, true, 0), ah(12)}, upper: layers.IPProtocolTCP, payload: junkPayload,
			wantProto: 51, wantOff: 80, wantFrag: true, wantOK: true},
		{name: "AH TCP", exts: []ext{ah(12)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			wantProto: 6, wantOff: 64, wantOK: true},
		{name: "AH with 20-byte ICV then destination options UDP", exts: []ext{ah(20), destOpts(8)}, upper: layers.IPProtocolUDP,
			payload: udpPayload, wantProto: 17, wantOff: 80, wantOK: true},
		{name: "first fragment then AH TCP", exts: []ext{fragment(0, true, 0), ah(12)}, upper: layers.IPProtocolTCP,
			payload: tcpPayload, wantProto: 6, wantOff: 72, wantFrag: true, wantOK: true},
		{name: "every type in RFC 8200 order", exts: []ext{hopByHop(8), destOpts(8), routing(24, 0), fragment(0, true, 0),
			ah(12), destOpts(16)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			wantProto: 6, wantOff: 128, wantFrag: true, wantOK: true},
		{name: "ESP", upper: layers.IPProtocolESP, payload: espPayload, wantProto: 50, wantOff: 40, wantOK: true},
		{name: "hop-by-hop then ESP", exts: []ext{hopByHop(8)}, upper: layers.IPProtocolESP, payload: espPayload,
			wantProto: 50, wantOff: 48, wantOK: true},
		{name: "first fragment then ESP", exts: []ext{fragment(0, true, 0)}, upper: layers.IPProtocolESP, payload: espPayload,
			wantProto: 50, wantOff: 48, wantFrag: true, wantOK: true},
		{name: "no next header", upper: layers.IPProtocolNoNextHeader, wantProto: 59, wantOff: 40, wantOK: true},
		{name: "no next header with ignored bytes", upper: layers.IPProtocolNoNextHeader, payload: junkPayload,
			wantProto: 59, wantOff: 40, wantOK: true},
		{name: "destination options then no next header", exts: []ext{destOpts(8)}, upper: layers.IPProtocolNoNextHeader,
			payload: junkPayload, wantProto: 59, wantOff: 48, wantOK: true},
		{name: "mobility header", exts: []ext{hopByHop(8), mobility(16)}, upper: layers.IPProtocolNoNextHeader,
			wantProto: 59, wantOff: 64, wantOK: true, noGopacket: true},
		{name: "IPv6 in IPv6", exts: []ext{destOpts(8)}, upper: layers.IPProtocolIPv6, payload: ipv6InIPv6,
			wantProto: 41, wantOff: 48, wantOK: true},
		{name: "unassigned protocol", exts: []ext{routing(8, 0)}, upper: 253, payload: junkPayload,
			wantProto: 253, wantOff: 48, wantOK: true},

		// Chain length: the limit is maxIPv6ExtHeaders extension headers.
		{name: "8 mixed headers (the limit)", exts: []ext{hopByHop(8), destOpts(8), routing(24, 0), fragment(0, true, 0),
			ah(12), destOpts(8), destOpts(16), destOpts(8)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			wantProto: 6, wantOff: 40 + 8 + 8 + 24 + 8 + 24 + 8 + 16 + 8, wantFrag: true, wantOK: true},
		{name: "9 mixed headers (over the limit)", exts: []ext{hopByHop(8), destOpts(8), routing(24, 0), fragment(0, true, 0),
			ah(12), destOpts(8), destOpts(16), destOpts(8), destOpts(8)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			noGopacket: true},
		{name: "100 destination options", exts: repeatExt(100, destOpts(8)), upper: layers.IPProtocolTCP, payload: tcpPayload,
			noGopacket: true},
		{name: "9 destination options then ESP", exts: repeatExt(9, destOpts(8)), upper: layers.IPProtocolESP,
			payload: espPayload, noGopacket: true},
		{name: "8 headers then non-first fragment", exts: append(repeatExt(8, destOpts(8)), fragment(9, false, 0)),
			upper: layers.IPProtocolTCP, payload: junkPayload, noGopacket: true},

		// Truncated chains and lengths past the payload.
		{name: "hop-by-hop cut by payload length", exts: []ext{hopByHop(8)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			mutate: setPayloadLen(7), noGopacket: true},
		{name: "hop-by-hop cut by buffer", exts: []ext{hopByHop(8)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			mutate: func(b []byte) []byte { return setPayloadLen(4)(b)[:44] }, noGopacket: true},
		{name: "hop-by-hop length past payload", exts: []ext{hopByHop(8)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			mutate: setByte(41, 200), noGopacket: true},
		{name: "routing length one unit past payload", exts: []ext{routing(24, 0)}, upper: layers.IPProtocolNoNextHeader,
			mutate: setByte(41, 3), noGopacket: true},
		{name: "AH length one unit past payload", exts: []ext{ah(12)}, upper: layers.IPProtocolNoNextHeader,
			mutate: setByte(41, 5), noGopacket: true},
		{name: "AH with 4 bytes left", exts: []ext{destOpts(8), raw(layers.IPProtocolAH, 0, 0, 0, 0)},
			upper: layers.IPProtocolTCP, noGopacket: true},
		{name: "fragment header with 6 bytes left", exts: []ext{destOpts(8), raw(layers.IPProtocolIPv6Fragment, 0, 0, 0, 0, 0, 0)},
			upper: layers.IPProtocolTCP, noGopacket: true},
		{name: "destination options with 1 byte left", exts: []ext{hopByHop(8), raw(layers.IPProtocolIPv6Destination, 0)},
			upper: layers.IPProtocolTCP, noGopacket: true},
		{name: "second header cut by payload length", exts: []ext{hopByHop(8), destOpts(16)}, upper: layers.IPProtocolTCP,
			payload: tcpPayload, mutate: setPayloadLen(8 + 15), noGopacket: true},
		{name: "jumbogram payload length 0", exts: []ext{hopByHop(8)}, upper: layers.IPProtocolTCP, payload: tcpPayload,
			mutate: setPayloadLen(0), noGopacket: true},
		{name: "chain ends exactly at payload end", exts: []ext{hopByHop(8), destOpts(8)}, upper: layers.IPProtocolTCP,
			payload: tcpPayload, mutate: setPayloadLen(16), wantProto: 6, wantOff: 56, wantOK: true, noGopacket: true},
		{name: "payload length 0 without extension headers", upper: layers.IPProtocolTCP, payload: tcpPayload,
			mutate: setPayloadLen(0), wantProto: 6, wantOff: 40, wantOK: true, noGopacket: true},
	}
	for n := 1; n <= 10; n++ {
		c := v6Case{name: fmt.Sprintf("%d destination options", n), exts: repeatExt(n, destOpts(8)),
			upper: layers.IPProtocolUDP, payload: udpPayload}
		if n <= maxIPv6ExtHeaders {
			c.wantProto, c.wantOff, c.wantOK = 17, 40+8*n, true
		} else {
			c.noGopacket = true
		}
		cases = append(cases, c)
	}
	return cases
}

// v6CaseNamed returns the case of v6Cases with the given name.
func v6CaseNamed(tb testing.TB, name string) v6Case {
	for _, c := range v6Cases() {
		if c.name == name {
			return c
		}
	}
	tb.Fatalf("no IPv6 case %q", name)
	return v6Case{}
}

// build serializes the case's packet with gopacket.
func (c v6Case) build(tb testing.TB) []byte {
	ip := ipv6Layer(tb, c.upper)
	ls := []gopacket.SerializableLayer{ip}
	next := c.upper
	chain := make([]gopacket.SerializableLayer, len(c.exts))
	for i := len(c.exts) - 1; i >= 0; i-- {
		chain[i] = c.exts[i].layer(next)
		next = c.exts[i].proto
	}
	ip.NextHeader = next
	ls = append(ls, chain...)
	if c.payload != nil {
		for _, l := range c.payload(tb) {
			if l, ok := l.(interface {
				SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
			}); ok {
				_ = l.SetNetworkLayerForChecksum(ip)
			}
			ls = append(ls, l)
		}
	}
	b := serialize(tb, ls...)
	if c.mutate != nil {
		b = c.mutate(b)
	}
	return b
}

// gopacketTransport reads the answer IPv6Transport should give off gopacket's
// decode of b: the protocol after the last extension header, its offset,
// whether a fragment header was seen, and the upper layer gopacket decoded
// there (nil if none). gopacket stops at a first fragment's data; the walk
// decodes it on, as IPv6Transport does.
func gopacketTransport(b []byte) (proto uint8, off int, frag bool, upper gopacket.Layer) {
	opts := gopacket.DecodeOptions{NoCopy: true}
	ls := gopacket.NewPacket(b, layers.LayerTypeIPv6, opts).Layers()
	for len(ls) > 0 {
		l := ls[0]
		ls = ls[1:]
		var next layers.IPProtocol
		switch l := l.(type) {
		case *layers.IPv6:
			if off != 0 { // an inner packet
				return proto, off, frag, l
			}
			next = l.NextHeader
		case *layers.IPv6HopByHop:
			next = l.NextHeader
		case *layers.IPv6Routing:
			next = l.NextHeader
		case *layers.IPv6Destination:
			next = l.NextHeader
		case *layers.IPSecAH:
			next = l.NextHeader
		case *layers.IPv6Fragment:
			next = l.NextHeader
			frag = true
			if l.FragmentOffset != 0 {
				return uint8(next), off + len(l.Contents), frag, nil
			}
			if l.MoreFragments {
				ls = gopacket.NewPacket(l.Payload, next.LayerType(), opts).Layers()
			}
		case *gopacket.DecodeFailure:
			return proto, off, frag, nil
		default:
			return proto, off, frag, l
		}
		proto, off = uint8(next), off+len(l.LayerContents())
	}
	return proto, off, frag, nil
}

func TestIPv6Transport(t *testing.T) {
	for _, tt := range v6Cases() {
		t.Run(tt.name, func(t *testing.T) {
			b := IPv6(tt.build(t))
			if !b.IsValid() {
				t.Fatalf("test packet is not valid IPv6: % x", b)
			}
			proto, off, frag, ok := IPv6Transport(b)
			if proto != tt.wantProto || off != tt.wantOff || frag != tt.wantFrag || ok != tt.wantOK {
				t.Errorf("IPv6Transport = %d, %d, %v, %v; want %d, %d, %v, %v",
					proto, off, frag, ok, tt.wantProto, tt.wantOff, tt.wantFrag, tt.wantOK)
			}
			rp, ro, rf, rok := refIPv6Transport(b)
			if rp != proto || ro != off || rf != frag || rok != ok {
				t.Errorf("reference walk = %d, %d, %v, %v", rp, ro, rf, rok)
			}
			if tt.noGopacket {
				return
			}
			gp, goff, gfrag, upper := gopacketTransport(b)
			if gp != proto || goff != off || gfrag != frag {
				t.Errorf("gopacket's decode gives %d, %d, %v", gp, goff, gfrag)
			}
			if upper == nil || off >= len(b) {
				return
			}
			// The upper layer gopacket decoded starts at off.
			if c := upper.LayerContents(); len(c) == 0 || &c[0] != &b[off] {
				t.Errorf("gopacket's %v layer does not start at offset %d", upper.LayerType(), off)
			}
			switch g := upper.(type) {
			case *layers.TCP:
				if !TCP(b[off:]).IsValid() || TCP(b[off:]).SrcPort() != uint16(g.SrcPort) {
					t.Errorf("TCP at %d: src port %d, gopacket %d", off, TCP(b[off:]).SrcPort(), g.SrcPort)
				}
			case *layers.UDP:
				if !UDP(b[off:]).IsValid() || UDP(b[off:]).DstPort() != uint16(g.DstPort) {
					t.Errorf("UDP at %d: dst port %d, gopacket %d", off, UDP(b[off:]).DstPort(), g.DstPort)
				}
			}
		})
	}
}

// refIPv6Transport is the reference for IPv6Transport, written from its doc
// comment: at most maxIPv6ExtHeaders extension headers are skipped, each of
// which must fit in the payload.
func refIPv6Transport(b []byte) (proto uint8, off int, fragment, ok bool) {
	end := IPv6Len + int(binary.BigEndian.Uint16(b[4:6]))
	proto, off = b[6], IPv6Len
	for seen := 0; ; seen++ {
		switch proto {
		case IPv6HopByHop, IPv6Routing, IPv6DestOptions, IPv6Mobility, IPv6AH, IPv6Fragment:
		default:
			return proto, off, fragment, true
		}
		if seen == maxIPv6ExtHeaders || end-off < 8 {
			return 0, 0, false, false
		}
		size := 8
		switch proto {
		case IPv6AH:
			size = 4 * (int(b[off+1]) + 2)
		case IPv6HopByHop, IPv6Routing, IPv6DestOptions, IPv6Mobility:
			size = 8 * (int(b[off+1]) + 1)
		}
		if off+size > end {
			return 0, 0, false, false
		}
		if proto == IPv6Fragment {
			fragment = true
			if binary.BigEndian.Uint16(b[off+2:])>>3 != 0 {
				return b[off], off + size, true, true
			}
		}
		proto, off = b[off], off+size
	}
}
