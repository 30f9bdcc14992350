package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/ipam"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/test/kubeapi"
)

func ippool(name, cidr string, blockSize int) *resources.IPPool {
	p := pool(name, cidr)
	p.Spec.BlockSize = blockSize
	return p
}

func newIPAM(t *testing.T, d datastore.Datastore, node string) *ipam.IPAM {
	t.Helper()
	a, err := ipam.New(d, ipam.Config{Node: node, RetryBackoff: 5 * time.Millisecond, MaxRetries: 500})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// ipamState checks the IPAM objects are consistent (every block valid,
// every handle record's counts equal to the blocks' allocations, every
// affinity confirmed and matching its block) and returns the allocated
// addresses by handle.
func ipamState(t *testing.T, d datastore.Datastore) map[string][]netip.Addr {
	t.Helper()
	ctx := context.Background()
	blocks, _, err := datastore.ListOf[*resources.IPAMBlock](ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	byHandle := map[string][]netip.Addr{}
	counts := map[string]map[string]int{}
	for _, b := range blocks {
		if err := b.Validate(); err != nil {
			t.Fatal(err)
		}
		p := b.Prefix()
		addr := p.Addr()
		for _, ai := range b.Spec.Allocations {
			if ai >= 0 {
				h := b.Spec.Attributes[ai].HandleID
				byHandle[h] = append(byHandle[h], addr)
				if counts[h] == nil {
					counts[h] = map[string]int{}
				}
				counts[h][p.String()]++
			}
			addr = addr.Next()
		}
	}
	handles, _, err := datastore.ListOf[*resources.IPAMHandle](ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, h := range handles {
		seen[h.Spec.HandleID] = true
		if fmt.Sprint(h.Spec.Block) != fmt.Sprint(counts[h.Spec.HandleID]) {
			t.Errorf("handle %s records %v, blocks hold %v", h.Spec.HandleID, h.Spec.Block, counts[h.Spec.HandleID])
		}
	}
	for h := range counts {
		if !seen[h] {
			t.Errorf("handle %s holds addresses but has no record", h)
		}
	}
	affs, _, err := datastore.ListOf[*resources.BlockAffinity](ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, af := range affs {
		b, err := datastore.Get[*resources.IPAMBlock](ctx, d, resources.BlockName(netip.MustParsePrefix(af.Spec.CIDR)))
		if err != nil {
			t.Errorf("affinity %s: %v", af.Name, err)
			continue
		}
		if b.AffineNode() != af.Spec.Node || af.Spec.State != resources.AffinityConfirmed {
			t.Errorf("affinity %s (%s) but block affinity %q", af.Name, af.Spec.State, b.Spec.Affinity)
		}
	}
	for _, l := range byHandle {
		slices.SortFunc(l, netip.Addr.Compare)
	}
	return byHandle
}

// TestIPAM: assignment and release on the Kubernetes datastore (IPAM's
// compare-and-swap path: the backend has no transactions).
func TestIPAM(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, kubernetes.Config{})
	if _, ok := datastore.Datastore(d).(datastore.Transactor); ok {
		t.Fatal("the Kubernetes datastore claims transactions")
	}
	mustCreate(t, d, ippool("v4", "10.80.0.0/24", 28))
	mustCreate(t, d, ippool("v6", "fd00:80::/120", 124))
	mustCreate(t, d, node("node-a", nil))
	a := newIPAM(t, d, "node-a")

	got, err := a.AutoAssign(ctx, ipam.AssignArgs{Handle: "k8s-pod-network.c1", Num4: 2, Num6: 1,
		Attrs: map[string]string{ipam.AttrPodNamespace: "default", ipam.AttrPodName: "web-0"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.IPv4) != 2 || len(got.IPv6) != 1 || !netip.MustParsePrefix("10.80.0.0/24").Contains(got.IPv4[0]) ||
		!netip.MustParsePrefix("fd00:80::/120").Contains(got.IPv6[0]) {
		t.Fatalf("assigned %v", got)
	}
	// Both addresses from the node's one v4 block, which it now holds.
	blk, _ := got.IPv4[0].Prefix(28)
	b, err := datastore.Get[*resources.IPAMBlock](ctx, d, resources.BlockName(blk))
	if err != nil || b.AffineNode() != "node-a" || !blk.Contains(got.IPv4[1]) {
		t.Fatalf("block %+v, %v", b, err)
	}
	if _, err := datastore.Get[*resources.BlockAffinity](ctx, d, resources.AffinityName("node-a", blk)); err != nil {
		t.Fatal(err)
	}
	// A handle Kubernetes could not name.
	other, err := a.AutoAssign(ctx, ipam.AssignArgs{Handle: "Container_ID.2", Num4: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]netip.Addr{
		"k8s-pod-network.c1": append(slices.Clone(got.IPv4), got.IPv6...),
		"Container_ID.2":     other.IPv4,
	}
	for h, addrs := range want {
		slices.SortFunc(addrs, netip.Addr.Compare)
		byHandle, err := a.IPsByHandle(ctx, h)
		if err != nil || fmt.Sprint(byHandle) != fmt.Sprint(addrs) {
			t.Fatalf("IPsByHandle(%s) = %v, %v; want %v", h, byHandle, err, addrs)
		}
	}
	if st := ipamState(t, d); fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("state %v, want %v", st, want)
	}

	// A specific address, twice.
	fixed := netip.MustParseAddr("10.80.0.200")
	if err := a.AssignIP(ctx, fixed, "fixed", nil); err != nil {
		t.Fatal(err)
	}
	if err := a.AssignIP(ctx, fixed, "fixed2", nil); !errors.Is(err, ipam.ErrInUse) {
		t.Fatalf("second AssignIP: %v", err)
	}
	if released, err := a.ReleaseIPs(ctx, fixed); err != nil || len(released) != 0 {
		t.Fatalf("ReleaseIPs = %v, %v", released, err)
	}

	if err := a.ReleaseByHandle(ctx, "k8s-pod-network.c1"); err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseByHandle(ctx, "k8s-pod-network.c1"); err != nil {
		t.Fatalf("release twice: %v", err)
	}
	delete(want, "k8s-pod-network.c1")
	if st := ipamState(t, d); fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("after release: %v, want %v", st, want)
	}
	if _, err := d.Get(ctx, resources.Key{Kind: resources.KindIPAMHandle, Name: "k8s-pod-network.c1"}); !datastore.IsNotFound(err) {
		t.Fatalf("handle record after release: %v", err)
	}
}

// TestIPAMConcurrent: two nodes, each with several goroutines, assign
// from one small pool at once until it is exhausted (so they claim every
// block and then borrow from each other's), then release half and assign
// again. No address is ever handed out twice and the stored state stays
// consistent.
func TestIPAMConcurrent(t *testing.T) {
	const (
		nodes    = 2
		perNode  = 4
		poolCIDR = "10.81.0.0/25" // 128 addresses
		poolSize = 128
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := newDatastore(t, kubernetes.Config{})
	mustCreate(t, d, ippool("small", poolCIDR, 29)) // 16 blocks of 8
	instances := make([]*ipam.IPAM, nodes)
	for n := range instances {
		name := fmt.Sprintf("node-%d", n)
		mustCreate(t, d, node(name, nil))
		// One datastore (one connection) per node, as on a real cluster.
		instances[n] = newIPAM(t, kubeapi.Datastore(t, kubernetes.Config{}), name)
	}

	var (
		mu    sync.Mutex
		owner = map[netip.Addr]string{}
		held  = map[string]netip.Addr{}
	)
	record := func(handle string, addr netip.Addr) {
		mu.Lock()
		defer mu.Unlock()
		if prev, dup := owner[addr]; dup {
			t.Errorf("%s handed out to %s while held by %s", addr, handle, prev)
		}
		owner[addr] = handle
		held[handle] = addr
	}
	// fill assigns until the pool is exhausted; it returns its handles.
	fill := func(n, g, round int) []string {
		var mine []string
		for i := 0; ; i++ {
			h := fmt.Sprintf("r%d-n%d-g%d-%d", round, n, g, i)
			if i%3 == 0 {
				h = fmt.Sprintf("Pod_R%d_N%d_G%d_%d", round, n, g, i) // a hashed name
			}
			got, err := instances[n].AutoAssign(ctx, ipam.AssignArgs{Handle: h, Num4: 1})
			if errors.Is(err, ipam.ErrExhausted) {
				return mine
			}
			if err != nil {
				t.Error(err)
				return mine
			}
			record(h, got.IPv4[0])
			mine = append(mine, h)
		}
	}
	run := func(round int, before func(n, g int)) [][]string {
		out := make([][]string, nodes*perNode)
		var wg sync.WaitGroup
		for n := range nodes {
			for g := range perNode {
				wg.Go(func() {
					if before != nil {
						before(n, g)
					}
					out[n*perNode+g] = fill(n, g, round)
				})
			}
		}
		wg.Wait()
		return out
	}

	start := time.Now()
	round1 := run(1, nil)
	if t.Failed() {
		t.FailNow()
	}
	if len(owner) != poolSize {
		t.Fatalf("round 1 assigned %d addresses, the pool has %d", len(owner), poolSize)
	}
	st := ipamState(t, d)
	if len(st) != poolSize {
		t.Fatalf("stored state holds %d handles", len(st))
	}
	perNodeCount := map[string]int{}
	blocks, _, _ := datastore.ListOf[*resources.IPAMBlock](ctx, d)
	for _, b := range blocks {
		perNodeCount[b.AffineNode()]++
	}
	t.Logf("round 1: %d addresses in %s; blocks per node %v", poolSize, time.Since(start).Round(time.Millisecond), perNodeCount)

	// Round 2: each goroutine releases every other handle it got while
	// the others assign.
	start = time.Now()
	run(2, func(n, g int) {
		for i, h := range round1[n*perNode+g] {
			if i%2 == 1 {
				continue
			}
			mu.Lock()
			addr := held[h]
			delete(owner, addr)
			delete(held, h)
			mu.Unlock()
			if err := instances[n].ReleaseByHandle(ctx, h); err != nil {
				t.Error(err)
			}
		}
	})
	if len(owner) != poolSize {
		t.Fatalf("round 2 left %d addresses assigned, want %d", len(owner), poolSize)
	}
	st = ipamState(t, d)
	for h, addrs := range st {
		if len(addrs) != 1 || held[h] != addrs[0] {
			t.Errorf("handle %s holds %v in the datastore, %v in the test", h, addrs, held[h])
		}
	}
	if len(st) != len(held) {
		t.Errorf("datastore has %d handles, the test %d", len(st), len(held))
	}
	t.Logf("round 2: released and reassigned half in %s", time.Since(start).Round(time.Millisecond))
}
