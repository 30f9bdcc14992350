package datapath

import (
	"net/netip"

	"github.com/tabbynet/tabby/datapath/header"
)

// L3Kind is what a frame carries above Ethernet.
type L3Kind uint8

// Kinds of L3 payload.
const (
	L3Unknown L3Kind = iota // garbage, truncated, or an EtherType we do not handle
	L3ARP
	L3IPv4
	L3IPv6
)

// Parsed is the decoded view of one frame: offsets into the frame and the
// fields the pipeline needs. One Parsed per batch slot is reused for every
// frame; Decode overwrites all of it.
type Parsed struct {
	// Kind is L3Unknown when decoding failed; Drop then says why.
	Kind L3Kind
	Drop DropReason
	// VLAN is the 802.1Q VLAN id, 0 when untagged.
	VLAN uint16
	// L3Off and L4Off are offsets from the start of the frame (the Ethernet
	// header). L4Off is 0 when there is no usable transport header (a
	// non-first fragment, an unknown protocol).
	L3Off, L4Off uint16
	// IPLen is the IP packet length (header and payload) as the IP header
	// says; bytes after it in the frame are Ethernet padding.
	IPLen uint16
	// Proto is the transport protocol (after IPv6 extension headers).
	Proto uint8
	// TTL is the IPv4 TTL or IPv6 hop limit.
	TTL uint8
	// Fragment is set for any IP fragment; NonFirst for fragments with a
	// non-zero offset (no transport header).
	Fragment, NonFirst bool
	// DF is the IPv4 don't-fragment flag (always true for IPv6, which
	// routers never fragment).
	DF bool
	// Src4 and Dst4 are IPv4 addresses as big-endian integers.
	Src4, Dst4 uint32
	// Src6 and Dst6 are IPv6 addresses.
	Src6, Dst6 [16]byte
	// SrcPort and DstPort are TCP/UDP ports; for ICMP, DstPort holds
	// type<<8|code and SrcPort the echo identifier.
	SrcPort, DstPort uint16
	// TCPFlags is the TCP flag byte.
	TCPFlags uint8
}

// Decode parses frame (starting with its Ethernet header) into p. It never
// allocates and never panics: a frame it cannot make sense of leaves
// p.Kind == L3Unknown with p.Drop naming the reason. It does not verify the
// IPv4 header checksum (see ChecksumOK).
func (p *Parsed) Decode(frame []byte) {
	*p = Parsed{}
	eth := header.Ethernet(frame)
	if !eth.IsValid() {
		p.Drop = DropTruncated
		return
	}
	l3 := header.EthernetLen
	et := eth.Type()
	if et == header.EtherTypeVLAN || et == header.EtherTypeQinQ {
		if len(frame) < header.EthernetVLANLen {
			p.Drop = DropTruncated
			return
		}
		p.VLAN = eth.VLAN()
		et = eth.InnerType()
		l3 = header.EthernetVLANLen
	}
	p.L3Off = uint16(l3)
	switch et {
	case header.EtherTypeIPv4:
		p.decodeIPv4(frame[l3:], l3)
	case header.EtherTypeIPv6:
		p.decodeIPv6(frame[l3:], l3)
	case header.EtherTypeARP:
		if !header.ARP(frame[l3:]).IsValid() {
			p.Drop = DropTruncated
			return
		}
		p.Kind = L3ARP
	default:
		p.Drop = DropNotIP
	}
}

func (p *Parsed) decodeIPv4(b header.IPv4, l3 int) {
	if len(b) < header.IPv4MinLen {
		p.Drop = DropTruncated
		return
	}
	if !b.IsValid() {
		p.Drop = DropBadIPv4Header
		return
	}
	p.Kind = L3IPv4
	p.IPLen = b.TotalLen()
	p.Proto = b.Protocol()
	p.TTL = b.TTL()
	p.Src4, p.Dst4 = b.SrcUint32(), b.DstUint32()
	ff := b.FlagsFragOff()
	p.DF = ff&header.IPv4FlagDF != 0
	p.Fragment = ff&(header.IPv4FlagMF|0x1fff) != 0
	p.NonFirst = ff&0x1fff != 0
	if p.NonFirst {
		return
	}
	hl := b.HeaderLen()
	p.decodeL4(b[hl:p.IPLen], l3+hl)
}

func (p *Parsed) decodeIPv6(b header.IPv6, l3 int) {
	if len(b) < header.IPv6Len {
		p.Drop = DropTruncated
		return
	}
	if !b.IsValid() {
		p.Drop = DropBadIPv6Header
		return
	}
	proto, off, frag, ok := header.IPv6Transport(b)
	if !ok {
		p.Drop = DropBadIPv6ExtHeaders
		return
	}
	p.Kind = L3IPv6
	p.IPLen = uint16(header.IPv6Len + int(b.PayloadLen()))
	p.Proto = proto
	p.TTL = b.HopLimit()
	p.DF = true
	p.Src6, p.Dst6 = b.Src(), b.Dst()
	p.Fragment = frag
	if frag && off > 0 {
		// IPv6Transport reports a non-first fragment by returning the
		// offset just past the fragment header; check its offset field.
		p.NonFirst = nonFirstIPv6Fragment(b)
	}
	if p.NonFirst {
		return
	}
	p.decodeL4(b[off:p.IPLen], l3+off)
}

// nonFirstIPv6Fragment reports whether a fragment header in b's chain has a
// non-zero offset. Only called for fragments, which are rare.
func nonFirstIPv6Fragment(b header.IPv6) bool {
	next := b.NextHeader()
	off := header.IPv6Len
	end := header.IPv6Len + int(b.PayloadLen())
	for i := 0; i < 8 && off+8 <= end; i++ {
		switch next {
		case header.IPv6Fragment:
			return (uint16(b[off+2])<<8|uint16(b[off+3]))&^7 != 0
		case header.IPv6HopByHop, header.IPv6Routing, header.IPv6DestOptions, header.IPv6Mobility:
			next, off = b[off], off+(int(b[off+1])+1)*8
		case header.IPv6AH:
			next, off = b[off], off+(int(b[off+1])+2)*4
		default:
			return false
		}
	}
	return false
}

func (p *Parsed) decodeL4(b []byte, off int) {
	switch p.Proto {
	case header.ProtoTCP:
		t := header.TCP(b)
		if !t.IsValid() {
			p.Drop = DropBadL4Header
			return
		}
		p.SrcPort, p.DstPort, p.TCPFlags = t.SrcPort(), t.DstPort(), t.Flags()
	case header.ProtoUDP:
		u := header.UDP(b)
		if !u.IsValid() {
			p.Drop = DropBadL4Header
			return
		}
		p.SrcPort, p.DstPort = u.SrcPort(), u.DstPort()
	case header.ProtoICMP, header.ProtoICMPv6:
		if len(b) < header.ICMPv4MinLen {
			p.Drop = DropBadL4Header
			return
		}
		p.DstPort = uint16(b[0])<<8 | uint16(b[1])
		p.SrcPort = uint16(b[4])<<8 | uint16(b[5])
	default:
		// Other protocols (IPIP, GRE, ESP, ...) carry no ports.
	}
	p.L4Off = uint16(off)
}

// IsIP reports whether the frame decoded to an IPv4 or IPv6 packet whose
// headers are consistent (Drop == DropNone).
func (p *Parsed) IsIP() bool {
	return (p.Kind == L3IPv4 || p.Kind == L3IPv6) && p.Drop == DropNone
}

// SrcAddr returns the source address as a netip.Addr (slow path only).
func (p *Parsed) SrcAddr() netip.Addr {
	if p.Kind == L3IPv4 {
		return netip.AddrFrom4(u32to4(p.Src4))
	}
	return netip.AddrFrom16(p.Src6)
}

// DstAddr returns the destination address as a netip.Addr (slow path only).
func (p *Parsed) DstAddr() netip.Addr {
	if p.Kind == L3IPv4 {
		return netip.AddrFrom4(u32to4(p.Dst4))
	}
	return netip.AddrFrom16(p.Dst6)
}

func u32to4(v uint32) [4]byte { return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }
