package datastoretest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// CRUD creates, reads, updates, lists and deletes an IPPool in d, which
// must hold no IPPool or Node: defaults are stored, metadata is filled in,
// every write changes the resourceVersion, a list carries its revision,
// and kinds do not see each other. It leaves the Node "pool-a" behind.
func CRUD(t *testing.T, d datastore.Datastore) {
	ctx := context.Background()
	created, err := d.Create(ctx, Pool("pool-a", "10.65.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	m := created.Meta()
	if m.ResourceVersion == "" || m.UID == "" || m.CreationTimestamp == "" {
		t.Fatalf("metadata not filled in: %+v", m)
	}
	got, err := datastore.Get[*resources.IPPool](ctx, d, "pool-a")
	if err != nil {
		t.Fatal(err)
	}
	// Defaults were stored.
	if got.Spec.BlockSize != 26 || got.Spec.IPIPMode != resources.EncapNever || got.Spec.NodeSelector != "all()" ||
		got.ResourceVersion != m.ResourceVersion || got.UID != m.UID || got.APIVersion != resources.APIVersion || got.Kind != "IPPool" {
		t.Fatalf("stored %+v", got)
	}

	got.Spec.NATOutgoing = true
	updated, err := datastore.Update(ctx, d, got)
	if err != nil {
		t.Fatal(err)
	}
	if updated.ResourceVersion == m.ResourceVersion {
		t.Fatal("resourceVersion unchanged by Update")
	}
	if !updated.Spec.NATOutgoing || updated.UID != m.UID {
		t.Fatalf("updated %+v", updated)
	}

	list, err := d.List(ctx, resources.KindIPPool)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || !list.Items[0].(*resources.IPPool).Spec.NATOutgoing || list.Revision == "" {
		t.Fatalf("list %+v", list)
	}
	if rev, _ := strconv.ParseInt(list.Revision, 10, 64); rev < 2 {
		t.Fatalf("list revision %s", list.Revision)
	}

	old, err := d.Delete(ctx, resources.KeyOf(updated), updated.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	if old.(*resources.IPPool).Spec.CIDR != "10.65.0.0/16" || old.Meta().ResourceVersion != updated.ResourceVersion {
		t.Fatalf("deleted object %+v", old)
	}
	if _, err := d.Get(ctx, resources.KeyOf(updated)); !datastore.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}
	// Kinds do not see each other.
	if _, err := d.Create(ctx, Node("pool-a", nil)); err != nil {
		t.Fatal(err)
	}
	keys, err := d.ListKeys(ctx, resources.KindNode)
	if err != nil || len(keys) != 1 || keys[0] != NodeKey("pool-a") {
		t.Fatalf("ListKeys = %v, %v", keys, err)
	}
	if l, err := d.List(ctx, resources.KindIPPool); err != nil || len(l.Items) != 0 {
		t.Fatalf("pools %v, %v", l, err)
	}
}

// Errors checks the typed errors (NotFound, AlreadyExists, Conflict with
// both versions), the backend's own errors, validation and pool overlaps
// (on create and update), in d, which must hold no Node or IPPool. Each
// case is a subtest.
func (b Backend) Errors(t *testing.T, d datastore.Datastore) {
	ctx := context.Background()
	n, err := datastore.Create(ctx, d, Node("n1", nil))
	if err != nil {
		t.Fatal(err)
	}
	stale := n.ResourceVersion
	n.Labels = map[string]string{"a": "b"}
	n, err = datastore.Update(ctx, d, n)
	if err != nil {
		t.Fatal(err)
	}
	isError := func(err error) bool { return err != nil }
	conflict := fmt.Sprintf(`Node "n1": resourceVersion %s is stale (current %s)`, stale, n.ResourceVersion)

	tests := []struct {
		name  string
		op    func() error
		check func(error) bool
		msg   string
	}{
		{"create existing", func() error { _, err := d.Create(ctx, Node("n1", nil)); return err },
			datastore.IsAlreadyExists, `Node "n1": already exists`},
		{"update stale", func() error {
			x := Node("n1", map[string]string{"x": "y"})
			x.ResourceVersion = stale
			_, err := d.Update(ctx, x)
			return err
		}, datastore.IsConflict, conflict},
		{"delete stale", func() error { _, err := d.Delete(ctx, NodeKey("n1"), stale); return err },
			datastore.IsConflict, conflict},
		{"update missing", func() error {
			x := Node("nope", nil)
			x.ResourceVersion = stale
			_, err := d.Update(ctx, x)
			return err
		}, datastore.IsNotFound, `Node "nope": not found`},
		{"delete missing", func() error { _, err := d.Delete(ctx, NodeKey("nope"), ""); return err },
			datastore.IsNotFound, `Node "nope": not found`},
		{"delete missing with revision", func() error { _, err := d.Delete(ctx, NodeKey("nope"), "5"); return err },
			datastore.IsNotFound, `Node "nope": not found`},
		{"get missing", func() error { _, err := d.Get(ctx, NodeKey("nope")); return err },
			datastore.IsNotFound, `Node "nope": not found`},
		{"update without version", func() error { _, err := d.Update(ctx, Node("n1", nil)); return err },
			isError, b.Name + `: update Node "n1": resourceVersion is required`},
		{"invalid version", func() error { x := Node("n1", nil); x.ResourceVersion = "abc"; _, err := d.Update(ctx, x); return err },
			func(err error) bool { return err != nil && !datastore.IsConflict(err) }, b.InvalidVersionError},
		{"create pool", func() error { _, err := d.Create(ctx, Pool("bad", "10.0.0.0/16")); return err },
			func(err error) bool { return err == nil }, ``},
		{"invalid block size", func() error {
			p := Pool("bad2", "10.1.0.0/16")
			p.Spec.BlockSize = 33
			_, err := d.Create(ctx, p)
			return err
		}, func(err error) bool { return errors.Is(err, resources.ErrInvalid) }, `IPPool "bad2": spec.blockSize: 33 is out of range 20..32 for IPv4`},
		{"overlapping pool", func() error { _, err := d.Create(ctx, Pool("overlap", "10.0.128.0/17")); return err },
			func(err error) bool { return errors.Is(err, resources.ErrInvalid) }, `IPPool "overlap": spec.cidr: 10.0.128.0/17 overlaps IPPool "bad" (10.0.0.0/16)`},
		{"unknown kind", func() error { _, err := d.Get(ctx, resources.Key{Kind: "Pod", Name: "x"}); return err },
			isError, b.Name + `: unknown kind "Pod"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			if !tt.check(err) {
				t.Fatalf("unexpected error %v", err)
			}
			if tt.msg != "" && (err == nil || err.Error() != tt.msg) {
				t.Fatalf("error %q, want %q", err, tt.msg)
			}
		})
	}
	// The typed conflict error carries both versions.
	x := Node("n1", nil)
	x.ResourceVersion = stale
	_, err = d.Update(ctx, x)
	var ce *datastore.ConflictError
	if !errors.As(err, &ce) || ce.Expected != stale || ce.Current != n.ResourceVersion {
		t.Fatalf("conflict error %#v", err)
	}
	// Updating a pool onto another's range is refused too; its own range is fine.
	p, err := datastore.Get[*resources.IPPool](ctx, d, "bad")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Create(ctx, Pool("other", "10.9.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if _, err := datastore.Update(ctx, d, p); err != nil {
		t.Fatalf("update in place: %v", err)
	}
	p.Spec.CIDR = "10.9.0.0/20"
	if _, err := datastore.Update(ctx, d, p); !errors.Is(err, resources.ErrInvalid) {
		t.Fatalf("update onto another pool: %v", err)
	}
}

// Unreachable checks that requests to a datastore that cannot answer
// fail within their context's deadline (200ms) and within the backend's
// default request timeout: open returns a datastore of the backend for
// host:port addr, with a default request timeout below a second, closed in
// t's cleanup. The endpoint refuses connections (subtest "refused"), or
// accepts them and never answers ("silent").
func Unreachable(t *testing.T, open func(t *testing.T, addr string) datastore.Datastore) {
	for _, ep := range []struct {
		name string
		addr func(testing.TB) string
	}{
		{"refused", RefusedAddr},
		{"silent", SilentAddr},
	} {
		t.Run(ep.name, func(t *testing.T) {
			d := open(t, ep.addr(t))
			tests := []struct {
				name string
				ctx  func() (context.Context, context.CancelFunc)
			}{
				{"context deadline", func() (context.Context, context.CancelFunc) {
					return context.WithTimeout(context.Background(), 200*time.Millisecond)
				}},
				{"default timeout", func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					for _, op := range []func(context.Context) error{
						func(ctx context.Context) error { _, err := d.Get(ctx, NodeKey("a")); return err },
						func(ctx context.Context) error { _, err := d.Create(ctx, Node("a", nil)); return err },
						func(ctx context.Context) error { _, err := d.List(ctx, resources.KindNode); return err },
					} {
						ctx, cancel := tt.ctx()
						start := time.Now()
						err := op(ctx)
						cancel()
						if err == nil {
							t.Fatal("no error from an unreachable datastore")
						}
						if el := time.Since(start); el > 2*time.Second {
							t.Fatalf("took %s to fail: %v", el, err)
						}
					}
				})
			}
		})
	}
}

// CASConcurrent has goroutines increment one counter (an IPAMHandle) by
// read-modify-write with compare-and-swap; no increment may be lost. It
// returns how many workers saw a conflict, for the caller to report or
// require.
func CASConcurrent(t *testing.T, d datastore.Datastore) (conflicted, workers int) {
	ctx := context.Background()
	h := &resources.IPAMHandle{ObjectMeta: resources.ObjectMeta{Name: "counter"},
		Spec: resources.IPAMHandleSpec{HandleID: "counter", Block: map[string]int{"10.0.0.0/26": 1}}}
	if _, err := d.Create(ctx, h); err != nil {
		t.Fatal(err)
	}
	const nWorkers, each = 8, 25
	var conflicts sync.Map
	var wg sync.WaitGroup
	start := time.Now()
	for w := range nWorkers {
		wg.Go(func() {
			for range each {
				for {
					cur, err := datastore.Get[*resources.IPAMHandle](ctx, d, "counter")
					if err != nil {
						t.Error(err)
						return
					}
					cur.Spec.Block["10.0.0.0/26"]++
					_, err = d.Update(ctx, cur)
					if err == nil {
						break
					}
					if !datastore.IsConflict(err) {
						t.Error(err)
						return
					}
					conflicts.Store(w, true)
				}
			}
		})
	}
	wg.Wait()
	got, err := datastore.Get[*resources.IPAMHandle](ctx, d, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if n := got.Spec.Block["10.0.0.0/26"]; n != 1+nWorkers*each {
		t.Fatalf("counter %d, want %d", n, 1+nWorkers*each)
	}
	conflicts.Range(func(any, any) bool { conflicted++; return true })
	t.Logf("%d increments in %s; %d of %d workers saw conflicts",
		nWorkers*each, time.Since(start).Round(time.Millisecond), conflicted, nWorkers)
	return conflicted, nWorkers
}
