package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
	"github.com/tabbynet/tabby/control/resources"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

func pool(name, cidr string) *resources.IPPool {
	return &resources.IPPool{ObjectMeta: resources.ObjectMeta{Name: name}, Spec: resources.IPPoolSpec{CIDR: cidr}}
}

func node(name string, labels map[string]string) *resources.Node {
	return &resources.Node{ObjectMeta: resources.ObjectMeta{Name: name, Labels: labels}}
}

func nodeKey(name string) resources.Key { return resources.Key{Kind: resources.KindNode, Name: name} }

func TestCRUD(t *testing.T) {
	ctx := context.Background()
	d := etcdtest.Datastore(t, etcd.Config{})

	created, err := d.Create(ctx, pool("pool-a", "10.65.0.0/16"))
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
	if old.(*resources.IPPool).Spec.CIDR != "10.65.0.0/16" {
		t.Fatalf("deleted object %+v", old)
	}
	if _, err := d.Get(ctx, resources.KeyOf(updated)); !datastore.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}
	// Kinds do not see each other, nor do prefixes.
	if _, err := d.Create(ctx, node("pool-a", nil)); err != nil {
		t.Fatal(err)
	}
	keys, err := d.ListKeys(ctx, resources.KindNode)
	if err != nil || len(keys) != 1 || keys[0] != nodeKey("pool-a") {
		t.Fatalf("ListKeys = %v, %v", keys, err)
	}
	other := etcdtest.Datastore(t, etcd.Config{})
	if l, err := other.List(ctx, resources.KindNode); err != nil || len(l.Items) != 0 {
		t.Fatalf("other prefix lists %v, %v", l, err)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	d := etcdtest.Datastore(t, etcd.Config{})
	n, err := datastore.Create(ctx, d, node("n1", nil))
	if err != nil {
		t.Fatal(err)
	}
	stale := n.ResourceVersion
	n.Labels = map[string]string{"a": "b"}
	n, err = datastore.Update(ctx, d, n)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		op    func() error
		check func(error) bool
		msg   string
	}{
		{"create existing", func() error { _, err := d.Create(ctx, node("n1", nil)); return err },
			datastore.IsAlreadyExists, `Node "n1": already exists`},
		{"update stale", func() error {
			x := node("n1", map[string]string{"x": "y"})
			x.ResourceVersion = stale
			_, err := d.Update(ctx, x)
			return err
		}, datastore.IsConflict, fmt.Sprintf(`Node "n1": resourceVersion %s is stale (current %s)`, stale, n.ResourceVersion)},
		{"delete stale", func() error { _, err := d.Delete(ctx, nodeKey("n1"), stale); return err },
			datastore.IsConflict, fmt.Sprintf(`Node "n1": resourceVersion %s is stale (current %s)`, stale, n.ResourceVersion)},
		{"update missing", func() error {
			x := node("nope", nil)
			x.ResourceVersion = stale
			_, err := d.Update(ctx, x)
			return err
		},
			datastore.IsNotFound, `Node "nope": not found`},
		{"delete missing", func() error { _, err := d.Delete(ctx, nodeKey("nope"), ""); return err },
			datastore.IsNotFound, `Node "nope": not found`},
		{"delete missing with revision", func() error { _, err := d.Delete(ctx, nodeKey("nope"), "5"); return err },
			datastore.IsNotFound, `Node "nope": not found`},
		{"get missing", func() error { _, err := d.Get(ctx, nodeKey("nope")); return err },
			datastore.IsNotFound, `Node "nope": not found`},
		{"update without version", func() error { _, err := d.Update(ctx, node("n1", nil)); return err },
			func(err error) bool { return err != nil }, `etcd: update Node "n1": resourceVersion is required`},
		{"invalid version", func() error { x := node("n1", nil); x.ResourceVersion = "abc"; _, err := d.Update(ctx, x); return err },
			func(err error) bool { return err != nil }, `etcd: Node "n1": invalid resourceVersion "abc"`},
		{"create pool", func() error { _, err := d.Create(ctx, pool("bad", "10.0.0.0/16")); return err },
			func(err error) bool { return err == nil }, ``},
		{"invalid block size", func() error {
			p := pool("bad2", "10.1.0.0/16")
			p.Spec.BlockSize = 33
			_, err := d.Create(ctx, p)
			return err
		}, func(err error) bool { return errors.Is(err, resources.ErrInvalid) }, `IPPool "bad2": spec.blockSize: 33 is out of range 20..32 for IPv4`},
		{"overlapping pool", func() error { _, err := d.Create(ctx, pool("overlap", "10.0.128.0/17")); return err },
			func(err error) bool { return errors.Is(err, resources.ErrInvalid) }, `IPPool "overlap": spec.cidr: 10.0.128.0/17 overlaps IPPool "bad" (10.0.0.0/16)`},
		{"unknown kind", func() error { _, err := d.Get(ctx, resources.Key{Kind: "Pod", Name: "x"}); return err },
			func(err error) bool { return err != nil }, `etcd: unknown kind "Pod"`},
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
	x := node("n1", nil)
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
	if _, err := d.Create(ctx, pool("other", "10.9.0.0/16")); err != nil {
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

// TestCASConcurrent: goroutines increment one counter by read-modify-write
// with compare-and-swap; no increment may be lost.
func TestCASConcurrent(t *testing.T) {
	d := etcdtest.Datastore(t, etcd.Config{})
	datastoretest.CASConcurrent(t, d)
}

// TestUnreachable: requests to an endpoint nobody listens on fail within
// their deadline, or the default request timeout.
func TestUnreachable(t *testing.T) {
	srv := etcdtest.StartServer(t, etcd.EmbeddedConfig{})
	ep := srv.Endpoints()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := etcd.New(etcd.Config{Endpoints: ep, RequestTimeout: 300 * time.Millisecond, DialTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
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
				func(ctx context.Context) error { _, err := d.Get(ctx, nodeKey("a")); return err },
				func(ctx context.Context) error { _, err := d.Create(ctx, node("a", nil)); return err },
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
}

func TestCommit(t *testing.T) {
	ctx := context.Background()
	d := etcdtest.Datastore(t, etcd.Config{})
	a, err := datastore.Create(ctx, d, node("a", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Create(ctx, node("b", nil)); err != nil {
		t.Fatal(err)
	}
	staleA := a.ResourceVersion
	a.Labels = map[string]string{"zone": "1"}
	res, err := d.Commit(ctx,
		datastore.Op{Type: datastore.OpUpdate, Object: a},
		datastore.Op{Type: datastore.OpCreate, Object: node("c", nil)},
		datastore.Op{Type: datastore.OpDelete, Key: nodeKey("b")},
	)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Meta().ResourceVersion != res[1].Meta().ResourceVersion || res[2] != nil || res[0].Meta().ResourceVersion == staleA {
		t.Fatalf("results %v", res)
	}
	keys, _ := d.ListKeys(ctx, resources.KindNode)
	if fmt.Sprint(keys) != fmt.Sprint([]resources.Key{nodeKey("a"), nodeKey("c")}) {
		t.Fatalf("after commit: %v", keys)
	}

	stale := node("a", nil)
	stale.ResourceVersion = staleA
	tests := []struct {
		name  string
		ops   []datastore.Op
		check func(error) bool
		msg   string
	}{
		{"create existing", []datastore.Op{
			{Type: datastore.OpCreate, Object: node("new", nil)},
			{Type: datastore.OpCreate, Object: node("c", nil)},
		}, datastore.IsAlreadyExists, `Node "c": already exists`},
		{"update stale", []datastore.Op{
			{Type: datastore.OpCreate, Object: node("new", nil)},
			{Type: datastore.OpUpdate, Object: stale},
		}, datastore.IsConflict, fmt.Sprintf(`Node "a": resourceVersion %s is stale (current %s)`, staleA, a.ResourceVersion)},
		{"delete missing", []datastore.Op{
			{Type: datastore.OpCreate, Object: node("new", nil)},
			{Type: datastore.OpDelete, Key: nodeKey("b")},
		}, datastore.IsNotFound, `Node "b": not found`},
		{"delete stale", []datastore.Op{
			{Type: datastore.OpDelete, Key: nodeKey("a"), Revision: staleA},
		}, datastore.IsConflict, fmt.Sprintf(`Node "a": resourceVersion %s is stale (current %s)`, staleA, a.ResourceVersion)},
		{"same key twice", []datastore.Op{
			{Type: datastore.OpCreate, Object: node("new", nil)},
			{Type: datastore.OpDelete, Key: nodeKey("new")},
		}, func(err error) bool { return err != nil }, `etcd: commit: Node "new" appears twice`},
		{"invalid object", []datastore.Op{
			{Type: datastore.OpCreate, Object: node("Bad_Name", nil)},
		}, func(err error) bool { return errors.Is(err, resources.ErrInvalid) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.Commit(ctx, tt.ops...)
			if !tt.check(err) {
				t.Fatalf("unexpected error %v", err)
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Fatalf("error %q, want %q", err, tt.msg)
			}
			// Nothing was applied.
			if _, err := d.Get(ctx, nodeKey("new")); !datastore.IsNotFound(err) {
				t.Fatalf("a failed commit created an object: %v", err)
			}
		})
	}
	many := make([]datastore.Op, 129)
	for i := range many {
		many[i] = datastore.Op{Type: datastore.OpCreate, Object: node(fmt.Sprintf("n%d", i), nil)}
	}
	if _, err := d.Commit(ctx, many...); err == nil {
		t.Fatal("129 ops accepted")
	}
}
