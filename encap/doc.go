// Package encap encapsulates and decapsulates Tabby's pod traffic between
// nodes: IPv4-in-IPv4 (IP protocol 4, RFC 2003) and VXLAN (RFC 7348: UDP
// port 4789, VNI 4096 by default, Calico's settings). It also builds the
// ICMP errors the tunnel ingress sends back (fragmentation needed, packet
// too big, time exceeded) and fragments inner IPv4 packets.
//
// # Frame model
//
// A frame is a buffer buf (a whole UMEM or mem-port frame) holding the
// packet at buf[off:off+n], starting with its Ethernet header; off is the
// headroom, at least 128 bytes in Tabby's ports. Encapsulation writes the
// outer headers into the headroom in place, never copying the payload, and
// returns the new offset and length; decapsulation validates and moves the
// offset forward. The functions on these paths do not allocate, make no
// interface calls and use no defer; a failed encapsulation returns length 0
// and the other operations return a Verdict naming what went wrong, which
// the datapath counts per worker. Every function works on the frame given
// by the caller and keeps no reference to it.
//
// # Tunnels
//
// NewTunnel turns a TunnelConfig (underlay MACs and addresses, TTL, MTU,
// VNI, port, VTEP MACs) into a Tunnel holding precomputed outer header
// templates, so that encapsulation copies 34 or 50 bytes and patches the
// per-packet fields. A Tunnel is immutable apart from its atomic ID counter
// and is shared by all workers. MTU is the underlay MTU minus IPIPOverhead
// (20) or VXLANOverhead (50: outer IPv4, UDP, VXLAN and the inner Ethernet
// header).
//
// # Outer header choices
//
//   - DF is always set on the outer IPv4 header (as Linux IP-in-IP tunnels
//     do with their default pmtudisc; Linux VXLAN devices leave it clear by
//     default). Tabby keeps every outer packet within the underlay MTU: an
//     inner packet larger than the tunnel MTU is answered with an ICMP error
//     (DF set) or fragmented before encapsulation (DF clear). The underlay
//     therefore never needs to fragment, and an underlay hop with a smaller
//     MTU reports it instead of fragmenting — outer fragments are dropped
//     at decapsulation, which does not reassemble.
//   - The IPv4 ID comes from a per-tunnel counter (an atomic add, like
//     Linux's per-destination ident counters). With DF set the datagram is
//     atomic (RFC 6864), so the ID only tells packets apart in captures.
//   - TTL: the pipe model. The outer TTL is the tunnel's (default 64); the
//     inner TTL is neither copied out nor changed by encapsulation or
//     decapsulation (the forwarding stage decrements it).
//   - DSCP: the uniform model. The inner DSCP (IPv4 TOS or IPv6 traffic
//     class) is copied to the outer header; frames that are not untagged
//     IPv4 or IPv6 get DSCP 0.
//   - ECN: RFC 6040 normal mode, as Linux's INET_ECN_encapsulate. The
//     inner ECN field is copied to the outer header, except that CE is sent
//     as ECT(0). (Compatibility mode, Not-ECT outer, is for egresses that
//     predate RFC 6040; the kernel peer is not one.)
//   - VXLAN: the UDP source port is 49152 + the top 14 bits of the inner
//     flow hash (RFC 7348 §5; FlowHash), the UDP checksum is 0 (allowed for
//     IPv4 by RFC 7348 §5), the I flag is set, and the inner Ethernet MACs
//     are rewritten to the tunnel's VTEP MACs.
//   - IP-in-IP drops the inner Ethernet header; inner link padding is not
//     carried.
//
// # Decapsulation
//
// VXLANDecap and IPIPDecap check the outer Ethernet type, the outer IPv4
// header (version, IHL, total length, checksum; not a fragment), the
// protocol, and for VXLAN the UDP length, a non-zero UDP checksum, the I
// flag and the VNI. They then apply RFC 6040 §4.2 to the inner IP header:
// outer CE marks the inner CE (IPv4 checksum updated incrementally, RFC
// 1624), outer ECT(1) turns inner ECT(0) into ECT(1), outer CE over a
// Not-ECT inner is dropped (DropECN), and the combinations RFC 6040 calls
// currently unused pass as OKUnusualECN so they can be counted. Outer
// destination address and port are matched by the XDP steering program
// before a frame reaches the worker. Neither function panics on any input
// (both are fuzzed), and neither modifies the frame when it drops.
//
// # Path MTU and fragmentation
//
// The forwarding stage compares an inner IP packet with Tunnel.MTU before
// encapsulating. When it is too big:
//
//   - IPv4 with DF, and IPv6 (which routers never fragment): answer with
//     FragNeededIPv4 (type 3 code 4 with the tunnel MTU, RFC 1191) or
//     PacketTooBigIPv6 (RFC 4443), built in place over the offending frame
//     and sent back towards its source; the packet itself is dropped.
//   - IPv4 without DF: FragmentIPv4 splits it into RFC 791 fragments
//     written into spare frames the stage supplies, each then encapsulated
//     on its own; when no spare frames are at hand the packet is dropped
//     and counted.
//
// TimeExceededIPv4 and TimeExceededIPv6 build the TTL / hop-limit errors
// the same way. No ICMP error is sent in answer to an ICMP error, to a
// non-first fragment, or to a packet whose source is not a single host or
// (except packet-too-big) whose destination is broadcast or multicast (RFC
// 1812 §4.3.2.7, RFC 4443 §2.4(e)); the verdict says which rule applied.
// The ICMPv4 errors quote the IP header and 8 bytes of payload (RFC 792);
// ICMPv6 errors quote as much as fits in 1280 bytes.
package encap
