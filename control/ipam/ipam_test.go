package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
	"github.com/tabbynet/tabby/control/resources"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// env is one test's datastore with its pools and nodes.
type env struct {
	t  *testing.T
	ds *etcd.Datastore
	// plain hides the datastore's transactions from IPAM, which then
	// writes handle records and blocks one compare-and-swap at a time (as
	// on a Kubernetes datastore).
	plain bool
}

// casOnly is a datastore without datastore.Transactor.
type casOnly struct{ datastore.Datastore }

// modes are the two ways IPAM writes: one transaction per batch, or one
// compare-and-swap per object.
var modes = []struct {
	name  string
	plain bool
}{{"txn", false}, {"cas", true}}

func newEnv(t *testing.T, pools []*resources.IPPool, nodes map[string]map[string]string) *env {
	t.Helper()
	e := &env{t: t, ds: etcdtest.Datastore(t, etcd.Config{})}
	ctx := context.Background()
	for _, p := range pools {
		if _, err := e.ds.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for name, labels := range nodes {
		n := &resources.Node{ObjectMeta: resources.ObjectMeta{Name: name, Labels: labels}}
		if _, err := e.ds.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) ipam(node string, mod func(*Config)) *IPAM {
	e.t.Helper()
	cfg := Config{Node: node}
	if mod != nil {
		mod(&cfg)
	}
	var ds datastore.Datastore = e.ds
	if e.plain {
		ds = casOnly{e.ds}
	}
	a, err := New(ds, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// assign assigns n4 IPv4 and n6 IPv6 addresses and fails the test on error.
func (e *env) assign(a *IPAM, handle string, n4, n6 int) Assignment {
	e.t.Helper()
	got, err := a.AutoAssign(context.Background(), AssignArgs{Handle: handle, Num4: n4, Num6: n6,
		Attrs: map[string]string{AttrPodNamespace: "default", AttrPodName: handle}})
	if err != nil {
		e.t.Fatalf("assign %s: %v", handle, err)
	}
	if len(got.IPv4) != n4 || len(got.IPv6) != n6 {
		e.t.Fatalf("assign %s: got %v, want %d+%d", handle, got, n4, n6)
	}
	return got
}

func (e *env) blocks() []*resources.IPAMBlock {
	e.t.Helper()
	bs, _, err := datastore.ListOf[*resources.IPAMBlock](context.Background(), e.ds)
	if err != nil {
		e.t.Fatal(err)
	}
	return bs
}

func (e *env) block(cidr string) *resources.IPAMBlock {
	e.t.Helper()
	b, err := datastore.Get[*resources.IPAMBlock](context.Background(), e.ds, resources.BlockName(netip.MustParsePrefix(cidr)))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// check verifies the datastore's IPAM state is consistent: every block
// valid, every handle record's counts equal to the allocations in the
// blocks, every affinity matching its block. It returns the allocated
// addresses by handle.
func (e *env) check() map[string][]netip.Addr {
	e.t.Helper()
	ctx := context.Background()
	byHandle := map[string][]netip.Addr{}
	counts := map[string]map[string]int{}
	for _, b := range e.blocks() {
		if err := b.Validate(); err != nil {
			e.t.Fatal(err)
		}
		p := b.Prefix()
		for o, ai := range b.Spec.Allocations {
			if ai < 0 {
				continue
			}
			h := b.Spec.Attributes[ai].HandleID
			byHandle[h] = append(byHandle[h], addrOf(p, int32(o)))
			if counts[h] == nil {
				counts[h] = map[string]int{}
			}
			counts[h][p.String()]++
		}
	}
	handles, _, err := datastore.ListOf[*resources.IPAMHandle](ctx, e.ds)
	if err != nil {
		e.t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, h := range handles {
		seen[h.Spec.HandleID] = true
		if fmt.Sprint(h.Spec.Block) != fmt.Sprint(counts[h.Spec.HandleID]) {
			e.t.Errorf("handle %s records %v, blocks hold %v", h.Spec.HandleID, h.Spec.Block, counts[h.Spec.HandleID])
		}
	}
	for h := range counts {
		if !seen[h] {
			e.t.Errorf("handle %s holds addresses but has no record", h)
		}
	}
	affs, _, err := datastore.ListOf[*resources.BlockAffinity](ctx, e.ds)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, af := range affs {
		b, err := datastore.Get[*resources.IPAMBlock](ctx, e.ds, resources.BlockName(netip.MustParsePrefix(af.Spec.CIDR)))
		if err != nil {
			e.t.Errorf("affinity %s: %v", af.Name, err)
			continue
		}
		if b.AffineNode() != af.Spec.Node || af.Spec.State != resources.AffinityConfirmed {
			e.t.Errorf("affinity %s (%s) but block affinity %q", af.Name, af.Spec.State, b.Spec.Affinity)
		}
	}
	for _, list := range byHandle {
		sortAddrs(list)
	}
	return byHandle
}

func ippool(name, cidr string, blockSize int, mod func(*resources.IPPoolSpec)) *resources.IPPool {
	p := &resources.IPPool{ObjectMeta: resources.ObjectMeta{Name: name}, Spec: resources.IPPoolSpec{CIDR: cidr, BlockSize: blockSize}}
	if mod != nil {
		mod(&p.Spec)
	}
	return p
}

func inPrefix(t *testing.T, addrs []netip.Addr, cidr string) {
	t.Helper()
	p := netip.MustParsePrefix(cidr)
	for _, a := range addrs {
		if !p.Contains(a) {
			t.Fatalf("%s is not in %s", a, p)
		}
	}
}

func TestIPAM(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		pools []*resources.IPPool
		nodes map[string]map[string]string
		run   func(t *testing.T, e *env)
	}{
		{
			name:  "claim and assign",
			pools: []*resources.IPPool{ippool("pool-a", "10.65.0.0/24", 28, nil)},
			run: func(t *testing.T, e *env) {
				a := e.ipam("node-a", nil)
				got := e.assign(a, "h1", 1, 0)
				inPrefix(t, got.IPv4, "10.65.0.0/24")
				blocks := e.blocks()
				if len(blocks) != 1 || blocks[0].Spec.Affinity != "host:node-a" || !blocks[0].Prefix().Contains(got.IPv4[0]) {
					t.Fatalf("blocks %+v", blocks)
				}
				attr := blocks[0].Spec.Attributes[0]
				if attr.HandleID != "h1" || attr.Secondary[AttrPodName] != "h1" || attr.Secondary[AttrNode] != "node-a" || attr.Secondary[AttrTimestamp] == "" {
					t.Fatalf("attributes %+v", attr)
				}
				ips, err := a.IPsByHandle(ctx, "h1")
				if err != nil || len(ips) != 1 || ips[0] != got.IPv4[0] {
					t.Fatalf("IPsByHandle = %v, %v", ips, err)
				}
				// A second instance for the same node finds the block.
				b := e.ipam("node-a", nil)
				got2 := e.assign(b, "h2", 2, 0)
				inPrefix(t, got2.IPv4, blocks[0].Spec.CIDR)
				if len(e.blocks()) != 1 {
					t.Fatal("second instance claimed another block")
				}
				e.check()
			},
		},
		{
			name:  "full block claims the next",
			pools: []*resources.IPPool{ippool("pool-a", "10.65.0.0/24", 28, nil)},
			run: func(t *testing.T, e *env) {
				a := e.ipam("node-a", nil)
				first := e.assign(a, "h0", 1, 0).IPv4[0]
				b0, _ := first.Prefix(28)
				for i := 1; i < 16; i++ {
					inPrefix(t, e.assign(a, fmt.Sprintf("h%d", i), 1, 0).IPv4, b0.String())
				}
				next := e.assign(a, "h16", 1, 0).IPv4[0]
				if b0.Contains(next) {
					t.Fatalf("%s from the full block %s", next, b0)
				}
				// A multi-address assignment spans blocks.
				got := e.assign(a, "multi", 20, 0)
				if len(got.IPv4) != 20 || len(e.blocks()) != 3 {
					t.Fatalf("got %d addresses in %d blocks", len(got.IPv4), len(e.blocks()))
				}
				for _, b := range e.blocks() {
					if b.AffineNode() != "node-a" {
						t.Errorf("block %s affinity %q", b.Spec.CIDR, b.Spec.Affinity)
					}
				}
				e.check()
			},
		},
		{
			name:  "exhaust",
			pools: []*resources.IPPool{ippool("tiny", "10.65.0.0/28", 28, nil)},
			run: func(t *testing.T, e *env) {
				a := e.ipam("node-a", nil)
				seen := map[netip.Addr]bool{}
				for i := range 15 {
					ip := e.assign(a, fmt.Sprintf("h%d", i), 1, 0).IPv4[0]
					if seen[ip] {
						t.Fatalf("%s twice", ip)
					}
					seen[ip] = true
				}
				// Two wanted, one left: nothing is assigned.
				_, err := a.AutoAssign(ctx, AssignArgs{Handle: "two", Num4: 2})
				if !errors.Is(err, ErrExhausted) {
					t.Fatalf("err %v, want ErrExhausted", err)
				}
				if n := freeCount(e.block("10.65.0.0/28")); n != 1 {
					t.Fatalf("%d free after a failed assignment, want 1", n)
				}
				e.assign(a, "last", 1, 0)
				if _, err := a.AutoAssign(ctx, AssignArgs{Handle: "more", Num4: 1}); !errors.Is(err, ErrExhausted) {
					t.Fatalf("err %v, want ErrExhausted", err)
				}
				e.check()
			},
		},
		{
			name:  "borrow",
			pools: []*resources.IPPool{ippool("pool", "10.65.0.0/27", 28, nil)},
			run: func(t *testing.T, e *env) {
				a, b := e.ipam("node-a", nil), e.ipam("node-b", nil)
				for i := range 16 {
					e.assign(a, fmt.Sprintf("a%d", i), 1, 0)
				}
				ipB := e.assign(b, "b0", 1, 0).IPv4[0]
				blockB, _ := ipB.Prefix(28)
				// node-a's block is full and no block is left: it borrows.
				got := e.assign(a, "a-borrow", 1, 0).IPv4[0]
				if !blockB.Contains(got) {
					t.Fatalf("borrowed %s, not from node-b's %s", got, blockB)
				}
				if e.block(blockB.String()).AffineNode() != "node-b" {
					t.Fatal("borrowing changed the affinity")
				}
				e.check()
			},
		},
		{
			name:  "strict affinity",
			pools: []*resources.IPPool{ippool("pool", "10.65.0.0/27", 28, nil)},
			run: func(t *testing.T, e *env) {
				a := e.ipam("node-a", func(c *Config) { c.StrictAffinity = true })
				b := e.ipam("node-b", nil)
				for i := range 16 {
					e.assign(a, fmt.Sprintf("a%d", i), 1, 0)
				}
				ipB := e.assign(b, "b0", 1, 0).IPv4[0]
				if _, err := a.AutoAssign(ctx, AssignArgs{Handle: "a-more", Num4: 1}); !errors.Is(err, ErrExhausted) {
					t.Fatalf("err %v, want ErrExhausted", err)
				}
				if err := a.AssignIP(ctx, ipB.Next(), "a-ip", nil); !errors.Is(err, ErrStrictAffinity) {
					t.Fatalf("AssignIP in node-b's block: %v, want ErrStrictAffinity", err)
				}
				e.check()
			},
		},
		{
			name:  "release idempotent",
			pools: []*resources.IPPool{ippool("tiny", "10.65.0.0/30", 30, nil)},
			run: func(t *testing.T, e *env) {
				a := e.ipam("node-a", nil)
				got := e.assign(a, "h1", 2, 0)
				for range 2 {
					if err := a.ReleaseByHandle(ctx, "h1"); err != nil {
						t.Fatal(err)
					}
				}
				if err := a.ReleaseByHandle(ctx, "never-assigned"); err != nil {
					t.Fatal(err)
				}
				if ips, _ := a.IPsByHandle(ctx, "h1"); len(ips) != 0 {
					t.Fatalf("h1 still has %v", ips)
				}
				if h := e.check(); len(h) != 0 {
					t.Fatalf("allocations left: %v", h)
				}
				// The released addresses are handed out after the others.
				next := e.assign(a, "h2", 2, 0)
				if next.IPv4[0] == got.IPv4[0] || next.IPv4[0] == got.IPv4[1] {
					t.Fatalf("released %v reused first: %v", got.IPv4, next.IPv4)
				}
				// ReleaseIPs reports the addresses that were not assigned.
				unassigned, err := a.ReleaseIPs(ctx, next.IPv4[0], got.IPv4[0], netip.MustParseAddr("192.0.2.1"))
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(unassigned) != fmt.Sprintf("[%s 192.0.2.1]", got.IPv4[0]) {
					t.Fatalf("unassigned %v", unassigned)
				}
				h := e.check()
				if len(h["h2"]) != 1 || h["h2"][0] != next.IPv4[1] {
					t.Fatalf("after ReleaseIPs: %v", h)
				}
			},
		},
		{
			name: "disabled pool",
			pools: []*resources.IPPool{
				ippool("a-disabled", "10.65.0.0/24", 28, func(s *resources.IPPoolSpec) { s.Disabled = true }),
				ippool("b-enabled", "10.66.0.0/24", 28, nil),
			},
			run: func(t *testing.T, e *env) {
				a := e.ipam("node-a", nil)
				for i := range 20 {
					inPrefix(t, e.assign(a, fmt.Sprintf("h%d", i), 1, 0).IPv4, "10.66.0.0/24")
				}
				if _, err := a.AutoAssign(ctx, AssignArgs{Handle: "x", Num4: 1, Pools4: []string{"a-disabled"}}); !errors.Is(err, ErrNoPools) {
					t.Fatalf("err %v, want ErrNoPools", err)
				}
				// Disabled pools still accept explicit addresses.
				if err := a.AssignIP(ctx, netip.MustParseAddr("10.65.0.9"), "explicit", nil); err != nil {
					t.Fatal(err)
				}
				e.check()
			},
		},
		{
			name: "node selector",
			pools: []*resources.IPPool{
				ippool("zone-a", "10.65.0.0/24", 28, func(s *resources.IPPoolSpec) { s.NodeSelector = "zone == 'a'" }),
				ippool("zone-b", "10.66.0.0/24", 28, func(s *resources.IPPoolSpec) { s.NodeSelector = "zone == 'b'" }),
			},
			nodes: map[string]map[string]string{"node-a": {"zone": "a"}, "node-b": {"zone": "b"}, "node-c": {"zone": "c"}},
			run: func(t *testing.T, e *env) {
				inPrefix(t, e.assign(e.ipam("node-a", nil), "a", 3, 0).IPv4, "10.65.0.0/24")
				inPrefix(t, e.assign(e.ipam("node-b", nil), "b", 3, 0).IPv4, "10.66.0.0/24")
				for _, n := range []string{"node-c", "node-unknown"} {
					if _, err := e.ipam(n, nil).AutoAssign(ctx, AssignArgs{Handle: "c", Num4: 1}); !errors.Is(err, ErrNoPools) {
						t.Fatalf("%s: err %v, want ErrNoPools", n, err)
					}
				}
				e.check()
			},
		},
		{
			name: "dual stack",
			pools: []*resources.IPPool{
				ippool("v4", "10.65.0.0/24", 28, nil),
				ippool("v6", "fd00:65::/120", 124, nil),
			},
			run: func(t *testing.T, e *env) {
				a := e.ipam("node-a", nil)
				got := e.assign(a, "h1", 1, 1)
				inPrefix(t, got.IPv4, "10.65.0.0/24")
				inPrefix(t, got.IPv6, "fd00:65::/120")
				for i := range 17 {
					inPrefix(t, e.assign(a, fmt.Sprintf("v6-%d", i), 0, 1).IPv6, "fd00:65::/120")
				}
				ips, _ := a.IPsByHandle(ctx, "h1")
				if len(ips) != 2 {
					t.Fatalf("IPsByHandle = %v", ips)
				}
				if err := a.ReleaseByHandle(ctx, "h1"); err != nil {
					t.Fatal(err)
				}
				if h := e.check(); len(h["h1"]) != 0 || len(h) != 17 {
					t.Fatalf("after release: %v", h)
				}
			},
		},
		{
			name:  "v6 missing rolls back v4",
			pools: []*resources.IPPool{ippool("v4", "10.65.0.0/24", 28, nil)},
			run: func(t *testing.T, e *env) {
				a := e.ipam("node-a", nil)
				if _, err := a.AutoAssign(ctx, AssignArgs{Handle: "h", Num4: 1, Num6: 1}); !errors.Is(err, ErrNoPools) {
					t.Fatalf("err %v, want ErrNoPools", err)
				}
				if h := e.check(); len(h) != 0 {
					t.Fatalf("left behind: %v", h)
				}
			},
		},
		{
			name:  "no pools",
			pools: nil,
			run: func(t *testing.T, e *env) {
				if _, err := e.ipam("node-a", nil).AutoAssign(ctx, AssignArgs{Handle: "h", Num4: 1}); !errors.Is(err, ErrNoPools) {
					t.Fatalf("err %v, want ErrNoPools", err)
				}
				if _, err := e.ipam("node-a", nil).AutoAssign(ctx, AssignArgs{Handle: "bad/handle", Num4: 1}); err == nil {
					t.Fatal("invalid handle accepted")
				}
			},
		},
		{
			name:  "assign ip",
			pools: []*resources.IPPool{ippool("pool", "10.65.0.0/24", 28, nil)},
			run: func(t *testing.T, e *env) {
				a, b := e.ipam("node-a", nil), e.ipam("node-b", nil)
				ip := netip.MustParseAddr("10.65.0.77")
				if err := a.AssignIP(ctx, ip, "tunnel-a", nil); err != nil {
					t.Fatal(err)
				}
				if blk := e.block("10.65.0.64/28"); blk.AffineNode() != "node-a" {
					t.Fatalf("block affinity %q", blk.Spec.Affinity)
				}
				if err := b.AssignIP(ctx, ip, "tunnel-b", nil); !errors.Is(err, ErrInUse) {
					t.Fatalf("err %v, want ErrInUse", err)
				}
				if err := b.AssignIP(ctx, ip.Next(), "tunnel-b", nil); err != nil {
					t.Fatalf("AssignIP in node-a's block: %v", err)
				}
				if err := a.AssignIP(ctx, netip.MustParseAddr("10.99.0.1"), "x", nil); !errors.Is(err, ErrNotInPool) {
					t.Fatalf("err %v, want ErrNotInPool", err)
				}
				// AutoAssign skips the taken addresses.
				for i := range 14 {
					got := e.assign(a, fmt.Sprintf("h%d", i), 1, 0).IPv4[0]
					if got == ip || got == ip.Next() {
						t.Fatalf("%s assigned twice", got)
					}
				}
				e.check()
			},
		},
		{
			name:  "garbage collection",
			pools: []*resources.IPPool{ippool("pool", "10.65.0.0/24", 28, nil)},
			run: func(t *testing.T, e *env) {
				a, b := e.ipam("node-a", nil), e.ipam("node-b", nil)
				for i := range 5 {
					e.assign(a, fmt.Sprintf("a%d", i), 1, 0)
					e.assign(b, fmt.Sprintf("b%d", i), 1, 0)
				}
				live := map[string]bool{"a1": true, "a3": true}
				st, err := a.GarbageCollect(ctx, GCOptions{Live: func(h string) bool { return live[h] }})
				if err != nil {
					t.Fatal(err)
				}
				if st.Addresses != 3 || st.Blocks != 0 {
					t.Fatalf("node gc: %+v", st)
				}
				h := e.check()
				if len(h) != 7 || len(h["a1"]) != 1 || len(h["a0"]) != 0 || len(h["b0"]) != 1 {
					t.Fatalf("after node gc: %v", h)
				}
				// A grace period spares young allocations.
				st, err = b.GarbageCollect(ctx, GCOptions{Live: func(string) bool { return false }, GracePeriod: time.Hour})
				if err != nil || st != (GCStats{}) {
					t.Fatalf("gc with grace: %+v, %v", st, err)
				}
				// Cluster-wide: everything is dead; empty blocks go, and a
				// handle record without addresses too.
				orphan := &resources.IPAMHandle{ObjectMeta: resources.ObjectMeta{Name: "orphan"},
					Spec: resources.IPAMHandleSpec{HandleID: "orphan", Block: map[string]int{"10.65.0.0/28": 1}}}
				if _, err := e.ds.Create(ctx, orphan); err != nil {
					t.Fatal(err)
				}
				st, err = a.GarbageCollect(ctx, GCOptions{Live: func(string) bool { return false }, AllNodes: true})
				if err != nil {
					t.Fatal(err)
				}
				if st.Addresses != 7 || st.Handles != 1 || st.Blocks != 2 || st.Affinities != 0 {
					t.Fatalf("cluster gc: %+v", st)
				}
				if h := e.check(); len(h) != 0 || len(e.blocks()) != 0 {
					t.Fatalf("after cluster gc: %v, %d blocks", h, len(e.blocks()))
				}
				affs, _, _ := datastore.ListOf[*resources.BlockAffinity](ctx, e.ds)
				if len(affs) != 0 {
					t.Fatalf("affinities left: %v", affs)
				}
				// The node claims again.
				e.assign(a, "again", 1, 0)
				e.check()
				// A claim interrupted after its pending affinity was written
				// leaves an affinity without a block; gc deletes it.
				stray := &resources.BlockAffinity{ObjectMeta: resources.ObjectMeta{Name: "node-b-10-65-0-240-28"},
					Spec: resources.BlockAffinitySpec{State: resources.AffinityPending, Node: "node-b", CIDR: "10.65.0.240/28"}}
				if _, err := e.ds.Create(ctx, stray); err != nil {
					t.Fatal(err)
				}
				st, err = b.GarbageCollect(ctx, GCOptions{Live: func(string) bool { return true }})
				if err != nil || st != (GCStats{Affinities: 1}) {
					t.Fatalf("gc of a stray affinity: %+v, %v", st, err)
				}
				e.check()
			},
		},
		{
			name:  "release node",
			pools: []*resources.IPPool{ippool("pool", "10.65.0.0/27", 28, nil)},
			run: func(t *testing.T, e *env) {
				a, b := e.ipam("node-a", nil), e.ipam("node-b", func(c *Config) { c.StrictAffinity = true })
				for i := range 16 {
					e.assign(a, fmt.Sprintf("a%d", i), 1, 0)
				}
				e.assign(a, "second", 1, 0) // claims the second block
				if err := a.ReleaseByHandle(ctx, "second"); err != nil {
					t.Fatal(err)
				}
				if err := b.ReleaseNode(ctx, "node-a"); err != nil {
					t.Fatal(err)
				}
				blocks := e.blocks()
				if len(blocks) != 1 || blocks[0].Spec.Affinity != "" {
					t.Fatalf("after release node: %+v", blocks)
				}
				// node-b (strict) claims the freed block; node-a's old one is
				// unaffine, so only a non-strict node could borrow from it.
				for _, got := range e.assign(b, "b0", 16, 0).IPv4 {
					if blocks[0].Prefix().Contains(got) {
						t.Fatalf("strict node assigned %s from an unaffine block", got)
					}
				}
				if err := a.ReleaseByHandle(ctx, "a0"); err != nil {
					t.Fatal(err)
				}
				c := e.ipam("node-c", nil)
				if got := e.assign(c, "c0", 1, 0).IPv4[0]; !blocks[0].Prefix().Contains(got) {
					t.Fatalf("node-c got %s, want a borrowed address from %s", got, blocks[0].Spec.CIDR)
				}
				e.check()
			},
		},
		{
			name:  "max blocks per node",
			pools: []*resources.IPPool{ippool("pool", "10.65.0.0/24", 28, nil)},
			run: func(t *testing.T, e *env) {
				a := e.ipam("node-a", func(c *Config) { c.MaxBlocksPerNode = 1; c.StrictAffinity = true })
				e.assign(a, "h", 16, 0)
				if _, err := a.AutoAssign(ctx, AssignArgs{Handle: "more", Num4: 1}); !errors.Is(err, ErrExhausted) {
					t.Fatalf("err %v, want ErrExhausted", err)
				}
				if len(e.blocks()) != 1 {
					t.Fatalf("%d blocks", len(e.blocks()))
				}
			},
		},
		{
			name:  "leftover pending affinity",
			pools: []*resources.IPPool{ippool("one-block", "10.65.0.0/28", 28, nil)},
			run: func(t *testing.T, e *env) {
				// A claim interrupted after its first step.
				aff := &resources.BlockAffinity{ObjectMeta: resources.ObjectMeta{Name: "node-a-10-65-0-0-28"},
					Spec: resources.BlockAffinitySpec{State: resources.AffinityPending, Node: "node-a", CIDR: "10.65.0.0/28"}}
				if _, err := e.ds.Create(ctx, aff); err != nil {
					t.Fatal(err)
				}
				// The node's next claim of that block completes it.
				inPrefix(t, e.assign(e.ipam("node-a", func(c *Config) { c.StrictAffinity = true }), "h", 1, 0).IPv4, "10.65.0.0/28")
				e.check()
			},
		},
		{
			name:  "corrupt block",
			pools: []*resources.IPPool{ippool("pool", "10.65.0.0/27", 28, nil)},
			run: func(t *testing.T, e *env) {
				// A block written by something else than IPAM: attribute 3
				// does not exist. Using it could hand out an address twice.
				raw := `{"metadata":{"name":"10-65-0-0-28"},"spec":{"cidr":"10.65.0.0/28","affinity":"host:node-a",` +
					`"allocations":[3,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1],"unallocated":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15],"attributes":[]}}`
				if _, err := e.ds.Client().Put(ctx, e.ds.Prefix()+"ipamblocks/10-65-0-0-28", raw); err != nil {
					t.Fatal(err)
				}
				aff := &resources.BlockAffinity{ObjectMeta: resources.ObjectMeta{Name: "node-a-10-65-0-0-28"},
					Spec: resources.BlockAffinitySpec{State: resources.AffinityConfirmed, Node: "node-a", CIDR: "10.65.0.0/28"}}
				if _, err := e.ds.Create(ctx, aff); err != nil {
					t.Fatal(err)
				}
				if _, err := e.ipam("node-a", nil).AutoAssign(ctx, AssignArgs{Handle: "h", Num4: 1}); err == nil || !strings.Contains(err.Error(), "corrupt") {
					t.Fatalf("assign from a corrupt block: %v", err)
				}
				// Another node claims the other block and, when that is
				// full, does not borrow from the corrupt one.
				b := e.ipam("node-b", nil)
				e.assign(b, "b", 16, 0)
				if _, err := b.AutoAssign(ctx, AssignArgs{Handle: "more", Num4: 1}); !errors.Is(err, ErrExhausted) {
					t.Fatalf("err %v, want ErrExhausted", err)
				}
			},
		},
		{
			name: "pool by name",
			pools: []*resources.IPPool{
				ippool("a", "10.65.0.0/24", 28, nil),
				ippool("b", "10.66.0.0/24", 28, nil),
			},
			run: func(t *testing.T, e *env) {
				a := e.ipam("node-a", nil)
				got, err := a.AutoAssign(ctx, AssignArgs{Handle: "h", Num4: 1, Pools4: []string{"b"}})
				if err != nil {
					t.Fatal(err)
				}
				inPrefix(t, got.IPv4, "10.66.0.0/24")
				// A block of pool a is not used for a request naming b.
				if got, err := a.AutoAssign(ctx, AssignArgs{Handle: "in-a", Num4: 1, Pools4: []string{"a"}}); err != nil || !netip.MustParsePrefix("10.65.0.0/24").Contains(got.IPv4[0]) {
					t.Fatalf("assign from a: %v, %v", got, err)
				}
				got, err = a.AutoAssign(ctx, AssignArgs{Handle: "h2", Num4: 1, Pools4: []string{"b"}})
				if err != nil {
					t.Fatal(err)
				}
				inPrefix(t, got.IPv4, "10.66.0.0/24")
				e.check()
			},
		},
	}
	for _, tt := range tests {
		for _, m := range modes {
			t.Run(tt.name+"/"+m.name, func(t *testing.T) {
				e := newEnv(t, tt.pools, tt.nodes)
				e.plain = m.plain
				tt.run(t, e)
			})
		}
	}
}
