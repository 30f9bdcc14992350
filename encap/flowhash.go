package encap

import (
	"math/bits"

	"github.com/tabbynet/tabby/datapath/header"
)

// Mixing constants (odd 64-bit values with well spread bits).
const (
	hk0 = 0xa0761d6478bd642f
	hk1 = 0xe7037ed1a0b428db
	hk2 = 0x8ebc6af09c88c6e3
	hk3 = 0x589965cc75374cc3
)

// mix multiplies a and b into 128 bits and folds the halves together: every
// input bit reaches the middle output bits.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// finish spreads h once more and folds it to 32 bits.
func finish(h uint64) uint32 {
	h = mix(h^hk2, hk3)
	return uint32(h>>32) ^ uint32(h)
}

// FlowHashIPv4 returns a hash of an IPv4 5-tuple under seed. Pass zero
// ports for protocols without ports and for fragments. The same seed gives
// the same hash on every worker; different nodes should use different seeds.
func FlowHashIPv4(src, dst [4]byte, proto uint8, srcPort, dstPort uint16, seed uint64) uint32 {
	a := uint64(be.Uint32(src[:]))<<32 | uint64(be.Uint32(dst[:]))
	b := uint64(proto)<<32 | uint64(srcPort)<<16 | uint64(dstPort)
	return finish(mix(a^seed^hk0, b^hk1))
}

// FlowHashIPv6 is FlowHashIPv4 for an IPv6 5-tuple.
func FlowHashIPv6(src, dst [16]byte, proto uint8, srcPort, dstPort uint16, seed uint64) uint32 {
	s := mix(be.Uint64(src[:8])^seed^hk0, be.Uint64(src[8:])^hk1)
	d := mix(be.Uint64(dst[:8])^hk2, be.Uint64(dst[8:])^hk3)
	b := uint64(proto)<<32 | uint64(srcPort)<<16 | uint64(dstPort)
	return finish(mix(s^b^hk1, d^hk0))
}

// FlowHash returns the flow hash of the packet in an Ethernet frame (one
// 802.1Q tag is skipped): FlowHashIPv4 or FlowHashIPv6 of its 5-tuple, with
// the ports of TCP, UDP, UDP-Lite and SCTP. Fragments hash without ports,
// so every fragment of a datagram takes the same path. Other frames hash
// their MACs and EtherType. It never allocates and never panics.
func FlowHash(frame []byte, seed uint64) uint32 {
	if len(frame) < header.EthernetLen {
		return finish(seed ^ uint64(len(frame)))
	}
	l3 := header.EthernetLen
	typ := be.Uint16(frame[12:])
	if (typ == header.EtherTypeVLAN || typ == header.EtherTypeQinQ) && len(frame) >= header.EthernetVLANLen {
		typ = be.Uint16(frame[16:])
		l3 = header.EthernetVLANLen
	}
	p := frame[l3:]
	switch typ {
	case header.EtherTypeIPv4:
		if len(p) >= header.IPv4MinLen && p[0]>>4 == 4 {
			proto := p[9]
			var sp, dp uint16
			ihl := int(p[0]&0x0f) * 4
			if hasPorts(proto) && be.Uint16(p[6:])&(header.IPv4FlagMF|0x1fff) == 0 &&
				ihl >= header.IPv4MinLen && len(p) >= ihl+4 {
				sp, dp = be.Uint16(p[ihl:]), be.Uint16(p[ihl+2:])
			}
			return FlowHashIPv4([4]byte(p[12:16]), [4]byte(p[16:20]), proto, sp, dp, seed)
		}
	case header.EtherTypeIPv6:
		if len(p) >= header.IPv6Len && p[0]>>4 == 6 {
			proto, off := p[6], header.IPv6Len
			if !hasPorts(proto) && header.IPv6(p).IsValid() {
				var frag, ok bool
				proto, off, frag, ok = header.IPv6Transport(header.IPv6(p))
				if !ok || frag {
					off = len(p) // no ports
				}
			}
			var sp, dp uint16
			if hasPorts(proto) && len(p) >= off+4 {
				sp, dp = be.Uint16(p[off:]), be.Uint16(p[off+2:])
			}
			return FlowHashIPv6([16]byte(p[8:24]), [16]byte(p[24:40]), proto, sp, dp, seed)
		}
	}
	a := be.Uint64(frame[0:8])
	b := uint64(be.Uint32(frame[8:12]))<<16 | uint64(typ)
	return finish(mix(a^seed^hk0, b^hk1))
}

// hasPorts reports whether proto carries 16-bit source and destination
// ports in its first four bytes.
func hasPorts(proto uint8) bool {
	switch proto {
	case header.ProtoTCP, header.ProtoUDP, protoUDPLite, protoSCTP:
		return true
	}
	return false
}

const (
	protoSCTP    uint8 = 132
	protoUDPLite uint8 = 136
)

// SourcePort maps a flow hash into the VXLAN source port range
// 49152–65535 (RFC 7348 §5), using the hash's top 14 bits.
func SourcePort(flowHash uint32) uint16 {
	return vxlanSrcPortMin + uint16(flowHash>>(32-vxlanSrcPortBits))
}
