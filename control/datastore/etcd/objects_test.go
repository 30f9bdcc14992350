package etcd_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
	"github.com/tabbynet/tabby/control/resources"
)

// The kinds of these tests: Objects neither parses nor validates
// documents, so any kind and any bytes do.
const (
	kindWidget resources.Kind = "Widget"
	kindGadget resources.Kind = "Gadget"
)

func widgets(d *etcd.Datastore) *etcd.Objects { return d.Objects(kindWidget, "widgets", false) }

func widgetKey(name string) resources.Key { return resources.Key{Kind: kindWidget, Name: name} }

// widget is the document of widget name at version v.
func widget(name string, v int) []byte { return fmt.Appendf(nil, `{"name":%q,"v":%d}`, name, v) }

// describe formats an object event as "Added a v=1", another as its type.
func describe(ev etcd.ObjectEvent) string {
	if ev.Object == nil {
		return ev.Type.String()
	}
	s := strings.NewReplacer(`{"name":"`, "", `","v":`, " v=", "}", "").Replace(string(ev.Object))
	return ev.Type.String() + " " + s
}

// untilObjects collects w's object events, described and sorted, up to
// the next event of type typ; Error events are logged and skipped, and
// every object event must carry a revision.
func untilObjects(t *testing.T, w etcd.ObjectWatcher, typ datastore.EventType) []string {
	t.Helper()
	var out []string
	for {
		ev := datastoretest.Receive(t, w.Events())
		switch {
		case ev.Type == typ:
			slices.Sort(out)
			return out
		case ev.Type == datastore.Error:
			t.Logf("error event: %v", ev.Err)
		case ev.Object == nil:
			t.Fatalf("unexpected %s event", ev.Type)
		default:
			if ev.Revision == "" {
				t.Errorf("%s: no revision", describe(ev))
			}
			out = append(out, describe(ev))
		}
	}
}

// waitObjectsClosed reads w's events until w closes them.
func waitObjectsClosed(t *testing.T, w etcd.ObjectWatcher) {
	t.Helper()
	for {
		select {
		case _, ok := <-w.Events():
			if !ok {
				return
			}
		case <-time.After(datastoretest.EventTimeout):
			t.Fatal("events still open")
		}
	}
}

func revision(t *testing.T, s string) int64 {
	t.Helper()
	rev, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("revision %q: %v", s, err)
	}
	return rev
}

func mustCreateWidget(t *testing.T, o *etcd.Objects, name string, v int) string {
	t.Helper()
	rev, err := o.Create(context.Background(), widgetKey(name), widget(name, v))
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func mustUpdateWidget(t *testing.T, o *etcd.Objects, name string, v int) string {
	t.Helper()
	ctx := context.Background()
	cur, err := o.Get(ctx, widgetKey(name))
	if err != nil {
		t.Fatal(err)
	}
	rev, err := o.Update(ctx, widgetKey(name), widget(name, v), cur.Revision)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func mustDeleteWidget(t *testing.T, o *etcd.Objects, name string) {
	t.Helper()
	if _, err := o.Delete(context.Background(), widgetKey(name), ""); err != nil {
		t.Fatal(err)
	}
}

// TestObjects: documents stored with the Datastore's compare-and-swap and
// typed errors, as written, apart from other kinds and prefixes.
func TestObjects(t *testing.T) {
	ctx := context.Background()
	d := etcdtest.Datastore(t, etcd.Config{})
	o := widgets(d)

	rev := mustCreateWidget(t, o, "a", 1)
	if _, err := o.Create(ctx, widgetKey("a"), widget("a", 9)); !datastore.IsAlreadyExists(err) {
		t.Fatalf("create twice: %v", err)
	}
	doc, err := o.Get(ctx, widgetKey("a"))
	if err != nil || string(doc.Value) != string(widget("a", 1)) || doc.Revision != rev {
		t.Fatalf("get: %s at %s, %v; want %s at %s", doc.Value, doc.Revision, err, widget("a", 1), rev)
	}

	// Compare-and-swap on the revision.
	rev2, err := o.Update(ctx, widgetKey("a"), widget("a", 2), rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Update(ctx, widgetKey("a"), widget("a", 3), rev); !datastore.IsConflict(err) {
		t.Fatalf("update at a stale revision: %v", err)
	}
	if _, err := o.Update(ctx, widgetKey("nope"), widget("nope", 1), rev); !datastore.IsNotFound(err) {
		t.Fatalf("update of a missing object: %v", err)
	}
	if _, err := o.Update(ctx, widgetKey("a"), widget("a", 3), ""); err == nil {
		t.Fatal("update without a revision")
	}
	if _, err := o.Update(ctx, widgetKey("a"), widget("a", 3), "abc"); err == nil || !strings.Contains(err.Error(), `invalid resourceVersion "abc"`) {
		t.Fatalf("update at a malformed revision: %v", err)
	}
	if _, err := o.Delete(ctx, widgetKey("a"), rev); !datastore.IsConflict(err) {
		t.Fatalf("delete at a stale revision: %v", err)
	}
	mustCreateWidget(t, o, "b", 1)
	list, err := o.List(ctx)
	if err != nil || len(list.Items) != 2 || list.Revision == "" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if got := list.Items[0]; string(got.Value) != string(widget("a", 2)) || got.Revision != rev2 {
		t.Errorf("listed %s at %s, want %s at %s", got.Value, got.Revision, widget("a", 2), rev2)
	}
	last, err := o.Delete(ctx, widgetKey("a"), rev2)
	if err != nil || string(last.Value) != string(widget("a", 2)) || last.Revision != rev2 {
		t.Fatalf("delete returned %s at %s, %v", last.Value, last.Revision, err)
	}
	if _, err := o.Delete(ctx, widgetKey("a"), ""); !datastore.IsNotFound(err) {
		t.Fatalf("delete twice: %v", err)
	}
	if _, err := o.Get(ctx, widgetKey("a")); !datastore.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}

	// Keys: the store's kind only, names without slashes, a namespace for
	// a namespaced kind (and none in a cluster-scoped kind's key).
	if _, err := o.Get(ctx, resources.Key{Kind: kindGadget, Name: "b"}); err == nil {
		t.Error("got a Gadget from the Widget store")
	}
	if _, err := o.Create(ctx, widgetKey("x/y"), widget("x", 1)); err == nil {
		t.Error("created a name with a slash")
	}
	if _, err := o.Get(ctx, resources.Key{Kind: kindWidget, Namespace: "ns", Name: "b"}); err != nil {
		t.Errorf("cluster-scoped get with a namespace: %v", err)
	}
	gadgets := d.Objects(kindGadget, "gadgets", true)
	if _, err := gadgets.Create(ctx, resources.Key{Kind: kindGadget, Name: "g"}, []byte("{}")); err == nil {
		t.Error("created a namespaced object without a namespace")
	}
	gk := resources.Key{Kind: kindGadget, Namespace: "ns", Name: "b"}
	if _, err := gadgets.Create(ctx, gk, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// Other kinds, resources' own kinds and other prefixes are apart.
	if l, err := gadgets.List(ctx); err != nil || len(l.Items) != 1 {
		t.Errorf("gadgets: %+v, %v", l, err)
	}
	if l, err := d.List(ctx, resources.KindNode); err != nil || len(l.Items) != 0 {
		t.Errorf("nodes: %+v, %v", l, err)
	}
	if l, err := widgets(etcdtest.Datastore(t, etcd.Config{})).List(ctx); err != nil || len(l.Items) != 0 {
		t.Errorf("another prefix lists %+v, %v", l, err)
	}
}

// TestObjectsWatch: the initial list as Added then Synced, changes in
// order at their revisions, another kind not reported; Stop (twice),
// cancelling the context and closing the datastore each end a watch.
func TestObjectsWatch(t *testing.T) {
	ctx := context.Background()
	d := etcdtest.Datastore(t, etcd.Config{})
	o := widgets(d)
	mustCreateWidget(t, o, "a", 1)
	mustCreateWidget(t, o, "b", 1)
	w := o.Watch(ctx)
	datastoretest.Equal(t, untilObjects(t, w, datastore.Synced), "Added a v=1", "Added b v=1")

	if _, err := d.Objects(kindGadget, "gadgets", false).Create(ctx, resources.Key{Kind: kindGadget, Name: "g"}, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		desc string
		rev  string
	}{
		{"Added c v=1", mustCreateWidget(t, o, "c", 1)},
		{"Modified a v=2", mustUpdateWidget(t, o, "a", 2)},
	}
	mustDeleteWidget(t, o, "b")
	for _, wt := range want {
		ev := datastoretest.Receive(t, w.Events())
		if describe(ev) != wt.desc || ev.Revision != wt.rev {
			t.Fatalf("event %s at %s, want %s at %s", describe(ev), ev.Revision, wt.desc, wt.rev)
		}
	}
	// A deletion is reported with the last document, at the deletion's
	// revision.
	ev := datastoretest.Receive(t, w.Events())
	if describe(ev) != "Deleted b v=1" || revision(t, ev.Revision) <= revision(t, want[1].rev) {
		t.Fatalf("event %s at %s", describe(ev), ev.Revision)
	}
	w.Stop()
	w.Stop()
	if _, ok := <-w.Events(); ok {
		t.Fatal("events open after Stop")
	}

	cctx, cancel := context.WithCancel(ctx)
	w = o.Watch(cctx)
	untilObjects(t, w, datastore.Synced)
	cancel()
	waitObjectsClosed(t, w)

	closing := etcdtest.Datastore(t, etcd.Config{Prefix: d.Prefix()})
	w = widgets(closing).Watch(ctx)
	datastoretest.Equal(t, untilObjects(t, w, datastore.Synced), "Added a v=2", "Added c v=1")
	closing.Close()
	waitObjectsClosed(t, w)
}

// TestObjectsWatchResync: the connection is cut and the watch's probe
// reports it; the objects change and etcd compacts its history meanwhile;
// once the connection is back the watch relists, reports exactly the
// changes it missed, Synced, and goes on.
func TestObjectsWatchResync(t *testing.T) {
	direct := etcdtest.Datastore(t, etcd.Config{})
	via, px := viaProxy(t, direct)
	o := widgets(direct)
	mustCreateWidget(t, o, "keep", 1)
	mustCreateWidget(t, o, "change", 1)
	mustCreateWidget(t, o, "gone", 1)
	w := widgets(via).Watch(context.Background())
	defer w.Stop()
	datastoretest.Equal(t, untilObjects(t, w, datastore.Synced), "Added change v=1", "Added gone v=1", "Added keep v=1")

	px.Cut()
	ev := datastoretest.Receive(t, w.Events())
	if ev.Type != datastore.Error || !backend.IsCutError(ev.Err) {
		t.Fatalf("want an Error event, got %s %v", describe(ev), ev.Err)
	}
	t.Logf("error event: %v", ev.Err)
	mustUpdateWidget(t, o, "change", 2)
	mustDeleteWidget(t, o, "gone")
	mustCreateWidget(t, o, "new", 1)
	compact(t, direct)
	time.Sleep(300 * time.Millisecond) // a few failed retries
	px.Restore()
	datastoretest.Equal(t, untilObjects(t, w, datastore.Synced), "Deleted gone v=1", "Modified change v=2", "Added new v=1")
	rev := mustUpdateWidget(t, o, "keep", 2)
	if ev := datastoretest.Receive(t, w.Events()); describe(ev) != "Modified keep v=2" || ev.Revision != rev {
		t.Fatalf("after the resync: %s at %s", describe(ev), ev.Revision)
	}
}
