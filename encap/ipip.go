package encap

import "github.com/tabbynet/tabby/datapath/header"

// IPIPEncap encapsulates the IPv4 packet in the Ethernet frame at
// buf[off:off+n] in IPv4 (protocol 4) for tunnel t. The inner Ethernet
// header is dropped: the outer Ethernet and IPv4 headers are written over it
// and into the 20 bytes before off. It returns the outer frame's offset
// (off − 20) and length (34 + the inner IPv4 total length: link padding
// after the inner packet is left out).
//
// The outer header takes the inner DSCP and ECN as VXLANEncap does (see the
// package documentation), has DF set, the tunnel's TTL and the next value of
// its ID counter.
//
// The caller has checked the inner packet against t.MTU(ModeIPIP). If the
// headroom is under 20 bytes, off and n do not fit buf, the frame is not
// untagged IPv4, or its IPv4 header or total length is inconsistent with the
// frame, IPIPEncap writes nothing and returns newLen 0.
func IPIPEncap(buf []byte, off, n int, t *Tunnel) (newOff, newLen int) {
	if off < IPIPOverhead || n < header.EthernetLen+header.IPv4MinLen || n > len(buf)-off {
		return 0, 0
	}
	frame := buf[off : off+n]
	if be.Uint16(frame[12:]) != header.EtherTypeIPv4 {
		return 0, 0
	}
	ip := frame[header.EthernetLen:]
	ihl := int(ip[0]&0x0f) * 4
	innerLen := int(be.Uint16(ip[2:]))
	if ip[0]>>4 != 4 || ihl < header.IPv4MinLen || innerLen < ihl || innerLen > len(ip) ||
		innerLen > 65535-header.IPv4MinLen {
		return 0, 0
	}
	tos := outerTOS(ip[1])

	newOff = off - IPIPOverhead
	h := buf[newOff : newOff+ipipHdrLen]
	copy(h, t.ipipTmpl[:])
	ipLen := uint16(innerLen + header.IPv4MinLen)
	id := t.nextID()
	h[outerIP+1] = tos
	be.PutUint16(h[outerIP+2:], ipLen)
	be.PutUint16(h[outerIP+4:], id)
	be.PutUint16(h[outerIP+10:], outerIPChecksum(t.ipipSum, tos, ipLen, id))
	return newOff, ipipHdrLen + innerLen
}

// IPIPDecap validates the IP-in-IP packet in the Ethernet frame at
// buf[off:off+n] and turns it into an Ethernet frame carrying the inner IPv4
// packet: it writes an Ethernet header (zero MACs, which the caller fills,
// type IPv4) into the 14 bytes before the inner packet, in the space of the
// outer IPv4 header, and returns that frame's offset and length with OK or
// OKUnusualECN, or a drop verdict.
//
// It checks: an untagged IPv4 outer frame; a valid outer IPv4 header
// (version, IHL, total length within the frame, checksum) that is not a
// fragment and has protocol 4; an inner IPv4 header with version 4 and an
// IHL and total length that fit the outer payload. The returned frame ends
// at the inner total length. The inner header checksum is not verified (the
// forwarding stage's parser does that), but the RFC 6040 ECN update keeps it
// as valid as it was. Matching the outer destination address is the
// steering's job and is not repeated here.
//
// IPIPDecap never panics, whatever the input, and modifies nothing when it
// drops.
func IPIPDecap(buf []byte, off, n int) (innerOff, innerLen int, v Verdict) {
	if off < 0 || n < 0 || off > len(buf) || n > len(buf)-off {
		return 0, 0, BadArgs
	}
	p := buf[off : off+n]
	if len(p) < ipipHdrLen+header.IPv4MinLen {
		return 0, 0, DropShort
	}
	if be.Uint16(p[12:]) != header.EtherTypeIPv4 {
		return 0, 0, DropNotIPv4
	}
	ip, v := outerIPv4(p[header.EthernetLen:])
	if v != OK {
		return 0, 0, v
	}
	if ip[9] != header.ProtoIPIP {
		return 0, 0, DropNotTunnel
	}
	ihl := int(ip[0]&0x0f) * 4
	inner := ip[ihl:]
	if len(inner) < header.IPv4MinLen {
		return 0, 0, DropShort
	}
	iihl := int(inner[0]&0x0f) * 4
	itl := int(be.Uint16(inner[2:]))
	if inner[0]>>4 != 4 || iihl < header.IPv4MinLen || itl < iihl || itl > len(inner) {
		return 0, 0, DropBadInner
	}
	v = decapECNIPv4(ip[1], inner)
	if !v.IsOK() {
		return 0, 0, v
	}
	innerOff = off + ihl // = off + 14 + ihl − 14
	eth := buf[innerOff : innerOff+header.EthernetLen]
	clear(eth[:12])
	be.PutUint16(eth[12:], header.EtherTypeIPv4)
	return innerOff, header.EthernetLen + itl, v
}
