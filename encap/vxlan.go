package encap

import "github.com/tabbynet/tabby/datapath/header"

// Offsets within the VXLAN outer headers.
const (
	vxUDP   = outerIP + header.IPv4MinLen
	vxVXLAN = vxUDP + header.UDPLen
	// maxVXLANInner keeps the outer IPv4 total length within 16 bits.
	maxVXLANInner = 65535 - (header.IPv4MinLen + header.UDPLen + header.VXLANLen)
)

// VXLANEncap encapsulates the Ethernet frame at buf[off:off+n] in VXLAN for
// tunnel t, writing the outer Ethernet, IPv4, UDP and VXLAN headers into the
// 50 bytes before off, and returns the outer frame's offset (off − 50) and
// length (n + 50). The inner frame is not moved; its MACs are rewritten to
// the tunnel's VTEP MACs (destination RemoteVTEPMAC, source VTEPMAC).
//
// The outer UDP source port is derived from flowHash (see FlowHash); the
// outer DSCP and ECN come from the inner IPv4 or IPv6 header (see the
// package documentation); the outer header has DF set, the tunnel's TTL and
// the next value of its ID counter; the UDP checksum is 0 (RFC 7348 §5).
//
// The caller has checked the inner packet against t.MTU(ModeVXLAN). If the
// headroom is under 50 bytes, the frame is shorter than an Ethernet header,
// or off and n do not fit buf, VXLANEncap writes nothing and returns newLen 0.
func VXLANEncap(buf []byte, off, n int, t *Tunnel, flowHash uint32) (newOff, newLen int) {
	if off < vxlanHdrLen || n < header.EthernetLen || n > maxVXLANInner || n > len(buf)-off {
		return 0, 0
	}
	inner := buf[off : off+n]
	tos := outerTOS(innerDSField(inner))
	copy(inner[0:6], t.cfg.RemoteVTEPMAC[:])
	copy(inner[6:12], t.cfg.VTEPMAC[:])

	newOff = off - vxlanHdrLen
	h := buf[newOff:off]
	copy(h, t.vxlanTmpl[:])
	ipLen := uint16(n + header.IPv4MinLen + header.UDPLen + header.VXLANLen)
	id := t.nextID()
	h[outerIP+1] = tos
	be.PutUint16(h[outerIP+2:], ipLen)
	be.PutUint16(h[outerIP+4:], id)
	be.PutUint16(h[outerIP+10:], outerIPChecksum(t.vxlanSum, tos, ipLen, id))
	be.PutUint16(h[vxUDP:], SourcePort(flowHash))
	be.PutUint16(h[vxUDP+4:], uint16(n+header.UDPLen+header.VXLANLen))
	return newOff, n + vxlanHdrLen
}

// innerDSField returns the DS field (DSCP and ECN) of the IPv4 or IPv6
// packet in an untagged Ethernet frame, or 0 for anything else.
func innerDSField(frame []byte) uint8 {
	switch be.Uint16(frame[12:]) {
	case header.EtherTypeIPv4:
		if len(frame) >= header.EthernetLen+header.IPv4MinLen && frame[14]>>4 == 4 {
			return frame[15]
		}
	case header.EtherTypeIPv6:
		if len(frame) >= header.EthernetLen+header.IPv6Len && frame[14]>>4 == 6 {
			return frame[14]<<4 | frame[15]>>4
		}
	}
	return 0
}

// VXLANDecap validates the VXLAN packet in the Ethernet frame at
// buf[off:off+n] and returns the inner Ethernet frame's offset and length
// (within the same buffer) with OK or OKUnusualECN, or a drop verdict.
//
// It checks: an untagged IPv4 outer frame; a valid outer IPv4 header
// (version, IHL, total length within the frame, checksum) that is not a
// fragment and carries UDP; a UDP length that holds VXLAN and an inner
// Ethernet header and fits the IP packet; the UDP checksum when it is not
// zero; the VXLAN I flag and the VNI. Bytes beyond the UDP length (link
// padding) are not part of the inner frame. Matching the outer destination
// address and UDP port is the steering's job and is not repeated here.
//
// It then applies RFC 6040 decapsulation to an inner IPv4 or IPv6 packet
// (inner CE set with an incremental IPv4 checksum update, ECT(1)
// propagated, outer CE over Not-ECT dropped) and requires an inner IP
// EtherType to be followed by a whole fixed IP header. Other inner
// EtherTypes (ARP, VLAN-tagged frames) pass without ECN processing.
//
// VXLANDecap never panics, whatever the input, and modifies nothing when
// it drops.
func VXLANDecap(buf []byte, off, n int, vni uint32) (innerOff, innerLen int, v Verdict) {
	return vxlanDecap(buf, off, n, vni, true)
}

// VXLANDecapNoChecksum is VXLANDecap without the outer UDP checksum check,
// which RFC 7348 (section 5) leaves to the decapsulating end point ("MAY
// choose to verify"). An AF_XDP receiver cannot tell a corrupt checksum
// from one left for offload: over a veth (or virtio) link the sender's
// kernel hands the frame over with the checksum only partly computed
// (CHECKSUM_PARTIAL; the Linux VXLAN device checksums outer UDP by
// default), and the receiving kernel trusts it; the bytes we see fail the
// check. The inner packet's own checksums still protect its payload.
func VXLANDecapNoChecksum(buf []byte, off, n int, vni uint32) (innerOff, innerLen int, v Verdict) {
	return vxlanDecap(buf, off, n, vni, false)
}

func vxlanDecap(buf []byte, off, n int, vni uint32, verify bool) (innerOff, innerLen int, v Verdict) {
	if off < 0 || n < 0 || off > len(buf) || n > len(buf)-off {
		return 0, 0, BadArgs
	}
	p := buf[off : off+n]
	if len(p) < vxlanHdrLen+header.EthernetLen {
		return 0, 0, DropShort
	}
	if be.Uint16(p[12:]) != header.EtherTypeIPv4 {
		return 0, 0, DropNotIPv4
	}
	ip, v := outerIPv4(p[header.EthernetLen:])
	if v != OK {
		return 0, 0, v
	}
	if ip[9] != header.ProtoUDP {
		return 0, 0, DropNotTunnel
	}
	ihl := int(ip[0]&0x0f) * 4
	udp := ip[ihl:]
	if len(udp) < header.UDPLen+header.VXLANLen+header.EthernetLen {
		return 0, 0, DropShort
	}
	ulen := int(be.Uint16(udp[4:]))
	if ulen < header.UDPLen+header.VXLANLen+header.EthernetLen || ulen > len(udp) {
		return 0, 0, DropBadUDPLength
	}
	udp = udp[:ulen]
	if verify && be.Uint16(udp[6:]) != 0 {
		s := header.PseudoHeaderChecksumIPv4(header.ProtoUDP, [4]byte(ip[12:16]), [4]byte(ip[16:20]), uint16(ulen))
		if header.Checksum(udp, s) != 0xffff {
			return 0, 0, DropBadUDPChecksum
		}
	}
	if udp[8]&header.VXLANFlagVNI == 0 {
		return 0, 0, DropNoVNI
	}
	if be.Uint32(udp[12:])>>8 != vni {
		return 0, 0, DropWrongVNI
	}
	inner := udp[header.UDPLen+header.VXLANLen:]
	v = decapECNFrame(ip[1], inner)
	if !v.IsOK() {
		return 0, 0, v
	}
	return off + header.EthernetLen + ihl + header.UDPLen + header.VXLANLen, len(inner), v
}

// outerIPv4 validates the outer IPv4 header at the start of b and returns
// the packet trimmed to its total length.
func outerIPv4(b []byte) ([]byte, Verdict) {
	if len(b) < header.IPv4MinLen {
		return nil, DropShort
	}
	ihl := int(b[0]&0x0f) * 4
	tl := int(be.Uint16(b[2:]))
	if b[0]>>4 != 4 || ihl < header.IPv4MinLen || tl < ihl || tl > len(b) {
		return nil, DropBadIPHeader
	}
	if header.Checksum(b[:ihl], 0) != 0xffff {
		return nil, DropBadIPChecksum
	}
	if be.Uint16(b[6:])&(header.IPv4FlagMF|0x1fff) != 0 {
		return nil, DropFragment
	}
	return b[:tl], OK
}

// decapECNFrame applies RFC 6040 decapsulation to the IP packet in the inner
// Ethernet frame (at least 14 bytes).
func decapECNFrame(outerTOS uint8, frame []byte) Verdict {
	switch be.Uint16(frame[12:]) {
	case header.EtherTypeIPv4:
		ip := frame[header.EthernetLen:]
		if len(ip) < header.IPv4MinLen || ip[0]>>4 != 4 {
			return DropBadInner
		}
		return decapECNIPv4(outerTOS, ip)
	case header.EtherTypeIPv6:
		ip := frame[header.EthernetLen:]
		if len(ip) < header.IPv6Len || ip[0]>>4 != 6 {
			return DropBadInner
		}
		return decapECNIPv6(outerTOS, ip)
	}
	return OK
}
