package datastoretest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// Watch checks a watch of Nodes in d (which must hold none): the initial
// list as Added then Synced, another kind not reported, Added, Modified
// and Deleted in order with their revisions; Stop (twice), cancelling
// the context and closing the datastore each end a watch. closing is
// another datastore of the backend, which Watch closes; unknown kinds
// are refused.
func (b Backend) Watch(t *testing.T, d, closing datastore.Datastore) {
	ctx := context.Background()
	MustCreate(t, d, Node("a", nil))
	MustCreate(t, d, Node("b", nil))
	MustCreate(t, d, Pool("p", "10.0.0.0/16")) // another kind: not reported

	w, err := d.Watch(ctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	Equal(t, Until(t, w, datastore.Synced), "Added a", "Added b")
	MustCreate(t, d, Node("c", nil))
	Relabel(t, d, "a", "x")
	Remove(t, d, "b")
	var got []string
	for range 3 {
		ev := Next(t, w)
		CheckRevision(t, ev)
		got = append(got, Describe(ev))
	}
	if strings.Join(got, "; ") != "Added c; Modified a zone=x; Deleted b" {
		t.Fatalf("events in order: %v", got)
	}
	w.Stop()
	w.Stop()
	if _, ok := <-w.Events(); ok {
		t.Fatal("events open after Stop")
	}

	// Cancelling the context ends a watch too, and so does Close.
	cctx, cancel := context.WithCancel(ctx)
	w, err = d.Watch(cctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	Until(t, w, datastore.Synced)
	cancel()
	WaitClosed(t, w)
	w, err = closing.Watch(ctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	Until(t, w, datastore.Synced)
	closing.Close()
	WaitClosed(t, w)
	if _, err := d.Watch(ctx, "Nope", datastore.WatchOptions{}); err == nil {
		t.Fatal("watch of an unknown kind")
	}
}

// WatchResync checks a watch resumed from a list whose revision the
// backend no longer serves (b.Expire): it reports Synced at that
// revision, an Error that says so (b.IsExpired), relists, reports exactly
// the difference, Synced, and goes on. A watch from a list that is still
// served then reports only the changes since. d must hold no Node and
// retry quickly.
func (b Backend) WatchResync(t *testing.T, d datastore.Datastore) {
	ctx := context.Background()
	MustCreate(t, d, Node("keep", nil))
	MustCreate(t, d, Node("change", nil))
	MustCreate(t, d, Node("gone", nil))
	list, err := d.List(ctx, resources.KindNode)
	if err != nil {
		t.Fatal(err)
	}
	Relabel(t, d, "change", "new")
	Remove(t, d, "gone")
	MustCreate(t, d, Node("new", nil))
	from := b.Expire(t, d, list)
	t.Logf("list at revision %s, watched from %s", list.Revision, from.Revision)

	w, err := d.Watch(ctx, resources.KindNode, datastore.WatchOptions{From: from})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if ev := Next(t, w); ev.Type != datastore.Synced || ev.Revision != from.Revision {
		t.Fatalf("first event %s at %s, want Synced at %s", ev.Type, ev.Revision, from.Revision)
	}
	ev := Next(t, w)
	if ev.Type != datastore.Error || !b.IsExpired(ev.Err) {
		t.Fatalf("want an Error event for the expired revision, got %s %v", ev.Type, ev.Err)
	}
	t.Logf("error event: %v", ev.Err)
	Equal(t, Until(t, w, datastore.Synced), "Modified change zone=new", "Deleted gone", "Added new")
	// And the watch goes on.
	Relabel(t, d, "keep", "k")
	if got := Describe(Next(t, w)); got != "Modified keep zone=k" {
		t.Fatalf("after resync: %s", got)
	}

	// A watch from a list that is still available reports only changes.
	list, err = d.List(ctx, resources.KindNode)
	if err != nil {
		t.Fatal(err)
	}
	Remove(t, d, "keep")
	w2, err := d.Watch(ctx, resources.KindNode, datastore.WatchOptions{From: list})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	Equal(t, Until(t, w2, datastore.Synced))
	if got := Describe(Next(t, w2)); got != "Deleted keep zone=k" {
		t.Fatalf("from a list: %s", got)
	}
}

// WatchReconnect checks a watch through px: direct reaches the datastore
// without it (and must hold no Node), via through it (and retries
// quickly). The connection is cut; a request fails promptly, the watch
// reports an Error (b.IsCutError), changes are made meanwhile and then
// whileCut (if not nil) runs; once the connection is back the watch
// relists, reports exactly the changes it missed, and goes on.
func (b Backend) WatchReconnect(t *testing.T, direct, via datastore.Datastore, px *Proxy, whileCut func()) {
	ctx := context.Background()
	MustCreate(t, direct, Node("a", nil))
	MustCreate(t, direct, Node("b", nil))
	w, err := via.Watch(ctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	Equal(t, Until(t, w, datastore.Synced), "Added a", "Added b")

	px.Cut()
	start := time.Now()
	gctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = via.Get(gctx, NodeKey("a"))
	cancel()
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("get while cut: %v after %s", err, time.Since(start))
	}
	ev := Next(t, w)
	if ev.Type != datastore.Error || (b.IsCutError != nil && !b.IsCutError(ev.Err)) {
		t.Fatalf("want an Error event, got %s %v", Describe(ev), ev.Err)
	}
	t.Logf("watch reported %v after %s", ev.Err, time.Since(start).Round(time.Millisecond))

	Relabel(t, direct, "a", "x")
	Remove(t, direct, "b")
	MustCreate(t, direct, Node("c", nil))
	if whileCut != nil {
		whileCut()
	}
	time.Sleep(300 * time.Millisecond) // a few failed retries
	px.Restore()
	Equal(t, Until(t, w, datastore.Synced), "Modified a zone=x", "Deleted b", "Added c")
	MustCreate(t, direct, Node("d", nil))
	if got := Describe(Next(t, w)); got != "Added d" {
		t.Fatalf("after reconnect: %s", got)
	}
}

// WatchProbe checks a watch through px (direct and via as for
// WatchReconnect) whose connection goes silent without closing, a
// partition the transport does not notice: the watch's probe fails
// (b.IsProbeFailed), the watch reports it, and it relists once the
// connection carries data again.
func (b Backend) WatchProbe(t *testing.T, direct, via datastore.Datastore, px *Proxy) {
	ctx := context.Background()
	MustCreate(t, direct, Node("a", nil))
	w, err := via.Watch(ctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	Equal(t, Until(t, w, datastore.Synced), "Added a")

	px.Freeze()
	start := time.Now()
	ev := Next(t, w)
	if ev.Type != datastore.Error || !b.IsProbeFailed(ev.Err) {
		t.Fatalf("want an Error event from the probe, got %s %v", Describe(ev), ev.Err)
	}
	t.Logf("watch reported %v after %s", ev.Err, time.Since(start).Round(time.Millisecond))
	Relabel(t, direct, "a", "x")
	MustCreate(t, direct, Node("b", nil))
	px.Unfreeze()
	Equal(t, Until(t, w, datastore.Synced), "Modified a zone=x", "Added b")
	Remove(t, direct, "a")
	if got := Describe(Next(t, w)); got != "Deleted a zone=x" {
		t.Fatalf("after the partition: %s", got)
	}
}
