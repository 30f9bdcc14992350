package lpm

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/gaissmai/bart"
	"golang.org/x/sys/unix"
)

func threadNanos() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return ts.Nano()
}

// cpuPerOp runs f (which does ops operations) reps times and returns the
// lower-quartile thread-CPU nanoseconds per operation.
func cpuPerOp(reps, ops int, f func()) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var res []float64
	for range reps {
		t0 := threadNanos()
		f()
		res = append(res, float64(threadNanos()-t0)/float64(ops))
	}
	slices.Sort(res)
	return res[len(res)/4]
}

// TestPerfCPU compares tabby and bart by thread CPU time rather than wall
// time: on a shared machine, time spent descheduled does not count, which
// makes A/B comparisons far steadier than go test -bench. It runs only with
// LPM_PERF=1 (LPM_PERF_ONLY=substring selects cases) and prints, per case,
// the lower-quartile ns per operation of several runs:
//
//	LPM_PERF=1 go test ./lpm -run PerfCPU -v
func TestPerfCPU(t *testing.T) {
	if os.Getenv("LPM_PERF") == "" {
		t.Skip()
	}
	d := loadBench(t)
	v4, v6 := realTable(t)
	only := os.Getenv("LPM_PERF_ONLY")
	n := 1 << 20
	var sink uint32
	nhs := make([]uint32, 256)
	type c struct {
		name string
		ops  int
		f    func()
	}
	single6 := func(as [][16]byte) func() {
		return func() {
			for _, a := range as[:n] {
				nh, _ := d.t6.Lookup(a)
				sink += nh
			}
		}
	}
	batch6 := func(as [][16]byte) func() {
		return func() {
			for i := 0; i < n; i += 256 {
				d.t6.LookupBatch(as[i:i+256], nhs)
			}
		}
	}
	bart6 := func(as []netip.Addr) func() {
		return func() {
			for _, a := range as[:n] {
				nh, _ := d.b6.Lookup(a)
				sink += nh
			}
		}
	}
	hot6 := make([][16]byte, n)
	hot6A := make([]netip.Addr, n)
	for i := range hot6 {
		hot6[i], hot6A[i] = d.in6[i%1024], d.in6A[i%1024]
	}
	single4 := func(as []uint32) func() {
		return func() {
			for _, a := range as[:n] {
				nh, _ := d.t4.Lookup(a)
				sink += nh
			}
		}
	}
	batch4 := func(as []uint32, k int) func() {
		return func() {
			for i := 0; i < n; i += k {
				d.t4.LookupBatch(as[i:i+k], nhs)
			}
		}
	}
	bart4 := func(as []netip.Addr) func() {
		return func() {
			for _, a := range as[:n] {
				nh, _ := d.b4.Lookup(a)
				sink += nh
			}
		}
	}
	cases := []c{
		{"v6 cold single", n, single6(d.cold6)}, {"v6 cold batch", n, batch6(d.cold6)}, {"v6 cold bart", n, bart6(d.cold6A)},
		{"v6 in single", n, single6(d.in6)}, {"v6 in batch", n, batch6(d.in6)}, {"v6 in bart", n, bart6(d.in6A)},
		{"v6 hot single", n, single6(hot6)}, {"v6 hot batch", n, batch6(hot6)}, {"v6 hot bart", n, bart6(hot6A)},
		{"v4 cold single", n, single4(d.cold4)}, {"v4 cold batch64", n, batch4(d.cold4, 64)}, {"v4 cold batch256", n, batch4(d.cold4, 256)}, {"v4 cold bart", n, bart4(d.cold4A)},
		{"v4 in single", n, single4(d.in4)}, {"v4 in batch256", n, batch4(d.in4, 256)}, {"v4 in bart", n, bart4(d.in4A)},
		{"v6 insert tabby", len(v6), func() {
			tab := NewTable6()
			for i, p := range v6 {
				_ = tab.Insert(p, uint32(i))
			}
		}},
		{"v6 insert bart", len(v6), func() {
			tab := new(bart.Table[uint32])
			for i, p := range v6 {
				tab.Insert(p, uint32(i))
			}
		}},
		{"v6 insert bart persist", len(v6), func() {
			tab := new(bart.Table[uint32])
			for i, p := range v6 {
				tab = tab.InsertPersist(p, uint32(i))
			}
		}},
		{"v4 insert tabby", len(v4), func() {
			tab := NewTable4()
			for i, p := range v4 {
				_ = tab.Insert(p, uint32(i))
			}
		}},
		{"v4 insert bart", len(v4), func() {
			tab := new(bart.Table[uint32])
			for i, p := range v4 {
				tab.Insert(p, uint32(i))
			}
		}},
	}
	for _, c := range cases {
		if only != "" && !strings.Contains(c.name, only) {
			continue
		}
		reps := 9
		if c.ops != n {
			reps = 3
		}
		fmt.Printf("%-20s %7.2f ns\n", c.name, cpuPerOp(reps, c.ops, c.f))
	}
	_ = sink
}
