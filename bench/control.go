package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/ipam"
	"github.com/tabbynet/tabby/control/resources"
)

// The control suite measures the control plane against real components:
//
//   - ipam-assign: IPAM assignments of one IPv4 address each (a pod's CNI
//     ADD) against an embedded single-member etcd with fsync on, by
//     controlNodes IPAM instances as different nodes with
//     controlPerNode goroutines each, from a pool that never runs out;
//     metrics per_s (assignments per second, all nodes together) and
//     p50/p99 (latency of one assignment).
//
//   - bgp-100k-routes and route-propagation: see runBGP (control_bgp.go).
func init() {
	Register(Suite{
		Name: "control",
		Doc:  "control plane: IPAM assignments/s and latency against embedded etcd (4 nodes x 4 goroutines); 100k BGP routes from a BIRD (or GoBGP) peer into datapath.Tables (program_time); block propagation across a 3-node mesh (p50/p99)",
		Run:  runControl,
	})
}

const (
	controlNodes   = 4
	controlPerNode = 4
	controlPool    = "10.96.0.0/12" // 16384 blocks of 64: never exhausted here
)

func runControl(ctx context.Context, opt Options, emit func(Result)) error {
	if err := runIPAMAssign(ctx, opt, emit); err != nil {
		return err
	}
	return runBGP(ctx, opt, emit)
}

// runIPAMAssign measures case ipam-assign.
func runIPAMAssign(ctx context.Context, opt Options, emit func(Result)) error {
	opt.Progressf("control: starting embedded etcd")
	srv, err := etcd.StartEmbedded(ctx, etcd.EmbeddedConfig{})
	if err != nil {
		return err
	}
	defer srv.Close()
	ds, err := srv.Datastore(etcd.Config{Prefix: "/tabby-bench/"})
	if err != nil {
		return err
	}
	defer ds.Close()
	pool := &resources.IPPool{ObjectMeta: resources.ObjectMeta{Name: "bench"}, Spec: resources.IPPoolSpec{CIDR: controlPool}}
	if _, err := ds.Create(ctx, pool); err != nil {
		return err
	}
	r, err := measureAssign(ctx, opt, ds)
	if err != nil {
		return err
	}
	opt.Progressf("control: ipam-assign: %d assignments in %s: %.0f/s, p50 %.2f ms, p99 %.2f ms",
		r.n, r.elapsed.Round(time.Millisecond), r.perSec, r.p50, r.p99)
	emit(Result{Case: "ipam-assign", Impl: "tabby", Metric: "per_s", Value: r.perSec, Unit: "assign/s"})
	emit(Result{Case: "ipam-assign", Impl: "tabby", Metric: "p50", Value: r.p50, Unit: "ms"})
	emit(Result{Case: "ipam-assign", Impl: "tabby", Metric: "p99", Value: r.p99, Unit: "ms"})
	return nil
}

type assignResult struct {
	n        int
	elapsed  time.Duration
	perSec   float64
	p50, p99 float64 // ms
}

// assignBudget turns Options into a run length: a duration, or with an
// "Nx" BenchTime a count of assignments.
func assignBudget(opt Options) (time.Duration, int, error) {
	switch bt := opt.BenchTime; {
	case bt == "" && opt.Quick:
		return 0, 300, nil
	case bt == "":
		return 3 * time.Second, 0, nil
	case strings.HasSuffix(bt, "x"):
		n, err := strconv.Atoi(strings.TrimSuffix(bt, "x"))
		if err != nil || n <= 0 {
			return 0, 0, fmt.Errorf("control: bad benchtime %q", bt)
		}
		return 0, n, nil
	default:
		d, err := time.ParseDuration(bt)
		if err != nil || d <= 0 {
			return 0, 0, fmt.Errorf("control: bad benchtime %q", bt)
		}
		return d, 0, nil
	}
}

// measureAssign runs the ipam-assign case: after a warm-up in which every
// node claims its first block, all goroutines assign until the budget is
// spent.
func measureAssign(ctx context.Context, opt Options, ds *etcd.Datastore) (assignResult, error) {
	dur, count, err := assignBudget(opt)
	if err != nil {
		return assignResult{}, err
	}
	nodes := make([]*ipam.IPAM, controlNodes)
	for i := range nodes {
		if nodes[i], err = ipam.New(ds, ipam.Config{Node: fmt.Sprintf("bench-node-%d", i)}); err != nil {
			return assignResult{}, err
		}
		if _, err := nodes[i].AutoAssign(ctx, ipam.AssignArgs{Handle: fmt.Sprintf("warmup-%d", i), Num4: 1}); err != nil {
			return assignResult{}, err
		}
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		firstErr  error
		issued    int
	)
	deadline := time.Now().Add(dur)
	take := func() (int, bool) { // the next assignment number, if any is left
		mu.Lock()
		defer mu.Unlock()
		if firstErr != nil || (count > 0 && issued >= count) || (count == 0 && time.Now().After(deadline)) {
			return 0, false
		}
		issued++
		return issued, true
	}
	start := time.Now()
	var wg sync.WaitGroup
	for n, a := range nodes {
		for g := range controlPerNode {
			wg.Go(func() {
				var lat []time.Duration
				defer func() {
					mu.Lock()
					latencies = append(latencies, lat...)
					mu.Unlock()
				}()
				for {
					i, ok := take()
					if !ok {
						return
					}
					t0 := time.Now()
					_, err := a.AutoAssign(ctx, ipam.AssignArgs{
						Handle: fmt.Sprintf("bench-%d-%d-%d", n, g, i), Num4: 1,
						Attrs: map[string]string{ipam.AttrPodNamespace: "bench", ipam.AttrPodName: fmt.Sprintf("pod-%d", i)},
					})
					if err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
					lat = append(lat, time.Since(t0))
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return assignResult{}, firstErr
	}
	if len(latencies) == 0 {
		return assignResult{}, fmt.Errorf("control: no assignment completed")
	}
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		i := min(len(latencies)-1, int(p*float64(len(latencies))))
		return float64(latencies[i]) / float64(time.Millisecond)
	}
	return assignResult{
		n: len(latencies), elapsed: elapsed,
		perSec: float64(len(latencies)) / elapsed.Seconds(),
		p50:    pct(0.50), p99: pct(0.99),
	}, nil
}
