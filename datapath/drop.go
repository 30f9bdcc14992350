package datapath

// DropReason says why the pipeline dropped a frame.
type DropReason uint8

// Drop reasons. The names (String) are stable: metrics and the CLI use them.
const (
	DropNone              DropReason = iota
	DropTruncated                    // shorter than the headers it claims
	DropNotIP                        // no IPv4/IPv6 payload and no host path for it
	DropBadIPv4Header                // version, IHL or total length inconsistent
	DropBadIPv4Checksum              // header checksum does not verify
	DropBadIPv6Header                // version or payload length inconsistent
	DropBadIPv6ExtHeaders            // extension-header chain malformed or too long
	DropBadL4Header                  // TCP/UDP/ICMP header truncated or inconsistent
	DropMartian                      // source or destination not routable (multicast/loopback/unspecified source)
	DropNoSnapshot                   // no forwarding state published yet
	DropNoRoute                      // LPM miss or route to an unreachable next hop
	DropBlackhole                    // route to a blackhole next hop
	DropBadNextHop                   // next hop id unknown to this snapshot (control-plane race or bug)
	DropTTLExpired                   // TTL/hop limit expired (an ICMP time-exceeded was sent when allowed)
	DropTooBig                       // larger than the egress MTU (an ICMP too-big was sent when allowed)
	DropTooBigNoDF                   // larger than the tunnel MTU, DF clear, and no frame to fragment into
	DropBadTunnel                    // tunnel packet for us that does not decapsulate (bad VNI, lengths, flags)
	DropECN                          // RFC 6040: outer CE on a not-ECT inner packet
	DropEncapUnsupported             // e.g. IPv6 inner over IP-in-IP
	DropNoHeadroom                   // frame lacks the headroom encapsulation needs
	DropPolicy                       // denied by network policy
	DropNoHostPath                   // for the host but no host port is configured
	DropTxFull                       // egress port refused the frame
	DropLoop                         // tunnel nesting or ICMP re-route limit reached
	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropNone:              "none",
	DropTruncated:         "truncated",
	DropNotIP:             "not_ip",
	DropBadIPv4Header:     "bad_ipv4_header",
	DropBadIPv4Checksum:   "bad_ipv4_checksum",
	DropBadIPv6Header:     "bad_ipv6_header",
	DropBadIPv6ExtHeaders: "bad_ipv6_ext_headers",
	DropBadL4Header:       "bad_l4_header",
	DropMartian:           "martian",
	DropNoSnapshot:        "no_snapshot",
	DropNoRoute:           "no_route",
	DropBlackhole:         "blackhole",
	DropBadNextHop:        "bad_next_hop",
	DropTTLExpired:        "ttl_expired",
	DropTooBig:            "too_big",
	DropTooBigNoDF:        "too_big_no_df",
	DropBadTunnel:         "bad_tunnel",
	DropECN:               "ecn_ce_not_ect",
	DropEncapUnsupported:  "encap_unsupported",
	DropNoHeadroom:        "no_headroom",
	DropPolicy:            "policy",
	DropNoHostPath:        "no_host_path",
	DropTxFull:            "tx_full",
	DropLoop:              "loop",
}

// String returns the stable snake_case name of the reason.
func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// DropReasons returns every reason except DropNone, in order.
func DropReasons() []DropReason {
	out := make([]DropReason, 0, numDropReasons-1)
	for r := DropNone + 1; r < numDropReasons; r++ {
		out = append(out, r)
	}
	return out
}
