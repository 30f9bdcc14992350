package lpm

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/tabbynet/tabby/internal/bgptable"
)

// reference is the golden table of the differential tests: one map per
// prefix length, and a lookup that tries the lengths from longest to
// shortest. It is slow and obviously correct.
type reference struct {
	byLen [129]map[netip.Prefix]uint32
	lens  []int // non-empty lengths, longest first
}

func newReference() *reference { return &reference{} }

func (r *reference) insert(p netip.Prefix, nh uint32) {
	p = p.Masked()
	if r.byLen[p.Bits()] == nil {
		r.byLen[p.Bits()] = map[netip.Prefix]uint32{}
	}
	r.byLen[p.Bits()][p] = nh
	r.updateLens()
}

func (r *reference) delete(p netip.Prefix) bool {
	p = p.Masked()
	_, ok := r.byLen[p.Bits()][p]
	delete(r.byLen[p.Bits()], p)
	r.updateLens()
	return ok
}

func (r *reference) get(p netip.Prefix) (uint32, bool) {
	nh, ok := r.byLen[p.Bits()][p.Masked()]
	return nh, ok
}

func (r *reference) updateLens() {
	r.lens = r.lens[:0]
	for l := 128; l >= 0; l-- {
		if len(r.byLen[l]) > 0 {
			r.lens = append(r.lens, l)
		}
	}
}

func (r *reference) len() int {
	n := 0
	for _, m := range r.byLen {
		n += len(m)
	}
	return n
}

func (r *reference) lookup(a netip.Addr) (uint32, bool) {
	for _, l := range r.lens {
		if l > a.BitLen() {
			continue
		}
		p, _ := a.Prefix(l)
		if nh, ok := r.byLen[l][p]; ok {
			return nh, true
		}
	}
	return 0, false
}

// prefixes returns every prefix in the reference, sorted.
func (r *reference) prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, m := range r.byLen {
		for p := range m {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// realTable returns the real BGP table, parsed once per test binary.
func realTable(tb testing.TB) (v4, v6 []netip.Prefix) {
	tb.Helper()
	realOnce.Do(func() { realV4, realV6, realErr = bgptable.Prefixes() })
	if realErr != nil {
		tb.Fatalf("load bgp table: %v", realErr)
	}
	return realV4, realV6
}

var (
	realOnce       sync.Once
	realV4, realV6 []netip.Prefix
	realErr        error
)

// nextHop returns a pseudo-random next hop for p, stable for a seed.
func nextHop(rng *rand.Rand) uint32 { return rng.Uint32N(MaxNextHop + 1) }

// addrToU32 converts an IPv4 address to Lookup's argument.
func addrToU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32ToAddr(a uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// randomIn returns a random address inside p.
func randomIn(rng *rand.Rand, p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		if rng.IntN(2) == 1 {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// randomAddr6 returns a random address in 2000::/3 (global unicast).
func randomAddr6(rng *rand.Rand) [16]byte {
	var a [16]byte
	hi, lo := rng.Uint64(), rng.Uint64()
	hi = hi&^(7<<61) | 1<<61
	for i := range 8 {
		a[i] = byte(hi >> (56 - 8*i))
		a[8+i] = byte(lo >> (56 - 8*i))
	}
	return a
}

// newRand returns a seeded PRNG; the seed is logged so a failure reproduces.
func newRand(tb testing.TB, seed uint64) *rand.Rand {
	tb.Helper()
	tb.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}
