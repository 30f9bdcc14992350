package header

import "net/netip"

// IPv6Len is the length of the fixed IPv6 header.
const IPv6Len = 40

// IPv6 extension header and special next-header values.
const (
	IPv6HopByHop    uint8 = 0
	IPv6Routing     uint8 = 43
	IPv6Fragment    uint8 = 44
	IPv6ESP         uint8 = 50
	IPv6AH          uint8 = 51
	IPv6NoNext      uint8 = 59
	IPv6DestOptions uint8 = 60
	IPv6Mobility    uint8 = 135
)

// maxIPv6ExtHeaders bounds the extension-header walk; a chain longer than this
// is treated as malformed (RFC 8200 allows each type at most once or twice).
const maxIPv6ExtHeaders = 8

// IPv6 is a view of the fixed IPv6 header (RFC 8200):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version| Traffic Class |           Flow Label                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Payload Length        |  Next Header  |   Hop Limit   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                   Source Address (16)                         |
//	|                 Destination Address (16)                      |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type IPv6 []byte

const (
	v6VerTCFlow = 0
	v6PayLen    = 4
	v6Next      = 6
	v6Hop       = 7
	v6Src       = 8
	v6Dst       = 24
)

// IsValid reports whether b starts with an IPv6 header whose payload fits in b.
func (b IPv6) IsValid() bool {
	return len(b) >= IPv6Len && b[0]>>4 == 6 && IPv6Len+int(be.Uint16(b[v6PayLen:])) <= len(b)
}

// TrafficClass returns the traffic class (DSCP and ECN).
func (b IPv6) TrafficClass() uint8 { return uint8(be.Uint16(b[0:]) >> 4) }

// SetTrafficClass sets the traffic class.
func (b IPv6) SetTrafficClass(tc uint8) {
	w := be.Uint16(b[0:])&0xf00f | uint16(tc)<<4
	be.PutUint16(b[0:], w)
}

// FlowLabel returns the 20-bit flow label.
func (b IPv6) FlowLabel() uint32 { return be.Uint32(b[0:]) & 0xfffff }

// PayloadLen returns the payload length (extension headers included).
func (b IPv6) PayloadLen() uint16 { return be.Uint16(b[v6PayLen:]) }

// SetPayloadLen sets the payload length.
func (b IPv6) SetPayloadLen(v uint16) { be.PutUint16(b[v6PayLen:], v) }

// NextHeader returns the next header of the fixed header.
func (b IPv6) NextHeader() uint8 { return b[v6Next] }

// HopLimit returns the hop limit.
func (b IPv6) HopLimit() uint8 { return b[v6Hop] }

// DecHopLimit decrements the hop limit (IPv6 has no header checksum).
func (b IPv6) DecHopLimit() uint8 { b[v6Hop]--; return b[v6Hop] }

// Src returns the source address.
func (b IPv6) Src() [16]byte { return [16]byte(b[v6Src : v6Src+16]) }

// Dst returns the destination address.
func (b IPv6) Dst() [16]byte { return [16]byte(b[v6Dst : v6Dst+16]) }

// SrcAddr returns the source address as a netip.Addr (slow path only).
func (b IPv6) SrcAddr() netip.Addr { return netip.AddrFrom16(b.Src()) }

// DstAddr returns the destination address as a netip.Addr (slow path only).
func (b IPv6) DstAddr() netip.Addr { return netip.AddrFrom16(b.Dst()) }

// IPv6Fields are the fields Encode writes.
type IPv6Fields struct {
	TrafficClass uint8
	FlowLabel    uint32
	PayloadLen   uint16
	NextHeader   uint8
	HopLimit     uint8
	Src, Dst     [16]byte
}

// Encode writes the fixed header.
func (b IPv6) Encode(f *IPv6Fields) {
	_ = b[39]
	be.PutUint32(b[0:], 6<<28|uint32(f.TrafficClass)<<20|f.FlowLabel&0xfffff)
	be.PutUint16(b[v6PayLen:], f.PayloadLen)
	b[v6Next] = f.NextHeader
	b[v6Hop] = f.HopLimit
	copy(b[v6Src:v6Src+16], f.Src[:])
	copy(b[v6Dst:v6Dst+16], f.Dst[:])
}

// IPv6Transport walks the extension headers of a valid IPv6 packet and returns
// the upper-layer protocol and its offset from the start of b. Hop-by-hop,
// routing, destination options, mobility and AH headers are skipped. A
// non-first fragment (offset ≠ 0) reports fragment=true with the fragment's
// next header and no usable transport header. ok is false when the chain is
// truncated, too long, or its lengths run past the payload; ESP and No Next
// Header end the walk with ok=true and that protocol.
func IPv6Transport(b IPv6) (proto uint8, off int, fragment bool, ok bool) {
	end := IPv6Len + int(b.PayloadLen())
	next := b.NextHeader()
	off = IPv6Len
	for i := 0; i < maxIPv6ExtHeaders; i++ {
		switch next {
		case IPv6HopByHop, IPv6Routing, IPv6DestOptions, IPv6Mobility:
			if off+8 > end {
				return 0, 0, false, false
			}
			n := off + (int(b[off+1])+1)*8
			if n > end {
				return 0, 0, false, false
			}
			next, off = b[off], n
		case IPv6AH:
			if off+8 > end {
				return 0, 0, false, false
			}
			n := off + (int(b[off+1])+2)*4
			if n > end {
				return 0, 0, false, false
			}
			next, off = b[off], n
		case IPv6Fragment:
			if off+8 > end {
				return 0, 0, false, false
			}
			fragOff := be.Uint16(b[off+2:]) &^ 7
			next, off = b[off], off+8
			if fragOff != 0 {
				return next, off, true, true
			}
			fragment = true
		default:
			return next, off, fragment, true
		}
	}
	switch next {
	case IPv6HopByHop, IPv6Routing, IPv6DestOptions, IPv6Mobility, IPv6AH, IPv6Fragment:
		return 0, 0, false, false // more than maxIPv6ExtHeaders extension headers
	}
	return next, off, fragment, true
}
