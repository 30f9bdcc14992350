package kubernetes_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/test/kubeapi"
)

// fast makes watches notice a broken connection and retry quickly.
var fast = kubernetes.Config{ProbeInterval: 300 * time.Millisecond, BackoffInitial: 20 * time.Millisecond,
	BackoffMax: 300 * time.Millisecond, RequestTimeout: 2 * time.Second}

func TestWatch(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, kubernetes.Config{})
	mustCreate(t, d, node("a", nil))
	mustCreate(t, d, node("b", nil))
	mustCreate(t, d, pool("p", "10.0.0.0/16")) // another kind: not reported

	w, err := d.Watch(ctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, until(t, w, datastore.Synced), "Added a", "Added b")
	mustCreate(t, d, node("c", nil))
	relabel(t, d, "a", "x")
	remove(t, d, "b")
	var got []string
	for range 3 {
		ev := next(t, w)
		if ev.Type != datastore.Deleted && ev.Revision != ev.Object.Meta().ResourceVersion {
			t.Errorf("%s: revision %s, object %s", describe(ev), ev.Revision, ev.Object.Meta().ResourceVersion)
		}
		got = append(got, describe(ev))
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
	until(t, w, datastore.Synced)
	cancel()
	for range w.Events() {
	}
	d2 := kubeapi.Datastore(t, kubernetes.Config{})
	w, err = d2.Watch(ctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	until(t, w, datastore.Synced)
	d2.Close()
	for range w.Events() {
	}
	if _, err := d.Watch(ctx, "Nope", datastore.WatchOptions{}); err == nil {
		t.Fatal("watch of an unknown kind")
	}
}

// TestWatchServerTimeout: watches the apiserver ends (its timeout) resume
// from the last version without a relist or an Error event.
func TestWatchServerTimeout(t *testing.T) {
	cfg := fast
	cfg.WatchTimeout = time.Second
	d := newDatastore(t, cfg)
	mustCreate(t, d, node("a", nil))
	w, err := d.Watch(context.Background(), resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	equal(t, until(t, w, datastore.Synced), "Added a")
	for i, zone := range []string{"1", "2", "3"} {
		time.Sleep(700 * time.Millisecond) // across a few server timeouts
		relabel(t, d, "a", zone)
		ev := next(t, w)
		if got := describe(ev); got != "Modified a zone="+zone {
			t.Fatalf("change %d: %s %v", i, got, ev.Err)
		}
	}
}

// TestWatchResyncAfterExpiry: a watch resumed from a list whose
// resourceVersion the apiserver no longer serves (410 Gone: here older
// than its watch cache, as after an apiserver restart) relists and reports
// the difference, then goes on.
func TestWatchResyncAfterExpiry(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, fast)
	mustCreate(t, d, node("keep", nil))
	mustCreate(t, d, node("change", nil))
	mustCreate(t, d, node("gone", nil))
	list, err := d.List(ctx, resources.KindNode)
	if err != nil {
		t.Fatal(err)
	}
	relabel(t, d, "change", "new")
	remove(t, d, "gone")
	mustCreate(t, d, node("new", nil))
	expired := *list
	expired.Revision = "1"

	w, err := d.Watch(ctx, resources.KindNode, datastore.WatchOptions{From: &expired})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if ev := next(t, w); ev.Type != datastore.Synced || ev.Revision != "1" {
		t.Fatalf("first event %s at %s, want Synced at 1", ev.Type, ev.Revision)
	}
	ev := next(t, w)
	if ev.Type != datastore.Error || !errors.Is(ev.Err, kubernetes.ErrExpired) {
		t.Fatalf("want an Error event for the expired version, got %s %v", ev.Type, ev.Err)
	}
	t.Logf("error event: %v", ev.Err)
	equal(t, until(t, w, datastore.Synced), "Modified change zone=new", "Deleted gone", "Added new")
	// And the watch goes on.
	relabel(t, d, "keep", "k")
	if got := describe(next(t, w)); got != "Modified keep zone=k" {
		t.Fatalf("after resync: %s", got)
	}

	// A watch from a list that is still available reports only changes.
	list, err = d.List(ctx, resources.KindNode)
	if err != nil {
		t.Fatal(err)
	}
	remove(t, d, "keep")
	w2, err := d.Watch(ctx, resources.KindNode, datastore.WatchOptions{From: list})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	equal(t, until(t, w2, datastore.Synced))
	if got := describe(next(t, w2)); got != "Deleted keep zone=k" {
		t.Fatalf("from a list: %s", got)
	}
}

// viaProxy returns a datastore reaching the shared apiserver through a
// proxy.
func viaProxy(t *testing.T, cfg kubernetes.Config) (*kubernetes.Datastore, *kubeapi.Proxy) {
	t.Helper()
	rc := rest.CopyConfig(kubeapi.Shared(t).Config)
	u, err := url.Parse(rc.Host)
	if err != nil {
		t.Fatal(err)
	}
	px := kubeapi.NewProxy(t, u.Host)
	rc.Host = "https://" + px.Addr()
	cfg.RESTConfig = rc
	return kubeapi.Datastore(t, cfg), px
}

// TestWatchReconnect: the connection to the apiserver is cut; requests
// fail promptly, the watch reports an Error, changes happen meanwhile, and
// once the connection is back the watch relists, reports exactly the
// changes it missed, and goes on.
func TestWatchReconnect(t *testing.T) {
	ctx := context.Background()
	direct := newDatastore(t, kubernetes.Config{})
	d, px := viaProxy(t, fast)

	mustCreate(t, direct, node("a", nil))
	mustCreate(t, direct, node("b", nil))
	w, err := d.Watch(ctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	equal(t, until(t, w, datastore.Synced), "Added a", "Added b")

	px.Cut()
	start := time.Now()
	gctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = d.Get(gctx, nodeKey("a"))
	cancel()
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("get while cut: %v after %s", err, time.Since(start))
	}
	ev := next(t, w)
	if ev.Type != datastore.Error {
		t.Fatalf("want an Error event, got %s", describe(ev))
	}
	t.Logf("watch reported %v after %s", ev.Err, time.Since(start).Round(time.Millisecond))

	relabel(t, direct, "a", "x")
	remove(t, direct, "b")
	mustCreate(t, direct, node("c", nil))
	time.Sleep(300 * time.Millisecond) // a few failed retries
	px.Restore()
	equal(t, until(t, w, datastore.Synced), "Modified a zone=x", "Deleted b", "Added c")
	mustCreate(t, direct, node("d", nil))
	if got := describe(next(t, w)); got != "Added d" {
		t.Fatalf("after reconnect: %s", got)
	}
}

// TestWatchProbe: the connection goes silent without closing (a
// partition the transport does not notice); the watch's probe fails, the
// watch reports it, and relists once the connection carries data again.
func TestWatchProbe(t *testing.T) {
	ctx := context.Background()
	direct := newDatastore(t, kubernetes.Config{})
	d, px := viaProxy(t, fast)
	mustCreate(t, direct, node("a", nil))
	w, err := d.Watch(ctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	equal(t, until(t, w, datastore.Synced), "Added a")

	px.Freeze()
	start := time.Now()
	ev := next(t, w)
	if ev.Type != datastore.Error || !errors.Is(ev.Err, kubernetes.ErrProbeFailed) {
		t.Fatalf("want an Error event from the probe, got %s %v", describe(ev), ev.Err)
	}
	t.Logf("watch reported %v after %s", ev.Err, time.Since(start).Round(time.Millisecond))
	relabel(t, direct, "a", "x")
	mustCreate(t, direct, node("b", nil))
	px.Unfreeze()
	equal(t, until(t, w, datastore.Synced), "Modified a zone=x", "Added b")
	remove(t, direct, "a")
	if got := describe(next(t, w)); got != "Deleted a zone=x" {
		t.Fatalf("after the partition: %s", got)
	}
}
