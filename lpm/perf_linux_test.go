package lpm

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"

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

// TestPerfTbl24Mode compares where tbl24 lives (see tbl24Mode) by thread CPU
// time, on the full table and random addresses. The three tables are built
// first, the plain heap one before any huge-page advice in the process.
//
//	LPM_PERF=1 go test ./lpm -run PerfTbl24Mode -v
func TestPerfTbl24Mode(t *testing.T) {
	if os.Getenv("LPM_PERF") == "" {
		t.Skip("set LPM_PERF=1")
	}
	v4, _ := realTable(t)
	defer func(m int) { tbl24Mode = m }(tbl24Mode)
	modes := []struct {
		name string
		mode int
		t    *Table4
	}{{"heap", tbl24Heap, nil}, {"heaphuge", tbl24HeapHuge, nil}, {"mmap", tbl24Mmap, nil}}
	for i := range modes {
		tbl24Mode = modes[i].mode
		modes[i].t = NewTable4()
		for j, p := range v4 {
			_ = modes[i].t.Insert(p, uint32(j))
		}
	}
	for _, m := range modes {
		t.Logf("%s: %d KiB of tbl24 on huge pages", m.name, hugeKiB(t, unsafe.Pointer(m.t.tbl24), 4<<24))
	}
	rng := newRand(t, 41)
	n := 1 << 22
	addrs := make([]uint32, n)
	for i := range addrs {
		addrs[i] = rng.Uint32()
	}
	nhs := make([]uint32, 256)
	var sink uint32
	for round := range 3 {
		for _, m := range modes {
			single := cpuPerOp(5, n, func() {
				for _, a := range addrs {
					nh, _ := m.t.Lookup(a)
					sink += nh
				}
			})
			batch := cpuPerOp(5, n, func() {
				for i := 0; i < n; i += 256 {
					m.t.LookupBatch(addrs[i:i+256], nhs)
				}
			})
			fmt.Printf("round %d %-9s single %6.2f ns  batch256 %6.2f ns\n", round, m.name, single, batch)
		}
	}
	_ = sink
}

// hugeKiB returns how many KiB of [p, p+size) the kernel backs with
// transparent huge pages, from /proc/self/smaps.
func hugeKiB(tb testing.TB, p unsafe.Pointer, size uintptr) int {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		tb.Skip(err)
	}
	lo, hi := uintptr(p), uintptr(p)+size
	total, in := 0, false
	var start, end uintptr
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && !strings.HasSuffix(f[0], ":") {
			if n, _ := fmt.Sscanf(f[0], "%x-%x", &start, &end); n == 2 {
				in = start < hi && end > lo
			}
			continue
		}
		var kib int
		if in {
			if n, _ := fmt.Sscanf(line, "AnonHugePages: %d kB", &kib); n == 1 {
				// Count the overlap only (approximately: huge pages of a
				// mapping are spread evenly).
				ov := min(end, hi) - max(start, lo)
				total += int(uint64(kib) * uint64(ov) / uint64(end-start))
			}
		}
	}
	return total
}
