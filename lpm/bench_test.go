package lpm

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"

	"github.com/gaissmai/bart"
)

// Benchmarks of tabby and bart side by side on the full real table. The
// `tabby bench lpm` suite (package bench) runs the same comparisons with
// more cases; these are for profiling with go test -bench.

var benchSink uint32

type benchTables struct {
	t4    *Table4
	t6    *Table6
	b4    *bart.Table[uint32]
	b6    *bart.Table[uint32]
	cold4 []uint32
	in4   []uint32
	cold6 [][16]byte
	in6   [][16]byte
	// The same addresses as netip.Addr, for bart.
	cold4A, in4A, cold6A, in6A []netip.Addr
}

var (
	benchOnce sync.Once
	benchData benchTables
)

func loadBench(tb testing.TB) *benchTables {
	tb.Helper()
	v4, v6 := realTable(tb)
	benchOnce.Do(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		d := &benchData
		d.t4, d.t6 = NewTable4(), NewTable6()
		d.b4, d.b6 = new(bart.Table[uint32]), new(bart.Table[uint32])
		for _, p := range v4 {
			nh := nextHop(rng)
			_ = d.t4.Insert(p, nh)
			d.b4.Insert(p, nh)
		}
		for _, p := range v6 {
			nh := nextHop(rng)
			_ = d.t6.Insert(p, nh)
			d.b6.Insert(p, nh)
		}
		const n = 1 << 22
		for range n {
			d.cold4 = append(d.cold4, rng.Uint32())
			d.in4 = append(d.in4, addrToU32(randomIn(rng, v4[rng.IntN(len(v4))])))
			d.cold6 = append(d.cold6, randomAddr6(rng))
			d.in6 = append(d.in6, randomIn(rng, v6[rng.IntN(len(v6))]).As16())
		}
		for i := range n {
			d.cold4A = append(d.cold4A, u32ToAddr(d.cold4[i]))
			d.in4A = append(d.in4A, u32ToAddr(d.in4[i]))
			d.cold6A = append(d.cold6A, netip.AddrFrom16(d.cold6[i]))
			d.in6A = append(d.in6A, netip.AddrFrom16(d.in6[i]))
		}
	})
	return &benchData
}

// loop runs body over consecutive chunks of n addresses; one b.Loop
// iteration is one chunk, and ns/addr is reported.
func loop(b *testing.B, total, n int, body func(pos int)) {
	b.ReportAllocs()
	pos := 0
	for b.Loop() {
		body(pos)
		if pos += n; pos+n > total {
			pos = 0
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/addr")
}

// benchStream is an address stream of the lookup benchmarks, in the table's
// argument type and as netip.Addr for bart.
type benchStream[A any] struct {
	name string
	a    []A
	aa   []netip.Addr
}

// benchLookup runs the lookup benchmarks of one family on its streams:
// chunks of single Lookups of tabby and bart, and tabby's LookupBatch. single
// does the Lookups of one chunk and returns the sum of their next hops; each
// table writes its own so that its Lookup calls are direct and inlined, as in
// a packet loop, rather than calls through an interface or a generic
// dictionary.
func benchLookup[A any](b *testing.B, streams []benchStream[A], bt *bart.Table[uint32],
	single func(chunk []A) uint32, batch func(addrs []A, nhs []uint32)) {
	for _, c := range streams {
		b.Run(c.name+"/tabby", func(b *testing.B) {
			var s uint32
			loop(b, len(c.a), 256, func(pos int) { s += single(c.a[pos : pos+256]) })
			benchSink += s
		})
		b.Run(c.name+"/bart", func(b *testing.B) {
			var s uint32
			loop(b, len(c.aa), 256, func(pos int) {
				for _, a := range c.aa[pos : pos+256] {
					nh, _ := bt.Lookup(a)
					s += nh
				}
			})
			benchSink += s
		})
		for _, n := range []int{64, 256} {
			b.Run(c.name+"/batch"+itoa(n)+"/tabby", func(b *testing.B) {
				nhs := make([]uint32, n)
				loop(b, len(c.a), n, func(pos int) { batch(c.a[pos:pos+n], nhs) })
				benchSink += nhs[0]
			})
		}
	}
}

func BenchmarkLookup4(b *testing.B) {
	d := loadBench(b)
	t := d.t4
	streams := []benchStream[uint32]{{"cold", d.cold4, d.cold4A}, {"inprefix", d.in4, d.in4A}, {"hot", d.in4[:1024], d.in4A[:1024]}}
	benchLookup(b, streams, d.b4, func(chunk []uint32) (s uint32) {
		for _, a := range chunk {
			nh, _ := t.Lookup(a)
			s += nh
		}
		return s
	}, t.LookupBatch)
}

func BenchmarkLookup6(b *testing.B) {
	d := loadBench(b)
	t := d.t6
	streams := []benchStream[[16]byte]{{"cold", d.cold6, d.cold6A}, {"inprefix", d.in6, d.in6A}, {"hot", d.in6[:1024], d.in6A[:1024]}}
	benchLookup(b, streams, d.b6, func(chunk [][16]byte) (s uint32) {
		for _, a := range chunk {
			nh, _ := t.Lookup(a)
			s += nh
		}
		return s
	}, t.LookupBatch)
}

func BenchmarkInsert(b *testing.B) {
	v4, v6 := realTable(b)
	for _, c := range []struct {
		name string
		ps   []netip.Prefix
		new  func() func(netip.Prefix, uint32) error
	}{
		{"v4/tabby", v4, func() func(netip.Prefix, uint32) error { return NewTable4().Insert }},
		{"v4/bart", v4, func() func(netip.Prefix, uint32) error {
			t := new(bart.Table[uint32])
			return func(p netip.Prefix, nh uint32) error { t.Insert(p, nh); return nil }
		}},
		{"v6/tabby", v6, func() func(netip.Prefix, uint32) error { return NewTable6().Insert }},
		{"v6/bart", v6, func() func(netip.Prefix, uint32) error {
			t := new(bart.Table[uint32])
			return func(p netip.Prefix, nh uint32) error { t.Insert(p, nh); return nil }
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				insert := c.new()
				for i, p := range c.ps {
					_ = insert(p, uint32(i))
				}
			}
			b.ReportMetric(float64(b.N*len(c.ps))/b.Elapsed().Seconds(), "routes/s")
		})
	}
}

func itoa(n int) string {
	switch n {
	case 64:
		return "64"
	case 256:
		return "256"
	}
	return "n"
}

// BenchmarkChurn4 deletes and inserts again random prefixes of the full
// table, as the v4-update-churn case of the bench suite.
func BenchmarkChurn4(b *testing.B) {
	v4, _ := realTable(b)
	rng := rand.New(rand.NewPCG(3, 4))
	t := NewTable4()
	for i, p := range v4 {
		_ = t.Insert(p, uint32(i))
	}
	churn := sample(rng, v4, 4096)
	b.ReportAllocs()
	for b.Loop() {
		for i, p := range churn {
			_, _ = t.Delete(p)
			_ = t.Insert(p, uint32(i))
		}
	}
	b.ReportMetric(float64(b.N*len(churn))/b.Elapsed().Seconds(), "routes/s")
}
