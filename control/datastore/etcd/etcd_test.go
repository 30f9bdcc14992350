package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
	"github.com/tabbynet/tabby/control/resources"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// Shorthands for the shared helpers, used by the etcd-only tests.
var (
	node    = datastoretest.Node
	nodeKey = datastoretest.NodeKey
)

// backend is what the shared contract tests need to know about etcd.
var backend = datastoretest.Backend{
	Name:                "etcd",
	InvalidVersionError: `etcd: Node "n1": invalid resourceVersion "abc"`,
	// A revision expires when etcd compacts it away.
	Expire: func(t *testing.T, d datastore.Datastore, list *datastore.List) *datastore.List {
		compact(t, d)
		return list
	},
	IsExpired:     func(err error) bool { return strings.Contains(err.Error(), "compacted") },
	IsProbeFailed: func(err error) bool { return errors.Is(err, etcd.ErrProbeFailed) },
	// The client retries a closed connection quietly; the probe notices.
	IsCutError: func(err error) bool { return errors.Is(err, etcd.ErrProbeFailed) },
}

// compact removes the history of d's cluster up to now.
func compact(t *testing.T, d datastore.Datastore) {
	t.Helper()
	rev, err := d.(*etcd.Datastore).Compact(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted to %d", rev)
}

// TestCRUD: the shared contract, and a datastore under another prefix
// does not see this one's objects.
func TestCRUD(t *testing.T) {
	d := etcdtest.Datastore(t, etcd.Config{})
	datastoretest.CRUD(t, d)
	if l, err := d.List(context.Background(), resources.KindNode); err != nil || len(l.Items) != 1 {
		t.Fatalf("own prefix lists %v, %v", l, err)
	}
	other := etcdtest.Datastore(t, etcd.Config{})
	if l, err := other.List(context.Background(), resources.KindNode); err != nil || len(l.Items) != 0 {
		t.Fatalf("other prefix lists %v, %v", l, err)
	}
}

func TestErrors(t *testing.T) {
	backend.Errors(t, etcdtest.Datastore(t, etcd.Config{}))
}

// TestCASConcurrent: goroutines increment one counter by read-modify-write
// with compare-and-swap; no increment may be lost.
func TestCASConcurrent(t *testing.T) {
	d := etcdtest.Datastore(t, etcd.Config{})
	datastoretest.CASConcurrent(t, d)
}

// TestUnreachable: requests to an endpoint nobody listens on, or one that
// never answers, fail within their deadline, or the default request
// timeout.
func TestUnreachable(t *testing.T) {
	datastoretest.Unreachable(t, func(t *testing.T, addr string) datastore.Datastore {
		d, err := etcd.New(etcd.Config{Endpoints: []string{"http://" + addr},
			RequestTimeout: 300 * time.Millisecond, DialTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	})
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
