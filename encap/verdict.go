package encap

// Verdict is the outcome of a decapsulation, an ICMP generation or a
// fragmentation: OK (or OKUnusualECN) when the operation was done, otherwise
// the reason it was not. The datapath counts verdicts per worker; they are
// the drop reasons of the tunnel stages.
type Verdict uint8

// Verdicts. OK is the zero value.
const (
	// OK: the operation was done.
	OK Verdict = iota
	// OKUnusualECN: the packet was decapsulated, but its outer and inner ECN
	// fields formed a combination RFC 6040 §4.2 marks as currently unused
	// ("(!!!)": outer ECT(0) or ECT(1) over a Not-ECT inner, or outer ECT(1)
	// over a CE inner). The packet is forwarded; the event is worth counting.
	OKUnusualECN

	// BadArgs: off, n or the MTU passed by the caller is out of range.
	BadArgs
	// NoHeadroom: there is not enough room before off for the headers to
	// be written.
	NoHeadroom

	// DropShort: the frame is too short for the headers it must carry.
	DropShort
	// DropNotIPv4: the outer EtherType is not IPv4 (untagged).
	DropNotIPv4
	// DropBadIPHeader: the outer IPv4 header is malformed (version, IHL, or
	// total length inconsistent with the frame).
	DropBadIPHeader
	// DropBadIPChecksum: the outer IPv4 header checksum does not verify.
	DropBadIPChecksum
	// DropFragment: the outer packet is an IPv4 fragment (tunnel packets are
	// sent with DF; fragments are not reassembled).
	DropFragment
	// DropNotTunnel: the outer protocol is not the tunnel's (UDP for VXLAN,
	// 4 for IP-in-IP).
	DropNotTunnel
	// DropBadUDPLength: the UDP length is too small for VXLAN and an
	// Ethernet header, or runs past the IP packet.
	DropBadUDPLength
	// DropBadUDPChecksum: a non-zero outer UDP checksum does not verify.
	DropBadUDPChecksum
	// DropNoVNI: the VXLAN I flag is clear.
	DropNoVNI
	// DropWrongVNI: the VNI is not the expected one.
	DropWrongVNI
	// DropBadInner: the inner packet is malformed (IP-in-IP: not a valid
	// IPv4 packet; VXLAN: an IP EtherType without a whole IP header).
	DropBadInner
	// DropECN: the outer header is CE and the inner Not-ECT: RFC 6040 §4.2
	// requires the packet to be dropped, as congestion cannot be signalled.
	DropECN

	// NoICMPToICMPError: the offending packet is an ICMP error message.
	NoICMPToICMPError
	// NoICMPToFragment: the offending packet is a non-first fragment.
	NoICMPToFragment
	// NoICMPNotUnicast: the offending packet's source is not a unicast host
	// (zero, loopback, broadcast, multicast, class E, unspecified) or it was
	// sent to a broadcast or multicast address (IP or link layer).
	NoICMPNotUnicast
	// NoICMPMalformed: the offending packet is not a well-formed IP packet
	// (or its IPv6 extension headers cannot be walked), so it cannot be
	// quoted safely.
	NoICMPMalformed

	// FragDF: the packet has DF set and must not be fragmented; answer with
	// FragNeededIPv4 instead.
	FragDF
	// FragBadPacket: the packet to fragment is not a valid IPv4 packet, or
	// its options are malformed.
	FragBadPacket
	// FragNoBuffers: fewer destination buffers than fragments.
	FragNoBuffers
	// FragBufferTooSmall: a destination buffer is shorter than its fragment.
	FragBufferTooSmall

	numVerdicts
)

var verdictNames = [numVerdicts]string{
	OK:                 "ok",
	OKUnusualECN:       "ok-unusual-ecn",
	BadArgs:            "bad-args",
	NoHeadroom:         "no-headroom",
	DropShort:          "drop-short",
	DropNotIPv4:        "drop-not-ipv4",
	DropBadIPHeader:    "drop-bad-ip-header",
	DropBadIPChecksum:  "drop-bad-ip-checksum",
	DropFragment:       "drop-fragment",
	DropNotTunnel:      "drop-not-tunnel",
	DropBadUDPLength:   "drop-bad-udp-length",
	DropBadUDPChecksum: "drop-bad-udp-checksum",
	DropNoVNI:          "drop-no-vni",
	DropWrongVNI:       "drop-wrong-vni",
	DropBadInner:       "drop-bad-inner",
	DropECN:            "drop-ecn",
	NoICMPToICMPError:  "no-icmp-to-icmp-error",
	NoICMPToFragment:   "no-icmp-to-fragment",
	NoICMPNotUnicast:   "no-icmp-not-unicast",
	NoICMPMalformed:    "no-icmp-malformed",
	FragDF:             "frag-df",
	FragBadPacket:      "frag-bad-packet",
	FragNoBuffers:      "frag-no-buffers",
	FragBufferTooSmall: "frag-buffer-too-small",
}

// NumVerdicts is the number of Verdict values, for sizing counter arrays
// indexed by Verdict.
const NumVerdicts = int(numVerdicts)

// String returns the verdict's name, such as "drop-wrong-vni".
func (v Verdict) String() string {
	if v < numVerdicts {
		return verdictNames[v]
	}
	return "verdict-unknown"
}

// IsOK reports whether the operation was done (OK or OKUnusualECN).
func (v Verdict) IsOK() bool { return v <= OKUnusualECN }
