// Package header provides zero-allocation views of packet headers: Ethernet
// (with one 802.1Q tag), ARP, IPv4, IPv6 (with extension-header walking), UDP,
// TCP, ICMPv4, ICMPv6 and VXLAN, plus Internet checksums, full and incremental
// (RFC 1071, RFC 1624).
//
// A view is a byte slice type (type IPv4 []byte) whose methods read and write
// fields in network byte order. Views never copy and never allocate. A view's
// accessors assume the slice is long enough for the fixed header; callers check
// with the type's IsValid (or length constants) first. The package is a leaf:
// it imports nothing else of Tabby, so every other package can use it.
package header

import "encoding/binary"

var be = binary.BigEndian
