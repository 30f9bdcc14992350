package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/resources"
)

// TestConcurrentAssign runs several IPAM instances as different nodes, each
// with several goroutines, against one etcd and one small pool, and checks
// that no address is ever handed out twice and that every address is
// accounted for: in round 1 they exhaust the pool (so nodes claim every
// block, then borrow from each other); in round 2 each goroutine releases
// half its handles while others assign, until the pool is exhausted again.
func TestConcurrentAssign(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testConcurrentAssign(t, m.plain) })
	}
}

func testConcurrentAssign(t *testing.T, plain bool) {
	const (
		nodes      = 4
		perNode    = 4
		poolCIDR   = "10.70.0.0/21" // 2048 addresses
		blockSize  = 27             // 64 blocks of 32
		poolSize   = 2048
		multiEvery = 7 // every 7th assignment asks for 2 addresses
	)
	e := newEnv(t, []*resources.IPPool{ippool("small", poolCIDR, blockSize, nil)}, nil)
	e.plain = plain
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var (
		mu    sync.Mutex
		owner = map[netip.Addr]string{} // address → handle holding it
		held  = map[string][]netip.Addr{}
		total int // assignments made
	)
	record := func(t *testing.T, handle string, addrs []netip.Addr) {
		mu.Lock()
		defer mu.Unlock()
		total++
		for _, a := range addrs {
			if prev, dup := owner[a]; dup {
				t.Errorf("%s handed out to %s while held by %s", a, handle, prev)
			}
			owner[a] = handle
		}
		held[handle] = addrs
	}
	forget := func(handle string) {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range held[handle] {
			delete(owner, a)
		}
		delete(held, handle)
	}

	instances := make([]*IPAM, nodes)
	for n := range instances {
		instances[n] = e.ipam(fmt.Sprintf("node-%d", n), nil)
	}
	// worker releases the given handles (its every other one from the
	// round before), then assigns until the pool is exhausted. Goroutines
	// run their phases at different times, so releases and assignments,
	// claims and borrowing all overlap.
	worker := func(n, g, round int, release []string) []string {
		a := instances[n]
		for _, h := range release {
			// Forget first: once released, another goroutine may get the
			// address at once.
			forget(h)
			if err := a.ReleaseByHandle(ctx, h); err != nil {
				t.Errorf("release %s: %v", h, err)
				return nil
			}
		}
		var mine []string
		for i := 0; ; i++ {
			want := 1
			if i%multiEvery == 0 {
				want = 2
			}
			h := fmt.Sprintf("r%d-n%d-g%d-%d", round, n, g, i)
			got, err := a.AutoAssign(ctx, AssignArgs{Handle: h, Num4: want})
			if errors.Is(err, ErrExhausted) {
				if want == 2 {
					continue // one may be left; try a single one
				}
				return mine
			}
			if err != nil {
				t.Errorf("assign %s: %v", h, err)
				return mine
			}
			if len(got.IPv4) != want {
				t.Errorf("assign %s: %d addresses, want %d", h, len(got.IPv4), want)
			}
			record(t, h, got.IPv4)
			mine = append(mine, h)
		}
	}
	run := func(round int, releases [][]string) [][]string {
		start := time.Now()
		out := make([][]string, nodes*perNode)
		var wg sync.WaitGroup
		for n := range nodes {
			for g := range perNode {
				wg.Go(func() {
					var rel []string
					if releases != nil {
						for i, h := range releases[n*perNode+g] {
							if i%2 == 0 {
								rel = append(rel, h)
							}
						}
					}
					out[n*perNode+g] = worker(n, g, round, rel)
				})
			}
		}
		wg.Wait()
		// Workers that ran out before others released left addresses
		// free: one node takes the rest (borrowing from every block).
		for i := 0; ; i++ {
			h := fmt.Sprintf("r%d-topup-%d", round, i)
			got, err := instances[0].AutoAssign(ctx, AssignArgs{Handle: h, Num4: 1})
			if errors.Is(err, ErrExhausted) {
				break
			}
			if err != nil {
				t.Fatalf("top up: %v", err)
			}
			record(t, h, got.IPv4)
		}
		mu.Lock()
		t.Logf("round %d: %d assignments so far, %d addresses held, %.1fs", round, total, len(owner), time.Since(start).Seconds())
		mu.Unlock()
		return out
	}
	verify := func() {
		t.Helper()
		state := e.check()
		mu.Lock()
		defer mu.Unlock()
		if len(owner) != poolSize {
			t.Errorf("%d addresses held after exhaustion, want all %d", len(owner), poolSize)
		}
		pool := netip.MustParsePrefix(poolCIDR)
		n := 0
		for h, addrs := range state {
			n += len(addrs)
			if fmt.Sprint(addrs) != fmt.Sprint(sorted(held[h])) {
				t.Errorf("handle %s: datastore holds %v, assignments returned %v", h, addrs, held[h])
			}
			for _, a := range addrs {
				if !pool.Contains(a) {
					t.Errorf("%s outside the pool", a)
				}
			}
		}
		if n != len(owner) || len(state) != len(held) {
			t.Errorf("datastore holds %d addresses for %d handles, assignments %d for %d", n, len(state), len(owner), len(held))
		}
		if len(e.blocks()) != poolSize>>(32-blockSize) {
			t.Errorf("%d blocks, want %d", len(e.blocks()), poolSize>>(32-blockSize))
		}
	}

	handles := run(1, nil)
	verify()
	run(2, handles)
	verify()
	mu.Lock()
	if total < 2500 {
		t.Errorf("only %d assignments in two rounds", total)
	}
	mu.Unlock()
}

func sorted(s []netip.Addr) []netip.Addr {
	c := append([]netip.Addr(nil), s...)
	sortAddrs(c)
	return c
}
