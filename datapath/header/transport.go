package header

// UDPLen is the length of a UDP header.
const UDPLen = 8

// UDP is a view of a UDP header (RFC 768):
//
//	source port (2) | destination port (2) | length (2) | checksum (2)
type UDP []byte

// IsValid reports whether b holds a UDP header whose length field is
// consistent with b (8 ≤ length ≤ len(b)).
func (b UDP) IsValid() bool {
	if len(b) < UDPLen {
		return false
	}
	l := int(be.Uint16(b[4:]))
	return l >= UDPLen && l <= len(b)
}

// SrcPort returns the source port.
func (b UDP) SrcPort() uint16 { return be.Uint16(b[0:]) }

// DstPort returns the destination port.
func (b UDP) DstPort() uint16 { return be.Uint16(b[2:]) }

// Length returns the length field (header and payload).
func (b UDP) Length() uint16 { return be.Uint16(b[4:]) }

// Checksum returns the checksum field (0: none, IPv4 only).
func (b UDP) Checksum() uint16 { return be.Uint16(b[6:]) }

// SetChecksum sets the checksum field.
func (b UDP) SetChecksum(v uint16) { be.PutUint16(b[6:], v) }

// Payload returns the bytes after the header, up to the length field.
func (b UDP) Payload() []byte { return b[UDPLen:b.Length()] }

// Encode writes the header. The checksum is set to csum (0 for none).
func (b UDP) Encode(src, dst, length, csum uint16) {
	_ = b[7]
	be.PutUint16(b[0:], src)
	be.PutUint16(b[2:], dst)
	be.PutUint16(b[4:], length)
	be.PutUint16(b[6:], csum)
}

// TCPMinLen is the length of a TCP header without options.
const TCPMinLen = 20

// TCP flags.
const (
	TCPFlagFIN uint8 = 0x01
	TCPFlagSYN uint8 = 0x02
	TCPFlagRST uint8 = 0x04
	TCPFlagPSH uint8 = 0x08
	TCPFlagACK uint8 = 0x10
	TCPFlagURG uint8 = 0x20
	TCPFlagECE uint8 = 0x40
	TCPFlagCWR uint8 = 0x80
)

// TCP is a view of a TCP header (RFC 9293):
//
//	source port (2) | destination port (2) | sequence (4) | acknowledgment (4)
//	data offset (4 bits) | reserved | flags (8) | window (2) | checksum (2) | urgent (2)
type TCP []byte

// IsValid reports whether b holds a TCP header with a data offset ≥ 5 words
// that fits in b.
func (b TCP) IsValid() bool {
	if len(b) < TCPMinLen {
		return false
	}
	hl := b.HeaderLen()
	return hl >= TCPMinLen && hl <= len(b)
}

// SrcPort returns the source port.
func (b TCP) SrcPort() uint16 { return be.Uint16(b[0:]) }

// DstPort returns the destination port.
func (b TCP) DstPort() uint16 { return be.Uint16(b[2:]) }

// Seq returns the sequence number.
func (b TCP) Seq() uint32 { return be.Uint32(b[4:]) }

// Ack returns the acknowledgment number.
func (b TCP) Ack() uint32 { return be.Uint32(b[8:]) }

// HeaderLen returns the header length in bytes (data offset × 4).
func (b TCP) HeaderLen() int { return int(b[12]>>4) * 4 }

// Flags returns the flag byte.
func (b TCP) Flags() uint8 { return b[13] }

// Checksum returns the checksum field.
func (b TCP) Checksum() uint16 { return be.Uint16(b[16:]) }

// SetChecksum sets the checksum field.
func (b TCP) SetChecksum(v uint16) { be.PutUint16(b[16:], v) }

// ICMPv4MinLen is the length of an ICMPv4 header (type, code, checksum and the
// 4-byte rest-of-header).
const ICMPv4MinLen = 8

// ICMPv4 types and codes used by Tabby.
const (
	ICMPv4EchoReply       uint8 = 0
	ICMPv4DestUnreachable uint8 = 3
	ICMPv4EchoRequest     uint8 = 8
	ICMPv4TimeExceeded    uint8 = 11

	ICMPv4CodeFragNeeded      uint8 = 4 // with ICMPv4DestUnreachable
	ICMPv4CodeTTLExceeded     uint8 = 0 // with ICMPv4TimeExceeded
	ICMPv4CodeHostUnreachable uint8 = 1
)

// ICMPv4 is a view of an ICMPv4 header (RFC 792):
//
//	type (1) | code (1) | checksum (2) | rest of header (4: id+seq, or unused+MTU)
type ICMPv4 []byte

// IsValid reports whether b holds an ICMPv4 header.
func (b ICMPv4) IsValid() bool { return len(b) >= ICMPv4MinLen }

// Type returns the message type.
func (b ICMPv4) Type() uint8 { return b[0] }

// Code returns the message code.
func (b ICMPv4) Code() uint8 { return b[1] }

// Checksum returns the checksum field.
func (b ICMPv4) Checksum() uint16 { return be.Uint16(b[2:]) }

// SetChecksum sets the checksum field.
func (b ICMPv4) SetChecksum(v uint16) { be.PutUint16(b[2:], v) }

// ID returns the echo identifier.
func (b ICMPv4) ID() uint16 { return be.Uint16(b[4:]) }

// Seq returns the echo sequence number.
func (b ICMPv4) Seq() uint16 { return be.Uint16(b[6:]) }

// MTU returns the next-hop MTU of a fragmentation-needed message (RFC 1191).
func (b ICMPv4) MTU() uint16 { return be.Uint16(b[6:]) }

// IsError reports whether the type is an error message that quotes the
// offending packet (destination unreachable, time exceeded, parameter
// problem, redirect, source quench).
func (b ICMPv4) IsError() bool {
	switch b.Type() {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// ICMPv6MinLen is the length of an ICMPv6 header.
const ICMPv6MinLen = 8

// ICMPv6 types used by Tabby.
const (
	ICMPv6DestUnreachable uint8 = 1
	ICMPv6PacketTooBig    uint8 = 2
	ICMPv6TimeExceeded    uint8 = 3
	ICMPv6ParamProblem    uint8 = 4
	ICMPv6EchoRequest     uint8 = 128
	ICMPv6EchoReply       uint8 = 129
	ICMPv6NeighborSolicit uint8 = 135
	ICMPv6NeighborAdvert  uint8 = 136
)

// ICMPv6 is a view of an ICMPv6 header (RFC 4443); same layout as ICMPv4.
type ICMPv6 []byte

// IsValid reports whether b holds an ICMPv6 header.
func (b ICMPv6) IsValid() bool { return len(b) >= ICMPv6MinLen }

// Type returns the message type.
func (b ICMPv6) Type() uint8 { return b[0] }

// Code returns the message code.
func (b ICMPv6) Code() uint8 { return b[1] }

// Checksum returns the checksum field.
func (b ICMPv6) Checksum() uint16 { return be.Uint16(b[2:]) }

// SetChecksum sets the checksum field.
func (b ICMPv6) SetChecksum(v uint16) { be.PutUint16(b[2:], v) }

// ID returns the echo identifier.
func (b ICMPv6) ID() uint16 { return be.Uint16(b[4:]) }

// IsError reports whether the type is an error message (types below 128).
func (b ICMPv6) IsError() bool { return b.Type() < 128 }

// VXLANLen is the length of a VXLAN header.
const VXLANLen = 8

// VXLANPort is the IANA-assigned VXLAN UDP port.
const VXLANPort = 4789

// VXLANFlagVNI is the I flag: the VNI field is valid.
const VXLANFlagVNI uint8 = 0x08

// VXLAN is a view of a VXLAN header (RFC 7348):
//
//	flags (1: I = 0x08) | reserved (3) | VNI (3) | reserved (1)
type VXLAN []byte

// IsValid reports whether b holds a VXLAN header with the I flag set.
func (b VXLAN) IsValid() bool { return len(b) >= VXLANLen && b[0]&VXLANFlagVNI != 0 }

// VNI returns the 24-bit VXLAN network identifier.
func (b VXLAN) VNI() uint32 { return be.Uint32(b[4:]) >> 8 }

// Encode writes a header with the I flag and the given VNI.
func (b VXLAN) Encode(vni uint32) {
	_ = b[7]
	b[0], b[1], b[2], b[3] = VXLANFlagVNI, 0, 0, 0
	be.PutUint32(b[4:], vni<<8)
}
