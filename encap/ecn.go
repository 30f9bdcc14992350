package encap

import "github.com/tabbynet/tabby/datapath/header"

// ECN codepoints (RFC 3168), the low two bits of the TOS / traffic class.
const (
	ecnNotECT uint8 = 0
	ecnECT1   uint8 = 1
	ecnECT0   uint8 = 2
	ecnCE     uint8 = 3
	ecnMask   uint8 = 3
)

// outerTOS returns the outer TOS for an inner DS field under the uniform
// DSCP model and RFC 6040 normal-mode ECN encapsulation: the DSCP is copied,
// the ECN field is copied except that CE becomes ECT(0) (RFC 6040 §4.1; the
// same as Linux's INET_ECN_encapsulate), so congestion experienced before
// the tunnel is not counted again by the egress and the outer header can
// still be marked on the way.
func outerTOS(inner uint8) uint8 {
	if inner&ecnMask == ecnCE {
		return inner&^ecnMask | ecnECT0
	}
	return inner
}

// decapECN applies the RFC 6040 §4.2 decapsulation table to an outer and an
// inner ECN field and returns the new inner DS field:
//
//	                 arriving outer header
//	inner      Not-ECT   ECT(0)       ECT(1)       CE
//	Not-ECT    Not-ECT   Not-ECT(!!!) Not-ECT(!!!) drop(!!!)
//	ECT(0)     ECT(0)    ECT(0)       ECT(1)       CE
//	ECT(1)     ECT(1)    ECT(1)       ECT(1)       CE
//	CE         CE        CE           CE(!!!)      CE
//
// (!!!) cells are reported as OKUnusualECN, the drop cell as DropECN.
func decapECN(outer, inner uint8) (uint8, Verdict) {
	o, i := outer&ecnMask, inner&ecnMask
	switch {
	case o == ecnNotECT:
		return inner, OK
	case i == ecnNotECT:
		if o == ecnCE {
			return inner, DropECN
		}
		return inner, OKUnusualECN
	case o == ecnCE:
		return inner | ecnCE, OK
	case o == ecnECT1:
		if i == ecnCE {
			return inner, OKUnusualECN
		}
		return inner&^ecnMask | ecnECT1, OK
	}
	return inner, OK // outer ECT(0): the inner field stands
}

// decapECNIPv4 applies decapECN to the IPv4 header at ip (at least 20
// bytes) and updates its checksum incrementally (RFC 1624).
func decapECNIPv4(outer uint8, ip []byte) Verdict {
	_ = ip[header.IPv4MinLen-1]
	tos, v := decapECN(outer, ip[1])
	if tos != ip[1] {
		old := be.Uint16(ip[0:])
		ip[1] = tos
		be.PutUint16(ip[10:], header.ChecksumUpdate16(be.Uint16(ip[10:]), old, be.Uint16(ip[0:])))
	}
	return v
}

// decapECNIPv6 applies decapECN to the IPv6 header at ip (at least 40 bytes).
func decapECNIPv6(outer uint8, ip []byte) Verdict {
	h := header.IPv6(ip)
	tc := h.TrafficClass()
	ntc, v := decapECN(outer, tc)
	if ntc != tc {
		h.SetTrafficClass(ntc)
	}
	return v
}
