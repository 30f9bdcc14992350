package header

import "fmt"

// MAC is an Ethernet hardware address.
type MAC [6]byte

// String formats the address as aa:bb:cc:dd:ee:ff.
func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// IsBroadcast reports whether m is ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} }

// IsMulticast reports whether the group bit of m is set.
func (m MAC) IsMulticast() bool { return m[0]&1 == 1 }

// EtherType values used by Tabby.
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeVLAN uint16 = 0x8100
	EtherTypeQinQ uint16 = 0x88a8
	EtherTypeIPv6 uint16 = 0x86dd
)

// Lengths of Ethernet headers.
const (
	EthernetLen     = 14 // dst, src, type
	VLANTagLen      = 4  // TPID is the outer type; TCI, inner type follow
	EthernetVLANLen = EthernetLen + VLANTagLen
)

// Ethernet is a view of an Ethernet II header:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                     Destination MAC (6)                       |
//	+                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                               |       Source MAC (6)          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//	|                                                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           EtherType           |  (802.1Q: TCI, inner type)
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type Ethernet []byte

const (
	ethDst   = 0
	ethSrc   = 6
	ethType  = 12
	ethTCI   = 14
	ethType2 = 16
)

// IsValid reports whether b holds at least an untagged Ethernet header.
func (b Ethernet) IsValid() bool { return len(b) >= EthernetLen }

// Dst returns the destination address.
func (b Ethernet) Dst() MAC { return MAC(b[ethDst : ethDst+6]) }

// Src returns the source address.
func (b Ethernet) Src() MAC { return MAC(b[ethSrc : ethSrc+6]) }

// SetDst sets the destination address.
func (b Ethernet) SetDst(m MAC) { copy(b[ethDst:ethDst+6], m[:]) }

// SetSrc sets the source address.
func (b Ethernet) SetSrc(m MAC) { copy(b[ethSrc:ethSrc+6], m[:]) }

// Type returns the outer EtherType (the TPID for a tagged frame).
func (b Ethernet) Type() uint16 { return be.Uint16(b[ethType:]) }

// SetType sets the outer EtherType.
func (b Ethernet) SetType(t uint16) { be.PutUint16(b[ethType:], t) }

// Tagged reports whether the frame carries an 802.1Q (or 802.1ad) tag.
func (b Ethernet) Tagged() bool {
	t := b.Type()
	return t == EtherTypeVLAN || t == EtherTypeQinQ
}

// VLAN returns the VLAN id of a tagged frame. The caller checks Tagged and
// that len(b) >= EthernetVLANLen.
func (b Ethernet) VLAN() uint16 { return be.Uint16(b[ethTCI:]) & 0x0fff }

// InnerType returns the EtherType after the 802.1Q tag of a tagged frame.
func (b Ethernet) InnerType() uint16 { return be.Uint16(b[ethType2:]) }

// Encode writes an untagged header.
func (b Ethernet) Encode(dst, src MAC, etherType uint16) {
	copy(b[ethDst:ethDst+6], dst[:])
	copy(b[ethSrc:ethSrc+6], src[:])
	be.PutUint16(b[ethType:], etherType)
}
