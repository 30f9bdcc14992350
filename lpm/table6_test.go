package lpm

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestTable6Cases(t *testing.T) {
	ipv6.runCases(t, []opsCase{
		{name: "empty", probes: []string{"::", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}},
		{name: "default route", ops: []string{"+::/0 7"}, probes: []string{"::", "8000::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}},
		{name: "default route deleted", ops: []string{"+::/0 7", "+2001:db8::/32 1", "-::/0"}},
		{name: "short prefixes", ops: []string{"+2000::/3 1", "+2001::/16 2", "+2001::/17 3", "+2400::/12 4", "-2001::/16"}},
		{name: "host routes", ops: []string{"+2001:db8::1/128 1", "+2001:db8::2/128 2", "+::/128 3", "+ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128 4"}},
		{name: "host route under default", ops: []string{"+::/0 1", "+2001:db8::9/128 2", "-::/0", "+::/0 3"}},
		{name: "every length in one byte", ops: []string{
			"+2001:db8::/32 1", "+2001:db8::/33 2", "+2001:db8:8000::/34 3", "+2001:db8:c000::/35 4", "+2001:db8:e000::/36 5",
			"+2001:db8:f000::/37 6", "+2001:db8:f800::/38 7", "+2001:db8:fc00::/39 8", "+2001:db8:fe00::/40 9", "+2001:db8:ff00::/40 10",
		}},
		{name: "node boundaries", ops: []string{"+2001:db8::/24 1", "+2001:db8::/25 2", "+2001:db8::/31 3", "+2001:db8::/32 4", "+2001:db8::/33 5", "+2001:db8::/48 6", "+2001:db8::/49 7"}},
		{name: "adjacent prefixes", ops: []string{"+2001:db8::/48 1", "+2001:db8:1::/48 2", "+2001:db8:2::/47 3", "+2001:db7:ffff::/48 4"}},
		{name: "delete /48 under /32", ops: []string{"+2001:db8::/32 1", "+2001:db8:5::/48 2", "-2001:db8:5::/48"}},
		{name: "delete /32 above /48", ops: []string{"+2001:db8::/32 1", "+2001:db8:5::/48 2", "-2001:db8::/32"}},
		{name: "delete missing", ops: []string{"+2001:db8::/32 1", "-2001:db8::/31", "-2001:db8::/33", "-2001:db8::/32", "-2001:db8::/32"}},
		{name: "replace next hop", ops: []string{"+2001:db8::/32 1", "+2001:db8::/32 2", "+2001:db8::1/128 3", "+2001:db8::1/128 4"}},
		{name: "deep then shallow deleted", ops: []string{"+2001:db8:1:2:3:4:5:6/128 1", "+2001:db8:1::/48 2", "+2001::/16 3", "-2001:db8:1:2:3:4:5:6/128", "-2001::/16"}},
		{name: "nested deleted inside out", ops: []string{
			"+2001:db8::/33 1", "+2001:db8::/34 2", "+2001:db8::/35 3", "+2001:db8::/36 4",
			"-2001:db8::/34", "-2001:db8::/36", "-2001:db8::/33", "-2001:db8::/35",
		}},
		{name: "4in6", ops: []string{"+::ffff:0:0/96 1", "+::ffff:10.0.0.0/104 2"}, probes: []string{"::ffff:10.1.2.3"}},
		{name: "unmasked prefix", ops: []string{"+2001:db8::1/32 1", "-2001:db8::9/32"}},
	})
}

func TestTable6Errors(t *testing.T) {
	tab := newTestTable6(t)
	checkErrors(t, tab, []errorCase{
		{"insert ipv4", func() error { return tab.Insert(netip.MustParsePrefix("10.0.0.0/8"), 1) }, "not an IPv6 prefix"},
		{"insert zero prefix", func() error { return tab.Insert(netip.Prefix{}, 1) }, "not an IPv6 prefix"},
		{"insert next hop too big", func() error { return tab.Insert(netip.MustParsePrefix("2001:db8::/32"), MaxNextHop+1) }, "next hop 16777216 exceeds 16777215"},
		{"delete ipv4", func() error { _, err := tab.Delete(netip.MustParsePrefix("10.0.0.0/8")); return err }, "not an IPv6 prefix"},
	})
}

// TestTable6RealTable compares the table holding the whole real BGP table
// with the reference, at random addresses and inside every prefix.
func TestTable6RealTable(t *testing.T) {
	_, v6 := realTable(t)
	rng := newRand(t, 14)
	tab, ref := ipv6.fill(t, rng, v6)
	t.Logf("%d prefixes, %d nodes, MemoryBytes %d", tab.Len(), tab.liveNodes(), tab.MemoryBytes())
	ipv6.compareEverywhere(t, tab, ref, rng, v6)
}

// TestTable6DeleteUntilEmpty fills the table with the real table and deletes
// every prefix in random order: the table must end as empty as it started.
func TestTable6DeleteUntilEmpty(t *testing.T) {
	_, v6 := realTable(t)
	rng := newRand(t, 15)
	tab, ref := ipv6.fill(t, rng, append(v6, netip.MustParsePrefix("::/0"), netip.MustParsePrefix("2000::/3")))
	ipv6.deleteAll(t, tab, ref, rng, 20000)
	if n := tab.liveNodes(); n != 0 {
		t.Errorf("%d nodes left after deleting everything", n)
	}
	if got, want := tab.MemoryBytes(), NewTable6().MemoryBytes(); got != want {
		t.Errorf("MemoryBytes() = %d, want %d", got, want)
	}
	for i := range tab.top {
		if n := tab.top[i].Load(); n != nil {
			t.Fatalf("top[%#x] = %+v after deleting everything", i, n)
		}
	}
}

// randomPrefixes6 returns n random prefixes of every length, clustered under
// a few /32s so that they share nodes.
func randomPrefixes6(rng *rand.Rand, n int) []netip.Prefix {
	bases := make([][16]byte, n/16+1)
	for i := range bases {
		bases[i] = randomAddr6(rng)
	}
	out := make([]netip.Prefix, n)
	for i := range out {
		a := bases[rng.IntN(len(bases))]
		for j := 4 + rng.IntN(12); j < 16; j++ {
			a[j] = byte(rng.Uint32())
		}
		bits := 16 + rng.IntN(113)
		if rng.IntN(20) == 0 {
			bits = rng.IntN(17)
		}
		out[i] = netip.PrefixFrom(netip.AddrFrom16(a), bits).Masked()
	}
	return out
}

// TestTable6Churn inserts and deletes random prefixes and compares the table
// with the reference after every batch of steps.
func TestTable6Churn(t *testing.T) {
	_, v6 := realTable(t)
	rng := newRand(t, 16)
	pool := append(sample(rng, v6, 20000), randomPrefixes6(rng, 3000)...)
	pool = append(pool, netip.MustParsePrefix("::/0"), netip.MustParsePrefix("2000::/3"))
	tab, ref := ipv6.fill(t, rng, sample(rng, pool, len(pool)/2))
	ipv6.churn(t, tab, ref, rng, pool)
}
