package lpm

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The concurrency tests run one writer that churns a set of prefixes while
// readers look up two kinds of addresses:
//   - stable: no churned prefix contains them, so their answer never
//     changes and every lookup must return it;
//   - churned: inside churned prefixes; every answer must be the next hop
//     of some prefix that contains the address (or a miss, if no stable
//     prefix contains it) — never garbage.
//
// Churned prefixes keep one next hop each for the whole test, so the set of
// valid answers of an address is the next hops of the prefixes containing it.
// The sizes keep the test well under a minute with -race on 2 cores.

const (
	concurrentStable  = 40000
	concurrentChurned = 10000
	concurrentReaders = 3
)

// concurrentCase is the data shared by the v4 and v6 concurrency tests.
type concurrentCase struct {
	stable, churned []netip.Prefix
	nh              map[netip.Prefix]uint32
	stableAddrs     []netip.Addr
	stableWant      []uint32 // NoRoute for a miss
	churnAddrs      []netip.Addr
	churnValid      [][]uint32 // allowed answers, NoRoute for a miss
}

// newConcurrentCase picks stable and churned prefixes from pool, and adds to
// the churned ones the prefixes that extra makes inside the stable ones.
func newConcurrentCase(tb testing.TB, rng *rand.Rand, pool []netip.Prefix, extraIn func([]netip.Prefix) []netip.Prefix) *concurrentCase {
	tb.Helper()
	ps := sample(rng, pool, concurrentStable+concurrentChurned)
	extra := extraIn(ps[:concurrentStable])
	c := &concurrentCase{
		stable:  ps[:concurrentStable],
		churned: append(ps[concurrentStable:], extra...),
		nh:      map[netip.Prefix]uint32{},
	}
	for _, p := range ps {
		c.nh[p] = nextHop(rng)
	}
	for _, p := range extra {
		c.nh[p] = nextHop(rng)
	}
	stableRef, churnRef, allRef := newReference(), newReference(), newReference()
	for _, p := range c.stable {
		stableRef.insert(p, c.nh[p])
		allRef.insert(p, c.nh[p])
	}
	for _, p := range c.churned {
		churnRef.insert(p, c.nh[p])
		allRef.insert(p, c.nh[p])
	}
	candidates := probes(rng, c.stable)
	for _, a := range candidates {
		if _, shadowed := churnRef.lookup(a); shadowed {
			continue
		}
		want, ok := stableRef.lookup(a)
		if !ok {
			want = NoRoute
		}
		c.stableAddrs = append(c.stableAddrs, a)
		c.stableWant = append(c.stableWant, want)
	}
	for _, a := range probes(rng, c.churned) {
		var valid []uint32
		for _, l := range allRef.lens {
			if l > a.BitLen() {
				continue
			}
			q, _ := a.Prefix(l)
			if nh, ok := allRef.byLen[l][q]; ok {
				valid = append(valid, nh)
			}
		}
		if _, ok := stableRef.lookup(a); !ok {
			valid = append(valid, NoRoute)
		}
		c.churnAddrs = append(c.churnAddrs, a)
		c.churnValid = append(c.churnValid, valid)
	}
	if len(c.stableAddrs) < 1000 || len(c.churnAddrs) < 1000 {
		tb.Fatalf("too few addresses: %d stable, %d churned", len(c.stableAddrs), len(c.churnAddrs))
	}
	return c
}

// run starts the readers, runs the writer for d, and stops the readers.
// insert and del act on the table under test; lookup answers a batch of
// addresses (with single Lookups or LookupBatch, as the reader chooses).
func (c *concurrentCase) run(t *testing.T, rng *rand.Rand, d time.Duration,
	insert func(netip.Prefix, uint32) error, del func(netip.Prefix) (bool, error),
	lookup func(batch bool, addrs []netip.Addr, out []uint32)) {
	for _, p := range c.stable {
		if err := insert(p, c.nh[p]); err != nil {
			t.Fatal(err)
		}
	}
	present := make([]bool, len(c.churned))
	for i, p := range c.churned {
		if rng.IntN(2) == 0 {
			if err := insert(p, c.nh[p]); err != nil {
				t.Fatal(err)
			}
			present[i] = true
		}
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var lookups atomic.Int64
	for r := range concurrentReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]uint32, 256)
			var n int64
			for round := 0; !stop.Load(); round++ {
				batch := (round+r)%2 == 0
				for i := 0; i+256 <= len(c.stableAddrs); i += 256 {
					lookup(batch, c.stableAddrs[i:i+256], out)
					for j, got := range out {
						if want := c.stableWant[i+j]; got != want {
							t.Errorf("stable %v = %d, want %d", c.stableAddrs[i+j], got, want)
							return
						}
					}
					n += 256
				}
				for i := 0; i+256 <= len(c.churnAddrs); i += 256 {
					lookup(batch, c.churnAddrs[i:i+256], out)
					for j, got := range out {
						if !slices.Contains(c.churnValid[i+j], got) {
							t.Errorf("churned %v = %d, want one of %v", c.churnAddrs[i+j], got, c.churnValid[i+j])
							return
						}
					}
					n += 256
				}
			}
			lookups.Add(n)
		}()
	}

	deadline := time.Now().Add(d)
	updates := 0
	for time.Now().Before(deadline) && !t.Failed() {
		for range 100 {
			i := rng.IntN(len(c.churned))
			p := c.churned[i]
			if present[i] {
				if _, err := del(p); err != nil {
					t.Error(err)
				}
			} else if err := insert(p, c.nh[p]); err != nil {
				t.Error(err)
			}
			present[i] = !present[i]
			updates++
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d stable and %d churned addresses: %d updates, %d lookups", len(c.stableAddrs), len(c.churnAddrs), updates, lookups.Load())
}

func TestConcurrent4(t *testing.T) {
	v4, _ := realTable(t)
	rng := newRand(t, 21)
	// Long prefixes in churn make groups extend and collapse, in /24s that
	// hold stable addresses too.
	c := newConcurrentCase(t, rng, v4, func(stable []netip.Prefix) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range sample(rng, stable, 1000) {
			base := randomIn(rng, p)
			for range 2 {
				bits := 25 + rng.IntN(8)
				out = append(out, netip.PrefixFrom(u32ToAddr(addrToU32(base)&^0xff|rng.Uint32N(256)), bits).Masked())
			}
		}
		return out
	})
	tab := ipv4.newTable(t)
	c.run(t, rng, 3*time.Second, tab.Insert, tab.Delete, func(batch bool, addrs []netip.Addr, out []uint32) {
		ipv4.lookupInto(tab, batch, addrs, out)
	})
}

func TestConcurrent6(t *testing.T) {
	_, v6 := realTable(t)
	rng := newRand(t, 22)
	// Prefixes of all lengths from /8 (shorter ones would shadow every
	// stable address), many inside stable prefixes.
	c := newConcurrentCase(t, rng, v6, func(stable []netip.Prefix) []netip.Prefix {
		out := slices.DeleteFunc(randomPrefixes6(rng, 1000), func(p netip.Prefix) bool { return p.Bits() < 8 })
		for _, p := range sample(rng, stable, 1000) {
			bits := min(p.Bits()+1+rng.IntN(16), 128)
			out = append(out, netip.PrefixFrom(randomIn(rng, p), bits).Masked())
		}
		return out
	})
	tab := ipv6.newTable(t)
	c.run(t, rng, 3*time.Second, tab.Insert, tab.Delete, func(batch bool, addrs []netip.Addr, out []uint32) {
		ipv6.lookupInto(tab, batch, addrs, out)
	})
}
