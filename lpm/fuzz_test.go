package lpm

import (
	"net/netip"
	"testing"
)

// The fuzz targets decode operations (insert, delete, lookup) from the input
// and run them on the table and on the reference. Addresses are drawn from a
// few small regions so that prefixes overlap often. At the end every prefix
// is deleted again: the table must be empty, which also lets one table
// (64 MiB for IPv4, 512 KiB for IPv6) serve every input of a fuzzing process.

var fuzz4 fuzzTable[*Table4]

// fuzzBases4 are the /16s fuzzed IPv4 addresses fall into.
var fuzzBases4 = [4]uint32{0x0a000000, 0x0a010000, 0x00000000, 0xffff0000}

// decodeFuzz4 decodes one 4-byte operation of FuzzTable4 (see fuzzOps).
func decodeFuzz4(b []byte) (op byte, p netip.Prefix, addr netip.Addr) {
	// Lengths 8..32: a shorter prefix writes up to 16M entries, which would
	// make fuzzing crawl (the table-driven and churn tests cover them).
	op, bitsLen := b[0], 8+int(b[1])%25
	a := fuzzBases4[op>>2&3] | uint32(b[2])<<8 | uint32(b[3])
	if bitsLen <= 16 {
		// Short prefixes may reach outside the base /16.
		a ^= uint32(b[2]&0x0f) << 24
	}
	addr = u32ToAddr(a)
	return op, netip.PrefixFrom(addr, bitsLen).Masked(), addr
}

func FuzzTable4(f *testing.F) {
	f.Add([]byte{0x00, 8, 0, 0, 0x01, 24, 5, 0, 0x03, 0, 5, 7})
	f.Add([]byte{0x10, 24, 1, 2, 0x20, 0, 0, 0, 0x32, 24, 1, 2, 0x03, 0, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzz4.run(t, NewTable4, func(tab *Table4) {
			ref := newReference()
			ipv4.fuzzOps(t, tab, ref, data, 4, decodeFuzz4)
			deleteRef(t, tab, ref)
			if tab.Len() != 0 || tab.liveGroups() != 0 {
				t.Fatalf("after deleting everything: Len() = %d, %d groups", tab.Len(), tab.liveGroups())
			}
		})
	})
}

var fuzz6 fuzzTable[*Table6]

// fuzzBases6 are the /32s fuzzed IPv6 addresses fall into.
var fuzzBases6 = [4][4]byte{{0x20, 0x01, 0x0d, 0xb8}, {0x20, 0x01, 0x0d, 0xb9}, {0, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}}

// decodeFuzz6 decodes one 8-byte operation of FuzzTable6 (see fuzzOps).
func decodeFuzz6(b []byte) (op byte, p netip.Prefix, addr netip.Addr) {
	op, bitsLen := b[0], int(b[1])%129
	var a [16]byte
	copy(a[:], fuzzBases6[op>>2&3][:])
	if bitsLen <= 32 {
		a[0] ^= b[2] // short prefixes may reach outside the base /32
	}
	copy(a[4:8], b[2:6])
	a[12] = b[6]
	a[15] = b[7]
	addr = netip.AddrFrom16(a)
	return op, netip.PrefixFrom(addr, bitsLen).Masked(), addr
}

func FuzzTable6(f *testing.F) {
	f.Add([]byte{0x00, 32, 0, 0, 0, 0, 0, 0, 0x01, 48, 0, 5, 0, 0, 0, 0, 0x03, 0, 0, 5, 0, 0, 0, 7})
	f.Add([]byte{0x10, 128, 1, 2, 3, 4, 5, 6, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x32, 128, 1, 2, 3, 4, 5, 6})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzz6.run(t, NewTable6, func(tab *Table6) {
			ref := newReference()
			ipv6.fuzzOps(t, tab, ref, data, 8, decodeFuzz6)
			checkTable6(t, tab)
			deleteRef(t, tab, ref)
			if tab.Len() != 0 || tab.liveNodes() != 0 || tab.MemoryBytes() != top6Bytes {
				t.Fatalf("after deleting everything: Len() = %d, %d nodes, %d bytes", tab.Len(), tab.liveNodes(), tab.MemoryBytes())
			}
			checkTable6(t, tab)
		})
	})
}
