package lpm

import (
	"net/netip"
	"sync"
	"testing"
)

// The fuzz targets decode operations (insert, delete, lookup) from the input
// and run them on the table and on the reference. Addresses are drawn from a
// few small regions so that prefixes overlap often. At the end every prefix
// is deleted again: the table must be empty, which also lets one table
// (64 MiB for IPv4, 512 KiB for IPv6) serve every input of a fuzzing process.

var fuzz4 struct {
	sync.Mutex
	t *Table4
}

// fuzzBases4 are the /16s fuzzed IPv4 addresses fall into.
var fuzzBases4 = [4]uint32{0x0a000000, 0x0a010000, 0x00000000, 0xffff0000}

func FuzzTable4(f *testing.F) {
	f.Add([]byte{0x00, 8, 0, 0, 0x01, 24, 5, 0, 0x03, 0, 5, 7})
	f.Add([]byte{0x10, 24, 1, 2, 0x20, 0, 0, 0, 0x32, 24, 1, 2, 0x03, 0, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzz4.Lock()
		defer fuzz4.Unlock()
		if fuzz4.t == nil {
			fuzz4.t = NewTable4()
		}
		tab := fuzz4.t
		ref := newReference()
		var touched []netip.Prefix
		for ; len(data) >= 4; data = data[4:] {
			// Lengths 8..32: a shorter prefix writes up to 16M entries,
			// which would make fuzzing crawl (the table-driven and churn
			// tests cover them).
			op, bitsLen := data[0], 8+int(data[1])%25
			addr := fuzzBases4[op>>2&3] | uint32(data[2])<<8 | uint32(data[3])
			if bitsLen <= 16 {
				// Short prefixes may reach outside the base /16.
				addr ^= uint32(data[2]&0x0f) << 24
			}
			p := netip.PrefixFrom(u32ToAddr(addr), bitsLen).Masked()
			switch op & 3 {
			case 0, 1:
				nh := uint32(op >> 4)
				if err := tab.Insert(p, nh); err != nil {
					t.Fatal(err)
				}
				ref.insert(p, nh)
				touched = append(touched, p)
			case 2:
				existed, err := tab.Delete(p)
				if err != nil {
					t.Fatal(err)
				}
				if want := ref.delete(p); existed != want {
					t.Fatalf("Delete(%v) = %v, want %v", p, existed, want)
				}
			case 3:
				check4(t, tab, ref, u32ToAddr(addr))
			}
		}
		for _, p := range touched {
			for _, a := range []netip.Addr{p.Addr(), lastAddr(p), p.Addr().Prev(), lastAddr(p).Next()} {
				if a.IsValid() {
					check4(t, tab, ref, a)
				}
			}
		}
		if tab.Len() != ref.len() {
			t.Errorf("Len() = %d, want %d", tab.Len(), ref.len())
		}
		for _, p := range ref.prefixes() {
			if _, err := tab.Delete(p); err != nil {
				t.Fatal(err)
			}
		}
		if tab.Len() != 0 || tab.liveGroups() != 0 {
			t.Fatalf("after deleting everything: Len() = %d, %d groups", tab.Len(), tab.liveGroups())
		}
		if t.Failed() {
			fuzz4.t = nil // start the next input from a fresh table
		}
	})
}

var fuzz6 struct {
	sync.Mutex
	t *Table6
}

// fuzzBases6 are the /32s fuzzed IPv6 addresses fall into.
var fuzzBases6 = [4][4]byte{{0x20, 0x01, 0x0d, 0xb8}, {0x20, 0x01, 0x0d, 0xb9}, {0, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}}

func FuzzTable6(f *testing.F) {
	f.Add([]byte{0x00, 32, 0, 0, 0, 0, 0, 0, 0x01, 48, 0, 5, 0, 0, 0, 0, 0x03, 0, 0, 5, 0, 0, 0, 7})
	f.Add([]byte{0x10, 128, 1, 2, 3, 4, 5, 6, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x32, 128, 1, 2, 3, 4, 5, 6})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzz6.Lock()
		defer fuzz6.Unlock()
		if fuzz6.t == nil {
			fuzz6.t = NewTable6()
		}
		tab := fuzz6.t
		ref := newReference()
		var touched []netip.Prefix
		for ; len(data) >= 8; data = data[8:] {
			op, bitsLen := data[0], int(data[1])%129
			var a [16]byte
			copy(a[:], fuzzBases6[op>>2&3][:])
			if bitsLen <= 32 {
				a[0] ^= data[2] // short prefixes may reach outside the base /32
			}
			copy(a[4:8], data[2:6])
			a[12] = data[6]
			a[15] = data[7]
			addr := netip.AddrFrom16(a)
			p := netip.PrefixFrom(addr, bitsLen).Masked()
			switch op & 3 {
			case 0, 1:
				nh := uint32(op >> 4)
				if err := tab.Insert(p, nh); err != nil {
					t.Fatal(err)
				}
				ref.insert(p, nh)
				touched = append(touched, p)
			case 2:
				existed, err := tab.Delete(p)
				if err != nil {
					t.Fatal(err)
				}
				if want := ref.delete(p); existed != want {
					t.Fatalf("Delete(%v) = %v, want %v", p, existed, want)
				}
			case 3:
				check6(t, tab, ref, addr)
			}
		}
		for _, p := range touched {
			for _, a := range []netip.Addr{p.Addr(), lastAddr(p), p.Addr().Prev(), lastAddr(p).Next()} {
				if a.IsValid() {
					check6(t, tab, ref, a)
				}
			}
		}
		if tab.Len() != ref.len() {
			t.Errorf("Len() = %d, want %d", tab.Len(), ref.len())
		}
		checkTable6(t, tab)
		for _, p := range ref.prefixes() {
			if _, err := tab.Delete(p); err != nil {
				t.Fatal(err)
			}
		}
		if tab.Len() != 0 || tab.liveNodes() != 0 || tab.MemoryBytes() != top6Bytes {
			t.Fatalf("after deleting everything: Len() = %d, %d nodes, %d bytes", tab.Len(), tab.liveNodes(), tab.MemoryBytes())
		}
		checkTable6(t, tab)
		if t.Failed() {
			fuzz6.t = nil
		}
	})
}
