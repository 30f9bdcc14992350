package acl

// ParseICMPError parses the ICMP message starting at l4 (the ICMP header)
// of a packet of family f. When it is an error that quotes a packet
// (ICMPv4 types 3, 4, 5, 11, 12; ICMPv6 types 1-4), it fills out with the
// quoted packet's addresses, protocol and ports and returns true. It never
// allocates; truncated or malformed input returns false.
func ParseICMPError(l4 []byte, f Family, out *Packet) bool {
	if len(l4) < 8 {
		return false
	}
	t := l4[0]
	in := l4[8:]
	*out = Packet{Family: f}
	var l4off int
	if f == IPv4 {
		switch t {
		case 3, 4, 5, 11, 12:
		default:
			return false
		}
		if len(in) < 20 || in[0]>>4 != 4 {
			return false
		}
		ihl := int(in[0]&0xf) * 4
		if ihl < 20 {
			return false
		}
		out.Proto = in[9]
		out.Src4 = uint32(in[12])<<24 | uint32(in[13])<<16 | uint32(in[14])<<8 | uint32(in[15])
		out.Dst4 = uint32(in[16])<<24 | uint32(in[17])<<16 | uint32(in[18])<<8 | uint32(in[19])
		if in[6]&0x1f != 0 || in[7] != 0 { // non-first fragment: no ports
			return true
		}
		l4off = ihl
	} else {
		if t < 1 || t > 4 {
			return false
		}
		if len(in) < 40 || in[0]>>4 != 6 {
			return false
		}
		out.Proto = in[6]
		copy(out.Src6[:], in[8:24])
		copy(out.Dst6[:], in[24:40])
		l4off = 40
	}
	if len(in) < l4off+4 {
		return true
	}
	q := in[l4off:]
	switch out.Proto {
	case 6, 17, 132, 136:
		out.SrcPort = uint16(q[0])<<8 | uint16(q[1])
		out.DstPort = uint16(q[2])<<8 | uint16(q[3])
	case 1, 58:
		out.DstPort = uint16(q[0])<<8 | uint16(q[1])
		if len(q) >= 6 {
			out.SrcPort = uint16(q[4])<<8 | uint16(q[5])
		}
	}
	return true
}
