package header

import "net/netip"

// IP protocol numbers used by Tabby.
const (
	ProtoICMP   uint8 = 1
	ProtoIPIP   uint8 = 4
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoIPv6   uint8 = 41
	ProtoICMPv6 uint8 = 58
)

// IPv4MinLen is the length of an IPv4 header without options.
const IPv4MinLen = 20

// IPv4 flags (in the flags/fragment-offset word).
const (
	IPv4FlagDF uint16 = 0x4000
	IPv4FlagMF uint16 = 0x2000
)

// IPv4 is a view of an IPv4 header (RFC 791):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |    DSCP   |ECN|          Total Length         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Identification        |Flags|      Fragment Offset    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Source Address                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options (IHL > 5)                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type IPv4 []byte

const (
	v4VerIHL   = 0
	v4TOS      = 1
	v4TotalLen = 2
	v4ID       = 4
	v4FlagsOff = 6
	v4TTL      = 8
	v4Proto    = 9
	v4Checksum = 10
	v4Src      = 12
	v4Dst      = 16
)

// IsValid reports whether b starts with a well-formed IPv4 header whose total
// length fits in b: version 4, IHL ≥ 5, header length ≤ total length ≤ len(b).
func (b IPv4) IsValid() bool {
	if len(b) < IPv4MinLen || b[v4VerIHL]>>4 != 4 {
		return false
	}
	hl := int(b[v4VerIHL]&0x0f) * 4
	tl := int(be.Uint16(b[v4TotalLen:]))
	return hl >= IPv4MinLen && hl <= tl && tl <= len(b)
}

// HeaderLen returns the header length in bytes (IHL × 4).
func (b IPv4) HeaderLen() int { return int(b[v4VerIHL]&0x0f) * 4 }

// TOS returns the DSCP and ECN byte.
func (b IPv4) TOS() uint8 { return b[v4TOS] }

// SetTOS sets the DSCP and ECN byte (the checksum is not updated).
func (b IPv4) SetTOS(v uint8) { b[v4TOS] = v }

// TotalLen returns the total length of the packet, header included.
func (b IPv4) TotalLen() uint16 { return be.Uint16(b[v4TotalLen:]) }

// SetTotalLen sets the total length (the checksum is not updated).
func (b IPv4) SetTotalLen(v uint16) { be.PutUint16(b[v4TotalLen:], v) }

// ID returns the identification field.
func (b IPv4) ID() uint16 { return be.Uint16(b[v4ID:]) }

// FlagsFragOff returns the flags and fragment offset word.
func (b IPv4) FlagsFragOff() uint16 { return be.Uint16(b[v4FlagsOff:]) }

// DF reports whether the don't-fragment flag is set.
func (b IPv4) DF() bool { return b.FlagsFragOff()&IPv4FlagDF != 0 }

// IsFragment reports whether the packet is a fragment (MF set or offset ≠ 0).
func (b IPv4) IsFragment() bool { return b.FlagsFragOff()&(IPv4FlagMF|0x1fff) != 0 }

// FragOffset returns the fragment offset in bytes.
func (b IPv4) FragOffset() int { return int(b.FlagsFragOff()&0x1fff) * 8 }

// TTL returns the time to live.
func (b IPv4) TTL() uint8 { return b[v4TTL] }

// Protocol returns the payload protocol number.
func (b IPv4) Protocol() uint8 { return b[v4Proto] }

// Checksum returns the header checksum field.
func (b IPv4) Checksum() uint16 { return be.Uint16(b[v4Checksum:]) }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(v uint16) { be.PutUint16(b[v4Checksum:], v) }

// Src returns the source address.
func (b IPv4) Src() [4]byte { return [4]byte(b[v4Src : v4Src+4]) }

// Dst returns the destination address.
func (b IPv4) Dst() [4]byte { return [4]byte(b[v4Dst : v4Dst+4]) }

// SrcUint32 returns the source address as a big-endian integer.
func (b IPv4) SrcUint32() uint32 { return be.Uint32(b[v4Src:]) }

// DstUint32 returns the destination address as a big-endian integer.
func (b IPv4) DstUint32() uint32 { return be.Uint32(b[v4Dst:]) }

// SrcAddr returns the source address as a netip.Addr (slow path only).
func (b IPv4) SrcAddr() netip.Addr { return netip.AddrFrom4(b.Src()) }

// DstAddr returns the destination address as a netip.Addr (slow path only).
func (b IPv4) DstAddr() netip.Addr { return netip.AddrFrom4(b.Dst()) }

// Payload returns the bytes after the header, up to the total length.
// The caller has checked IsValid.
func (b IPv4) Payload() []byte { return b[b.HeaderLen():b.TotalLen()] }

// HeaderChecksumOK reports whether the header checksum verifies.
func (b IPv4) HeaderChecksumOK() bool { return Checksum(b[:b.HeaderLen()], 0) == 0xffff }

// ComputeChecksum sets the header checksum from scratch.
func (b IPv4) ComputeChecksum() {
	b.SetChecksum(0)
	b.SetChecksum(^Checksum(b[:b.HeaderLen()], 0))
}

// DecTTL decrements the TTL and updates the checksum incrementally
// (RFC 1624). It returns the new TTL. The caller checks TTL() > 1 first.
func (b IPv4) DecTTL() uint8 {
	old := be.Uint16(b[v4TTL:])
	b[v4TTL]--
	b.SetChecksum(ChecksumUpdate16(b.Checksum(), old, be.Uint16(b[v4TTL:])))
	return b[v4TTL]
}

// IPv4Fields are the fields Encode writes; the header has no options.
type IPv4Fields struct {
	TOS      uint8
	TotalLen uint16
	ID       uint16
	Flags    uint16 // IPv4FlagDF and/or the fragment offset word
	TTL      uint8
	Protocol uint8
	Src, Dst [4]byte
}

// Encode writes a 20-byte header with a correct checksum.
func (b IPv4) Encode(f *IPv4Fields) {
	_ = b[19]
	b[v4VerIHL] = 0x45
	b[v4TOS] = f.TOS
	be.PutUint16(b[v4TotalLen:], f.TotalLen)
	be.PutUint16(b[v4ID:], f.ID)
	be.PutUint16(b[v4FlagsOff:], f.Flags)
	b[v4TTL] = f.TTL
	b[v4Proto] = f.Protocol
	copy(b[v4Src:v4Src+4], f.Src[:])
	copy(b[v4Dst:v4Dst+4], f.Dst[:])
	be.PutUint16(b[v4Checksum:], 0)
	be.PutUint16(b[v4Checksum:], ^Checksum(b[:IPv4MinLen], 0))
}
