package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/gaissmai/bart"

	"github.com/tabbynet/tabby/internal/bgptable"
	"github.com/tabbynet/tabby/lpm"
)

func init() {
	Register(Suite{
		Name: "lpm",
		Doc: "LPM on the real BGP table (900k v4, 160k v6), tabby vs bart.Table: lookups in ns/address " +
			"(bart has no batch API: its batch cases loop over Lookup), insert and churn in routes/s, memory in B",
		Run: runLPM,
	})
}

// The lpm suite's cases, each for impls tabby (package lpm) and bart
// (bart.Table[uint32]):
//
//   - v4-/v6-cold-random: single lookups of uniformly random addresses (v6:
//     in 2000::/3), from a stream large enough (16M v4, 4M v6) to be
//     cache-cold; v4-/v6-in-prefix: random addresses inside random prefixes
//     of the table; v4-/v6-hot-set: the first 1024 in-prefix addresses over
//     and over. ns_per_op is per address.
//   - batch64-/batch256- variants: LookupBatch over consecutive chunks of
//     the stream; for bart, a loop of single Lookups that stores results as
//     LookupBatch does. ns_per_op is per address.
//   - v4-/v6-insert-full-table: building the whole table, in the table's
//     file order (routes_per_s). v4-update-churn: delete and insert again
//     4096 random prefixes of the full table; one route is one delete plus
//     one insert.
//   - v4-/v6-full-table: bytes is MemoryBytes for tabby (its lookup
//     structures) and the live heap growth for bart; bytes_heap is the live
//     heap growth of building the table for both, which for tabby adds the
//     writer's prefix index (tbl24 lives on the Go heap, so it is counted
//     in both).
//
// Addresses are converted to each impl's argument type before timing.

// lpmSink keeps benchmark results alive.
var lpmSink uint32

// lpmData is the input of the lpm suite: prefixes with next hops and the
// address streams of the lookup cases, in both impls' argument types.
type lpmData struct {
	v4, v6   []netip.Prefix
	nh4, nh6 []uint32
	// Lookup address streams, keyed by case name without "v4-"/"v6-".
	addrs4 map[string][]uint32
	addrs6 map[string][][16]byte
	bart   map[string][]netip.Addr // keyed by full case name
}

func newLPMData(opt Options) (*lpmData, error) {
	v4, v6, err := bgptable.Prefixes()
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	nCold4, nCold6, nIn := 16<<20, 4<<20, 4<<20
	if opt.Quick {
		v4 = lpmSample(rng, v4, 20000)
		v6 = lpmSample(rng, v6, 20000)
		nCold4, nCold6, nIn = 64<<10, 64<<10, 64<<10
	}
	d := &lpmData{v4: v4, v6: v6, bart: map[string][]netip.Addr{}}
	d.nh4 = lpmNextHops(rng, len(v4))
	d.nh6 = lpmNextHops(rng, len(v6))
	d.addrs4 = lpmStreams(nCold4, nIn, rng.Uint32, func() uint32 {
		p := v4[rng.IntN(len(v4))]
		return lpmAddr4(p.Addr()) | rng.Uint32()&^lpmMask(p.Bits(), 32)
	})
	d.addrs6 = lpmStreams(nCold6, nIn, func() [16]byte { return lpmRandom6(rng) }, func() [16]byte {
		return lpmRandomIn6(rng, v6[rng.IntN(len(v6))])
	})
	lpmBartStreams(d.bart, "v4", d.addrs4, func(a uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
	})
	lpmBartStreams(d.bart, "v6", d.addrs6, netip.AddrFrom16)
	return d, nil
}

// lpmNextHops returns n random next hops.
func lpmNextHops(rng *rand.Rand, n int) []uint32 {
	nhs := make([]uint32, n)
	for i := range nhs {
		nhs[i] = rng.Uint32N(lpm.MaxNextHop + 1)
	}
	return nhs
}

// lpmStreams returns the lookup address streams of one family, keyed by name:
// cold-random (nCold addresses from random), in-prefix (nIn from inPrefix)
// and hot-set (the first 1024 in-prefix addresses).
func lpmStreams[A any](nCold, nIn int, random, inPrefix func() A) map[string][]A {
	cold := make([]A, nCold)
	for i := range cold {
		cold[i] = random()
	}
	in := make([]A, nIn)
	for i := range in {
		in[i] = inPrefix()
	}
	hot := make([]A, 1024)
	copy(hot, in)
	return map[string][]A{"cold-random": cold, "in-prefix": in, "hot-set": hot}
}

// lpmBartStreams stores into bart the streams of family fam ("v4", "v6") as
// netip.Addr, keyed by full case name.
func lpmBartStreams[A any](bart map[string][]netip.Addr, fam string, streams map[string][]A, addr func(A) netip.Addr) {
	for name, as := range streams {
		out := make([]netip.Addr, len(as))
		for i, a := range as {
			out[i] = addr(a)
		}
		bart[fam+"-"+name] = out
	}
}

func lpmSample(rng *rand.Rand, ps []netip.Prefix, n int) []netip.Prefix {
	out := make([]netip.Prefix, 0, n)
	for _, i := range rng.Perm(len(ps))[:min(n, len(ps))] {
		out = append(out, ps[i])
	}
	return out
}

func lpmAddr4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// lpmMask returns the mask of the first n bits of a width-bit number.
func lpmMask(n, width int) uint32 {
	if n == 0 {
		return 0
	}
	return ^uint32(0) << (width - n)
}

// lpmRandom6 returns a random address in 2000::/3.
func lpmRandom6(rng *rand.Rand) [16]byte {
	var a [16]byte
	for i := range a {
		a[i] = byte(rng.Uint32())
	}
	a[0] = a[0]&0x1f | 0x20
	return a
}

func lpmRandomIn6(rng *rand.Rand, p netip.Prefix) [16]byte {
	a := p.Addr().As16()
	for i := p.Bits(); i < 128; i++ {
		if rng.IntN(2) == 1 {
			a[i/8] |= 0x80 >> (i % 8)
		}
	}
	return a
}

func (d *lpmData) table4() (*lpm.Table4, error) {
	t := lpm.NewTable4()
	return t, lpmInsert(t.Insert, d.v4, d.nh4)
}

func (d *lpmData) table6() (*lpm.Table6, error) {
	t := lpm.NewTable6()
	return t, lpmInsert(t.Insert, d.v6, d.nh6)
}

// lpmInsert inserts the prefixes ps with next hops nhs.
func lpmInsert(insert func(netip.Prefix, uint32) error, ps []netip.Prefix, nhs []uint32) error {
	for i, p := range ps {
		if err := insert(p, nhs[i]); err != nil {
			return err
		}
	}
	return nil
}

func (d *lpmData) bart4() *bart.Table[uint32] { return lpmBartTable(d.v4, d.nh4) }

func (d *lpmData) bart6() *bart.Table[uint32] { return lpmBartTable(d.v6, d.nh6) }

// lpmBartTable returns a bart.Table holding the prefixes ps with next hops nhs.
func lpmBartTable(ps []netip.Prefix, nhs []uint32) *bart.Table[uint32] {
	t := new(bart.Table[uint32])
	for i, p := range ps {
		t.Insert(p, nhs[i])
	}
	return t
}

// lpmLookupCase is one lookup case: its name, its address stream and its batch
// size (0: single lookups).
type lpmLookupCase struct {
	name   string // without the "v4-"/"v6-" prefix
	stream string
	batch  int
}

var lpmLookupCases = []lpmLookupCase{
	{"cold-random", "cold-random", 0},
	{"in-prefix", "in-prefix", 0},
	{"hot-set", "hot-set", 0},
	{"batch64-cold-random", "cold-random", 64},
	{"batch256-cold-random", "cold-random", 256},
	{"batch256-in-prefix", "in-prefix", 256},
}

// lpmSingleChunk is how many single lookups one benchmark iteration does.
const lpmSingleChunk = 256

func runLPM(ctx context.Context, opt Options, emit func(Result)) error {
	opt.Progressf("lpm: loading the table and generating addresses")
	d, err := newLPMData(opt)
	if err != nil {
		return fmt.Errorf("lpm data: %w", err)
	}
	if err := lpmRun4(ctx, opt, d, emit); err != nil {
		return err
	}
	opt.Progressf("lpm: v4-insert-full-table, v4-full-table")
	if err := lpmInsertAndMemory(opt, emit, "v4", len(d.v4), d.table4, d.bart4); err != nil {
		return err
	}
	if err := lpmRun6(ctx, opt, d, emit); err != nil {
		return err
	}
	opt.Progressf("lpm: v6-insert-full-table, v6-full-table")
	return lpmInsertAndMemory(opt, emit, "v6", len(d.v6), d.table6, d.bart6)
}

// lpmReport emits what a lookup case measured.
func lpmReport(emit func(Result), cas, impl string, m Measurement) {
	emit(Result{Case: cas, Impl: impl, Metric: "ns_per_op", Value: m.NsPerOp, Unit: "ns"})
	emit(Result{Case: cas, Impl: impl, Metric: "allocs_per_op", Value: m.AllocsPerOp, Unit: "allocs"})
}

// lpmRun4 measures the IPv4 lookup cases and v4-update-churn on full tables.
func lpmRun4(ctx context.Context, opt Options, d *lpmData, emit func(Result)) error {
	t4, err := d.table4()
	if err != nil {
		return err
	}
	b4 := d.bart4()
	if err := lpmLookups(ctx, opt, emit, "v4", d, b4, d.addrs4, func(chunk []uint32, nhs []uint32) {
		var sum uint32
		for _, a := range chunk {
			nh, _ := t4.Lookup(a)
			sum += nh
		}
		nhs[0] = sum
	}, t4.LookupBatch); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	opt.Progressf("lpm: v4-update-churn")
	churn := lpmChurnPrefixes(d.v4, 4096)
	m := Measure(opt, len(churn), func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for i, p := range churn {
				_, _ = t4.Delete(p)
				_ = t4.Insert(p, uint32(i))
			}
		}
	})
	emit(Result{Case: "v4-update-churn", Impl: "tabby", Metric: "routes_per_s", Value: lpmPerSecond(m), Unit: "routes/s"})
	m = Measure(opt, len(churn), func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for i, p := range churn {
				b4.Delete(p)
				b4.Insert(p, uint32(i))
			}
		}
	})
	emit(Result{Case: "v4-update-churn", Impl: "bart", Metric: "routes_per_s", Value: lpmPerSecond(m), Unit: "routes/s"})
	return nil
}

// lpmRun6 measures the IPv6 lookup cases on full tables.
func lpmRun6(ctx context.Context, opt Options, d *lpmData, emit func(Result)) error {
	t6, err := d.table6()
	if err != nil {
		return err
	}
	return lpmLookups(ctx, opt, emit, "v6", d, d.bart6(), d.addrs6, func(chunk [][16]byte, nhs []uint32) {
		var sum uint32
		for _, a := range chunk {
			nh, _ := t6.Lookup(a)
			sum += nh
		}
		nhs[0] = sum
	}, t6.LookupBatch)
}

// lpmLookups measures the lookup cases of family fam ("v4", "v6") on bt and
// on a tabby table over its address streams: single does the single Lookups
// of a chunk (see lpmStream), lookupBatch is the table's LookupBatch.
func lpmLookups[A any](ctx context.Context, opt Options, emit func(Result), fam string, d *lpmData, bt *bart.Table[uint32],
	streams map[string][]A, single, lookupBatch func(addrs []A, nhs []uint32)) error {
	for _, c := range lpmLookupCases {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := fam + "-" + c.name
		opt.Progressf("lpm: %s", name)
		n := lpmOpsPerIter(c.batch)
		tabby := lookupBatch
		if c.batch == 0 {
			tabby = single
		}
		lpmReport(emit, name, "tabby", Measure(opt, n, lpmStream(streams[c.stream], n, tabby)))
		lpmReport(emit, name, "bart", Measure(opt, n, lpmBart(bt, d.bart[fam+"-"+c.stream], c.batch)))
	}
	return nil
}

// lpmInsertAndMemory measures building the whole table (routes/s) and the
// memory a built table holds.
func lpmInsertAndMemory[T interface{ MemoryBytes() int }](opt Options, emit func(Result), family string, routes int,
	tabby func() (T, error), bartBuild func() *bart.Table[uint32]) error {
	var buildErr error
	m := Measure(opt, routes, func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tabby(); err != nil {
				buildErr = err
			}
		}
	})
	if buildErr != nil {
		return buildErr
	}
	emit(Result{Case: family + "-insert-full-table", Impl: "tabby", Metric: "routes_per_s", Value: lpmPerSecond(m), Unit: "routes/s"})
	m = Measure(opt, routes, func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			bartBuild()
		}
	})
	emit(Result{Case: family + "-insert-full-table", Impl: "bart", Metric: "routes_per_s", Value: lpmPerSecond(m), Unit: "routes/s"})

	// Memory: MemoryBytes counts tabby's lookup structures; bytes_heap is
	// the live heap growth of building the table, which for tabby also
	// holds the writer's prefix index (and tbl24, which lives on the heap).
	var lookupBytes int
	heap, err := lpmHeapDelta(func() (any, error) {
		t, err := tabby()
		if err == nil {
			lookupBytes = t.MemoryBytes()
		}
		return t, err
	})
	if err != nil {
		return err
	}
	cas := family + "-full-table"
	emit(Result{Case: cas, Impl: "tabby", Metric: "bytes", Value: float64(lookupBytes), Unit: "B"})
	emit(Result{Case: cas, Impl: "tabby", Metric: "bytes_heap", Value: float64(heap), Unit: "B"})
	heap, _ = lpmHeapDelta(func() (any, error) { return bartBuild(), nil })
	emit(Result{Case: cas, Impl: "bart", Metric: "bytes", Value: float64(heap), Unit: "B"})
	emit(Result{Case: cas, Impl: "bart", Metric: "bytes_heap", Value: float64(heap), Unit: "B"})
	return nil
}

// lpmHeapDelta returns how much the live heap grows while build's result is
// alive.
func lpmHeapDelta(build func() (any, error)) (int64, error) {
	before := lpmSettledHeap()
	v, err := build()
	after := lpmSettledHeap()
	runtime.KeepAlive(v)
	runtime.KeepAlive(build) // and what it refers to, such as the input data
	return int64(after) - int64(before), err
}

// lpmSettledHeap collects garbage until the live heap stops shrinking (pool
// victim caches and finalizers take more than one cycle) and returns it.
func lpmSettledHeap() uint64 {
	var ms runtime.MemStats
	last := uint64(0)
	for range 10 {
		runtime.GC()
		time.Sleep(time.Millisecond) // let finalizers run
		runtime.ReadMemStats(&ms)
		if last != 0 && ms.HeapAlloc+ms.HeapAlloc/1000 >= last {
			break
		}
		last = ms.HeapAlloc
	}
	return ms.HeapAlloc
}

func lpmPerSecond(m Measurement) float64 {
	if m.NsPerOp == 0 {
		return 0
	}
	return 1e9 / m.NsPerOp
}

// lpmChurnPrefixes picks n prefixes of ps to delete and insert again.
func lpmChurnPrefixes(ps []netip.Prefix, n int) []netip.Prefix {
	return lpmSample(rand.New(rand.NewPCG(3, 4)), ps, n)
}

// lpmStream benchmarks lookup over consecutive chunks of n addresses of
// addrs, one chunk per iteration. lookup stores results into nhs (n long) as
// LookupBatch does; for chunks of single Lookups it stores only the sum of the
// next hops, into nhs[0], which keeps its results alive. The per-table
// single-lookup loops are written against the concrete table, so that in the
// hot loop Lookup is a direct, inlined call, as in a packet loop; what this
// shared loop adds is one indirect call per chunk.
func lpmStream[A any](addrs []A, n int, lookup func(chunk []A, nhs []uint32)) func(b *testing.B) {
	return func(b *testing.B) {
		b.ReportAllocs()
		nhs := make([]uint32, n)
		var sink uint32
		pos := 0
		for b.Loop() {
			lookup(addrs[pos:pos+n], nhs)
			sink += nhs[0]
			if pos += n; pos+n > len(addrs) {
				pos = 0
			}
		}
		lpmSink += sink
	}
}

// lpmBart benchmarks bart.Table: chunks of single Lookups; a "batch" is a
// loop of single Lookups that stores results like LookupBatch does.
func lpmBart(t *bart.Table[uint32], addrs []netip.Addr, batch int) func(b *testing.B) {
	if batch == 0 {
		return lpmStream(addrs, lpmSingleChunk, func(chunk []netip.Addr, nhs []uint32) {
			var sum uint32
			for _, a := range chunk {
				nh, _ := t.Lookup(a)
				sum += nh
			}
			nhs[0] = sum
		})
	}
	return lpmStream(addrs, batch, func(chunk []netip.Addr, nhs []uint32) {
		for i, a := range chunk {
			nh, ok := t.Lookup(a)
			if !ok {
				nh = lpm.NoRoute
			}
			nhs[i] = nh
		}
	})
}

// lpmOpsPerIter returns how many lookups one benchmark iteration does: a
// batch, or a chunk of single lookups.
func lpmOpsPerIter(batch int) int {
	if batch > 0 {
		return batch
	}
	return lpmSingleChunk
}
