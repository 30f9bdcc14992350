package encap

import "github.com/tabbynet/tabby/datapath/header"

// Sizes of the ICMP error messages built in place.
const (
	icmp4HdrLen = header.EthernetLen + header.IPv4MinLen + header.ICMPv4MinLen // 42
	icmp6HdrLen = header.EthernetLen + header.IPv6Len + header.ICMPv6MinLen    // 62
	// icmp4QuoteData is how much of the offending IPv4 packet's payload is
	// quoted after its header (RFC 792: "the first 64 bits").
	icmp4QuoteData = 8
	// icmp6MaxQuote keeps an ICMPv6 error within the IPv6 minimum MTU
	// (RFC 4443 §2.4(c)).
	icmp6MaxQuote = 1280 - header.IPv6Len - header.ICMPv6MinLen // 1232

	icmpErrorTOS  = 0xc0 // precedence 6, internetwork control (RFC 1812 §4.3.2.5)
	icmpErrorTTL  = 64
	minIPv4MTU    = 68
	minIPv6MTU    = 1280
	maxIPv4MTU    = 65535
	icmpCodeZero  = 0
	icmp6CodeHopL = 0 // time exceeded: hop limit exceeded in transit
)

// FragNeededIPv4 turns the IPv4 packet in the Ethernet frame at
// buf[off:off+n] into an ICMP destination-unreachable, fragmentation-needed
// message (type 3 code 4, RFC 792) announcing the next-hop MTU mtu (RFC
// 1191), addressed from the router address from to the packet's source. It
// is written in place, in front of the offending packet: the quote (its IP
// header and the first 8 bytes of its payload) stays where it is, and the
// new Ethernet, IPv4 and ICMP headers go over the old Ethernet header and
// into the 28 bytes before off. It returns the message frame's offset and
// length and OK, or the reason no message was built (see icmpErrorIPv4).
//
// The Ethernet header swaps the frame's MACs (reply on the link the packet
// came from); the caller rewrites them if the route back says otherwise.
// The IPv4 header has TOS 0xc0 (RFC 1812 §4.3.2.5), TTL 64, DF set and ID 0
// (an atomic datagram, RFC 6864). The caller checks that the packet is too
// big and has DF set.
func FragNeededIPv4(buf []byte, off, n, mtu int, from [4]byte) (newOff, newLen int, v Verdict) {
	if mtu < minIPv4MTU || mtu > maxIPv4MTU {
		return 0, 0, BadArgs
	}
	return icmpErrorIPv4(buf, off, n, header.ICMPv4DestUnreachable, header.ICMPv4CodeFragNeeded, uint16(mtu), from)
}

// TimeExceededIPv4 is FragNeededIPv4 for an ICMP time-exceeded message
// (type 11 code 0: TTL exceeded in transit), sent when forwarding finds a
// TTL of 1 or less.
func TimeExceededIPv4(buf []byte, off, n int, from [4]byte) (newOff, newLen int, v Verdict) {
	return icmpErrorIPv4(buf, off, n, header.ICMPv4TimeExceeded, header.ICMPv4CodeTTLExceeded, 0, from)
}

// icmpErrorIPv4 builds an ICMPv4 error message in place. It declines, with
// the verdict saying why (RFC 1812 §4.3.2.7), when the offending packet is
// an ICMP error, a non-first fragment, was sent to a link-layer or IP
// broadcast or multicast address (or class E), or comes from an address
// that is not a single host (0/8, 127/8, multicast, class E, broadcast).
func icmpErrorIPv4(buf []byte, off, n int, typ, code uint8, mtu uint16, from [4]byte) (int, int, Verdict) {
	if off < 0 || n < 0 || off > len(buf) || n > len(buf)-off {
		return 0, 0, BadArgs
	}
	p := buf[off : off+n]
	if len(p) < header.EthernetLen+header.IPv4MinLen || be.Uint16(p[12:]) != header.EtherTypeIPv4 {
		return 0, 0, NoICMPMalformed
	}
	ip := header.IPv4(p[header.EthernetLen:])
	if !ip.IsValid() {
		return 0, 0, NoICMPMalformed
	}
	if p[0]&1 != 0 || !unicastIPv4(ip[12]) || ip[16] >= 224 {
		return 0, 0, NoICMPNotUnicast
	}
	if ip.FragOffset() != 0 {
		return 0, 0, NoICMPToFragment
	}
	ihl, tl := ip.HeaderLen(), int(ip.TotalLen())
	if ip.Protocol() == header.ProtoICMP {
		if tl == ihl {
			return 0, 0, NoICMPMalformed
		}
		if header.ICMPv4(ip[ihl:tl]).IsError() {
			return 0, 0, NoICMPToICMPError
		}
	}
	newOff := off + header.EthernetLen - icmp4HdrLen
	if newOff < 0 {
		return 0, 0, NoHeadroom
	}
	quote := ihl + min(icmp4QuoteData, tl-ihl)
	dstMAC, srcMAC := header.MAC(p[6:12]), header.MAC(p[0:6])
	origSrc := ip.Src()

	out := buf[newOff : newOff+icmp4HdrLen+quote]
	header.Ethernet(out).Encode(dstMAC, srcMAC, header.EtherTypeIPv4)
	header.IPv4(out[header.EthernetLen:]).Encode(&header.IPv4Fields{
		TOS:      icmpErrorTOS,
		TotalLen: uint16(header.IPv4MinLen + header.ICMPv4MinLen + quote),
		Flags:    header.IPv4FlagDF,
		TTL:      icmpErrorTTL,
		Protocol: header.ProtoICMP,
		Src:      from,
		Dst:      origSrc,
	})
	icmp := out[header.EthernetLen+header.IPv4MinLen:]
	icmp[0], icmp[1] = typ, code
	be.PutUint16(icmp[2:], 0)
	be.PutUint16(icmp[4:], 0)
	be.PutUint16(icmp[6:], mtu)
	be.PutUint16(icmp[2:], ^header.Checksum(icmp, 0))
	return newOff, len(out), OK
}

// unicastIPv4 reports whether an IPv4 source address with the given first
// byte can name a single host: not 0/8, 127/8, multicast or class E
// (which holds the limited broadcast address).
func unicastIPv4(first byte) bool {
	return first != 0 && first != 127 && first < 224
}

// PacketTooBigIPv6 turns the IPv6 packet in the Ethernet frame at
// buf[off:off+n] into an ICMPv6 packet-too-big message (type 2, RFC 4443
// §3.2) announcing the MTU mtu (at least 1280), addressed from the router
// address from to the packet's source and quoting as much of the packet as
// keeps the message within 1280 bytes. Like FragNeededIPv4, it is written
// in place: the new headers go over the old Ethernet header and into the 48
// bytes before off. The IPv6 header has traffic class 0 and hop limit 64.
//
// It declines (RFC 4443 §2.4(e)) when the packet is an ICMPv6 error, a
// non-first fragment, or comes from an address that is not a single node
// (unspecified, loopback, multicast). Unlike the other errors, a packet-too-
// big message is sent for a packet to a multicast address (§2.4(e.2)).
func PacketTooBigIPv6(buf []byte, off, n, mtu int, from [16]byte) (newOff, newLen int, v Verdict) {
	if mtu < minIPv6MTU || int64(mtu) > 1<<32-1 {
		return 0, 0, BadArgs
	}
	return icmpErrorIPv6(buf, off, n, header.ICMPv6PacketTooBig, icmpCodeZero, uint32(mtu), from, true)
}

// TimeExceededIPv6 is PacketTooBigIPv6 for an ICMPv6 time-exceeded message
// (type 3 code 0: hop limit exceeded in transit). It is not sent for
// packets to multicast addresses.
func TimeExceededIPv6(buf []byte, off, n int, from [16]byte) (newOff, newLen int, v Verdict) {
	return icmpErrorIPv6(buf, off, n, header.ICMPv6TimeExceeded, icmp6CodeHopL, 0, from, false)
}

func icmpErrorIPv6(buf []byte, off, n int, typ, code uint8, rest uint32, from [16]byte, toMulticast bool) (int, int, Verdict) {
	if off < 0 || n < 0 || off > len(buf) || n > len(buf)-off {
		return 0, 0, BadArgs
	}
	p := buf[off : off+n]
	if len(p) < header.EthernetLen+header.IPv6Len || be.Uint16(p[12:]) != header.EtherTypeIPv6 {
		return 0, 0, NoICMPMalformed
	}
	ip := header.IPv6(p[header.EthernetLen:])
	if !ip.IsValid() {
		return 0, 0, NoICMPMalformed
	}
	ip = ip[:header.IPv6Len+int(ip.PayloadLen())]
	src := ip.Src()
	if !unicastIPv6(src) || (!toMulticast && (p[0]&1 != 0 || ip[24] == 0xff)) {
		return 0, 0, NoICMPNotUnicast
	}
	proto, l4, nonFirst, ok := ipv6Upper(ip)
	switch {
	case !ok:
		return 0, 0, NoICMPMalformed
	case nonFirst:
		return 0, 0, NoICMPToFragment
	case proto == header.ProtoICMPv6:
		if l4 >= len(ip) {
			return 0, 0, NoICMPMalformed
		}
		if header.ICMPv6(ip[l4:]).IsError() {
			return 0, 0, NoICMPToICMPError
		}
	}
	newOff := off + header.EthernetLen - icmp6HdrLen
	if newOff < 0 {
		return 0, 0, NoHeadroom
	}
	quote := min(len(ip), icmp6MaxQuote)
	dstMAC, srcMAC := header.MAC(p[6:12]), header.MAC(p[0:6])
	if toMulticast && srcMAC.IsMulticast() {
		// The packet went to a multicast group: answer from our own address,
		// which the caller fills, rather than from the group's MAC.
		srcMAC = header.MAC{}
	}

	out := buf[newOff : newOff+icmp6HdrLen+quote]
	header.Ethernet(out).Encode(dstMAC, srcMAC, header.EtherTypeIPv6)
	plen := uint16(header.ICMPv6MinLen + quote)
	header.IPv6(out[header.EthernetLen:]).Encode(&header.IPv6Fields{
		PayloadLen: plen,
		NextHeader: header.ProtoICMPv6,
		HopLimit:   icmpErrorTTL,
		Src:        from,
		Dst:        src,
	})
	icmp := out[header.EthernetLen+header.IPv6Len:]
	icmp[0], icmp[1] = typ, code
	be.PutUint16(icmp[2:], 0)
	be.PutUint32(icmp[4:], rest)
	s := header.PseudoHeaderChecksumIPv6(header.ProtoICMPv6, from, src, uint32(plen))
	be.PutUint16(icmp[2:], ^header.Checksum(icmp, s))
	return newOff, len(out), OK
}

// unicastIPv6 reports whether an IPv6 source address can name a single
// node: not unspecified, loopback or multicast.
func unicastIPv6(a [16]byte) bool {
	if a[0] == 0xff {
		return false
	}
	hi, lo := be.Uint64(a[:8]), be.Uint64(a[8:])
	return hi != 0 || lo > 1
}

// ipv6Upper walks the extension headers of the IPv6 packet p (its fixed
// header valid, p trimmed to its length) and returns the upper-layer
// protocol and its offset. nonFirst reports a fragment with a non-zero
// offset, whose upper-layer header is elsewhere. ok is false when the chain
// runs past p or is longer than eight headers.
func ipv6Upper(p []byte) (proto uint8, off int, nonFirst, ok bool) {
	next, off := p[6], header.IPv6Len
	for range 8 {
		switch next {
		case header.IPv6HopByHop, header.IPv6Routing, header.IPv6DestOptions, header.IPv6Mobility:
			if off+8 > len(p) {
				return 0, 0, false, false
			}
			next, off = p[off], off+(int(p[off+1])+1)*8
		case header.IPv6AH:
			if off+8 > len(p) {
				return 0, 0, false, false
			}
			next, off = p[off], off+(int(p[off+1])+2)*4
		case header.IPv6Fragment:
			if off+8 > len(p) {
				return 0, 0, false, false
			}
			if be.Uint16(p[off+2:])&^7 != 0 {
				return p[off], off + 8, true, true
			}
			next, off = p[off], off+8
		default:
			return next, off, false, true
		}
		if off > len(p) {
			return 0, 0, false, false
		}
	}
	return 0, 0, false, false
}
