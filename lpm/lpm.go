package lpm

const (
	// MaxNextHop is the largest next-hop id a table stores.
	MaxNextHop = 1<<24 - 1
	// NoRoute is what LookupBatch writes for an address no prefix contains.
	NoRoute uint32 = ^uint32(0)
)

// IPv4 entry encoding, shared by tbl24 and group entries:
//
//	bit 31      extended: the /24 has a group (tbl24 only; no other bit is used)
//	bit 30      valid: a prefix covers the entry
//	bits 24-29  length of that prefix (0..32)
//	bits 0-23   its next hop
//
// An entry without a route is 0, so its length field reads 0 too.
const (
	entryExt   = 1 << 31
	entryValid = 1 << 30
	depthShift = 24
	depthBits  = 0x3f
	nhMask     = 1<<24 - 1
)

// entry4 encodes a valid IPv4 entry.
func entry4(depth int, nh uint32) uint32 {
	return entryValid | uint32(depth)<<depthShift | nh
}

// nhOf4 converts an entry that is not extended to a batch result: its next hop,
// or NoRoute when it is not valid. It has no branch.
func nhOf4(e uint32) uint32 {
	return e&nhMask | (e>>30&1 - 1)
}

// IPv6 value encoding (node values and /16 defaults): bits 24-31 hold the
// prefix length plus one (0: no prefix), bits 0-23 the next hop.
func entry6(depth int, nh uint32) uint32 { return uint32(depth+1)<<24 | nh }

// nhOf6 converts a value to a batch result without a branch.
func nhOf6(v uint32) uint32 {
	return v&nhMask | uint32((int32(v>>24)-1)>>31)
}

// mask4 returns the network mask of an IPv4 prefix length.
func mask4(bitsLen int) uint32 {
	if bitsLen == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bitsLen)
}
