package lpm

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// probes returns the addresses around prefixes: first, last, the ones just
// outside, and a random one inside.
func probes(rng *rand.Rand, prefixes []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, p := range prefixes {
		first, last := p.Masked().Addr(), lastAddr(p)
		out = append(out, first, last, randomIn(rng, p))
		if prev := first.Prev(); prev.IsValid() {
			out = append(out, prev)
		}
		if next := last.Next(); next.IsValid() {
			out = append(out, next)
		}
	}
	return out
}

func TestTable4Cases(t *testing.T) {
	ipv4.runCases(t, []opsCase{
		{name: "empty", probes: []string{"0.0.0.0", "1.2.3.4", "255.255.255.255"}},
		{name: "default route", ops: []string{"+0.0.0.0/0 7"}, probes: []string{"0.0.0.0", "128.0.0.1", "255.255.255.255"}},
		{name: "default route deleted", ops: []string{"+0.0.0.0/0 7", "+10.0.0.0/8 1", "-0.0.0.0/0"}},
		{name: "host routes", ops: []string{"+1.2.3.4/32 1", "+1.2.3.5/32 2", "+0.0.0.0/32 3", "+255.255.255.255/32 4"}},
		{name: "host route under default", ops: []string{"+0.0.0.0/0 1", "+9.9.9.9/32 2", "-0.0.0.0/0", "+0.0.0.0/0 3"}},
		{name: "long prefixes inside a /24", ops: []string{
			"+10.1.2.0/24 1", "+10.1.2.0/25 2", "+10.1.2.128/26 3", "+10.1.2.192/27 4", "+10.1.2.224/28 5",
			"+10.1.2.240/29 6", "+10.1.2.248/30 7", "+10.1.2.252/31 8", "+10.1.2.255/32 9",
		}},
		{name: "long prefixes without covering /24", ops: []string{"+10.1.2.64/26 1", "+10.1.2.65/32 2"}},
		{name: "adjacent prefixes", ops: []string{"+10.0.0.0/24 1", "+10.0.1.0/24 2", "+10.0.2.0/23 3", "+10.0.4.0/22 4", "+9.255.255.255/32 5"}},
		{name: "delete /24 under /16", ops: []string{"+10.0.0.0/16 1", "+10.0.5.0/24 2", "-10.0.5.0/24"}},
		{name: "delete /16 above /24", ops: []string{"+10.0.0.0/16 1", "+10.0.5.0/24 2", "-10.0.0.0/16"}},
		{name: "delete missing", ops: []string{"+10.0.0.0/16 1", "-10.0.0.0/8", "-10.0.0.0/17", "-10.0.0.0/16", "-10.0.0.0/16"}},
		{name: "replace next hop", ops: []string{"+10.0.0.0/8 1", "+10.1.0.0/16 2", "+10.0.0.0/8 3", "+10.1.1.1/32 4", "+10.1.1.1/32 5"}},
		{name: "short prefix over a group", ops: []string{"+1.1.1.1/32 5", "+1.0.0.0/8 6", "+1.1.0.0/16 7", "-1.1.0.0/16", "+1.1.1.0/24 8", "-1.0.0.0/8"}},
		{name: "covering prefix changes under a group", ops: []string{"+10.0.0.0/8 1", "+10.1.1.128/25 2", "-10.0.0.0/8", "+10.0.0.0/8 3", "-10.1.1.128/25"}},
		{name: "collapse and extend again", ops: []string{"+10.1.1.0/24 1", "+10.1.1.7/32 2", "-10.1.1.7/32", "+10.1.1.9/32 3", "+10.1.1.0/24 4", "-10.1.1.9/32"}},
		{name: "nested long prefixes deleted inside out", ops: []string{
			"+10.1.1.0/25 1", "+10.1.1.0/26 2", "+10.1.1.0/27 3", "+10.1.1.0/28 4",
			"-10.1.1.0/26", "-10.1.1.0/28", "-10.1.1.0/25", "-10.1.1.0/27",
		}},
		{name: "max next hop", ops: []string{"+10.0.0.0/8 16777215", "+10.0.0.0/32 0"}},
		{name: "unmasked prefix", ops: []string{"+10.1.2.3/8 1", "-10.9.9.9/8"}},
	})
}

func TestTable4Errors(t *testing.T) {
	tab := newTestTable4(t)
	checkErrors(t, tab, []errorCase{
		{"insert ipv6", func() error { return tab.Insert(netip.MustParsePrefix("2001:db8::/32"), 1) }, "not an IPv4 prefix"},
		{"insert 4in6", func() error { return tab.Insert(netip.MustParsePrefix("::ffff:10.0.0.0/104"), 1) }, "not an IPv4 prefix"},
		{"insert zero prefix", func() error { return tab.Insert(netip.Prefix{}, 1) }, "not an IPv4 prefix"},
		{"insert next hop too big", func() error { return tab.Insert(netip.MustParsePrefix("10.0.0.0/8"), MaxNextHop+1) }, "next hop 16777216 exceeds 16777215"},
		{"delete ipv6", func() error { _, err := tab.Delete(netip.MustParsePrefix("2001:db8::/32")); return err }, "not an IPv4 prefix"},
	})
}

// TestTable4RealTable compares the table holding the whole real BGP table
// with the reference, at random addresses and inside every prefix.
func TestTable4RealTable(t *testing.T) {
	v4, _ := realTable(t)
	rng := newRand(t, 4)
	tab, ref := ipv4.fill(t, rng, v4)
	t.Logf("%d prefixes, %d groups, MemoryBytes %d", tab.Len(), tab.liveGroups(), tab.MemoryBytes())
	ipv4.compareEverywhere(t, tab, ref, rng, v4)
}

// TestTable4DeleteUntilEmpty fills the table with the real table and deletes
// every prefix in random order: the table must end as empty as it started.
func TestTable4DeleteUntilEmpty(t *testing.T) {
	v4, _ := realTable(t)
	rng := newRand(t, 5)
	extra := longPrefixes(rng, 2000)
	all := append(append([]netip.Prefix(nil), v4...), extra...)
	tab, ref := ipv4.fill(t, rng, all)
	emptyBytes := NewTable4().MemoryBytes()
	ipv4.deleteAll(t, tab, ref, rng, 50000)
	if g := tab.liveGroups(); g != 0 {
		t.Errorf("%d groups left after deleting everything", g)
	}
	// Only the directory chunks are kept (see the package documentation).
	if got, want := tab.MemoryBytes(), emptyBytes+tab.chunks*chunk4Bytes; got != want {
		t.Errorf("MemoryBytes() = %d, want %d (empty %d + %d chunks)", got, want, emptyBytes, tab.chunks)
	}
	for x, e := range tab.tbl24 {
		if e != 0 {
			t.Fatalf("tbl24[%#x] = %#x after deleting everything", x, e)
		}
	}
}

// longPrefixes returns n random prefixes longer than /24, clustered in a few
// hundred /24s so that groups hold several of them.
func longPrefixes(rng *rand.Rand, n int) []netip.Prefix {
	bases := make([]uint32, n/8+1)
	for i := range bases {
		bases[i] = rng.Uint32() &^ 0xff
	}
	out := make([]netip.Prefix, n)
	for i := range out {
		bits := 25 + rng.IntN(8)
		out[i] = netip.PrefixFrom(u32ToAddr(bases[rng.IntN(len(bases))]|rng.Uint32N(256)), bits).Masked()
	}
	return out
}

// TestTable4Churn inserts and deletes random prefixes and compares the table
// with the reference after every batch of steps, including collapsing every
// group and extending it again.
func TestTable4Churn(t *testing.T) {
	v4, _ := realTable(t)
	rng := newRand(t, 6)
	pool := append(sample(rng, v4, 20000), longPrefixes(rng, 3000)...)
	pool = append(pool, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.0.0.0/8"))
	tab, ref := ipv4.fill(t, rng, sample(rng, pool, len(pool)/2))
	ipv4.churn(t, tab, ref, rng, pool)

	// Collapse every group: delete all prefixes longer than /24, then
	// insert them again.
	var long []netip.Prefix
	for _, p := range ref.prefixes() {
		if p.Bits() > 24 {
			long = append(long, p)
		}
	}
	if tab.liveGroups() == 0 || len(long) == 0 {
		t.Fatalf("churn left no groups to collapse")
	}
	nhs := make([]uint32, len(long))
	for i, p := range long {
		nhs[i], _ = ref.get(p)
		if _, err := tab.Delete(p); err != nil {
			t.Fatal(err)
		}
		ref.delete(p)
	}
	if g := tab.liveGroups(); g != 0 {
		t.Errorf("%d groups left without prefixes longer than /24", g)
	}
	for _, a := range probes(rng, long) {
		ipv4.check(t, tab, ref, a)
	}
	for i, p := range long {
		if err := tab.Insert(p, nhs[i]); err != nil {
			t.Fatal(err)
		}
		ref.insert(p, nhs[i])
	}
	for _, a := range probes(rng, long) {
		ipv4.check(t, tab, ref, a)
	}
}

// sample returns n prefixes picked at random from ps (without repetition).
func sample(rng *rand.Rand, ps []netip.Prefix, n int) []netip.Prefix {
	idx := rng.Perm(len(ps))[:min(n, len(ps))]
	out := make([]netip.Prefix, len(idx))
	for i, j := range idx {
		out[i] = ps[j]
	}
	return out
}
