package header

import "math/bits"

// Checksum returns the 16-bit ones'-complement sum (RFC 1071) of b added to
// initial, folded but not inverted. Feed the result of one call as the
// initial value of the next to checksum data in pieces (each piece but the
// last of even length). The checksum field value is ^Checksum(...).
func Checksum(b []byte, initial uint16) uint16 {
	sum := uint64(initial)
	// 8 bytes at a time into a 64-bit accumulator with end-around carry.
	for len(b) >= 8 {
		var c uint64
		sum, c = bits.Add64(sum, be.Uint64(b), 0)
		sum += c
		b = b[8:]
	}
	if len(b) >= 4 {
		var c uint64
		sum, c = bits.Add64(sum, uint64(be.Uint32(b)), 0)
		sum += c
		b = b[4:]
	}
	if len(b) >= 2 {
		var c uint64
		sum, c = bits.Add64(sum, uint64(be.Uint16(b)), 0)
		sum += c
		b = b[2:]
	}
	if len(b) == 1 {
		var c uint64
		sum, c = bits.Add64(sum, uint64(b[0])<<8, 0)
		sum += c
	}
	return fold64(sum)
}

func fold64(s uint64) uint16 {
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// ChecksumCombine adds two partial ones'-complement sums.
func ChecksumCombine(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// PseudoHeaderChecksumIPv4 returns the partial sum of the IPv4 pseudo-header
// (RFC 768, RFC 793) for a transport segment of the given length.
func PseudoHeaderChecksumIPv4(proto uint8, src, dst [4]byte, length uint16) uint16 {
	s := uint32(be.Uint16(src[0:])) + uint32(be.Uint16(src[2:])) +
		uint32(be.Uint16(dst[0:])) + uint32(be.Uint16(dst[2:])) +
		uint32(proto) + uint32(length)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// PseudoHeaderChecksumIPv6 returns the partial sum of the IPv6 pseudo-header
// (RFC 8200 §8.1) for an upper-layer packet of the given length.
func PseudoHeaderChecksumIPv6(proto uint8, src, dst [16]byte, length uint32) uint16 {
	s := Checksum(src[:], 0)
	s = Checksum(dst[:], s)
	s = ChecksumCombine(s, uint16(length>>16))
	s = ChecksumCombine(s, uint16(length))
	return ChecksumCombine(s, uint16(proto))
}

// ChecksumUpdate16 returns the checksum field value after a 16-bit word
// covered by it changed from old to new (RFC 1624 eqn. 3:
// HC' = ~(~HC + ~m + m')). It works on the field value as stored, so it keeps
// a valid checksum valid without touching the rest of the data.
func ChecksumUpdate16(check, old, new uint16) uint16 {
	s := uint32(^check) + uint32(^old) + uint32(new)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return ^uint16(s)
}

// ChecksumUpdate32 is ChecksumUpdate16 for a 32-bit field (an IPv4 address).
func ChecksumUpdate32(check uint16, old, new uint32) uint16 {
	s := uint32(^check) + uint32(^uint16(old>>16)) + uint32(^uint16(old)) +
		uint32(uint16(new>>16)) + uint32(uint16(new))
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return ^uint16(s)
}

// ChecksumUpdateBytes is ChecksumUpdate16 for a field of even length that is
// 16-bit aligned within the checksummed data (an IPv6 address, a port pair).
func ChecksumUpdateBytes(check uint16, old, new []byte) uint16 {
	s := ChecksumCombine(^check, ^Checksum(old, 0))
	s = ChecksumCombine(s, Checksum(new, 0))
	return ^s
}
