package kubernetes_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/test/kubeapi"
)

// fast makes watches notice a broken connection and retry quickly.
var fast = kubernetes.Config{ProbeInterval: 300 * time.Millisecond, BackoffInitial: 20 * time.Millisecond,
	BackoffMax: 300 * time.Millisecond, RequestTimeout: 2 * time.Second}

func TestWatch(t *testing.T) {
	backend.Watch(t, newDatastore(t, kubernetes.Config{}), kubeapi.Datastore(t, kubernetes.Config{}))
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
	datastoretest.Equal(t, datastoretest.Until(t, w, datastore.Synced), "Added a")
	for i, zone := range []string{"1", "2", "3"} {
		time.Sleep(700 * time.Millisecond) // across a few server timeouts
		datastoretest.Relabel(t, d, "a", zone)
		ev := datastoretest.Next(t, w)
		if got := datastoretest.Describe(ev); got != "Modified a zone="+zone {
			t.Fatalf("change %d: %s %v", i, got, ev.Err)
		}
	}
}

// TestWatchResyncAfterExpiry: a watch resumed from a list whose
// resourceVersion the apiserver no longer serves (410 Gone: here older
// than its watch cache, as after an apiserver restart) relists and reports
// the difference, then goes on.
func TestWatchResyncAfterExpiry(t *testing.T) {
	backend.WatchResync(t, newDatastore(t, fast))
}

// viaProxy returns a datastore reaching the shared apiserver through a
// proxy.
func viaProxy(t *testing.T, cfg kubernetes.Config) (*kubernetes.Datastore, *datastoretest.Proxy) {
	t.Helper()
	rc := rest.CopyConfig(kubeapi.Shared(t).Config)
	u, err := url.Parse(rc.Host)
	if err != nil {
		t.Fatal(err)
	}
	px := datastoretest.NewProxy(t, u.Host)
	rc.Host = "https://" + px.Addr()
	cfg.RESTConfig = rc
	return kubeapi.Datastore(t, cfg), px
}

// TestWatchReconnect: the connection to the apiserver is cut; requests
// fail promptly, the watch reports an Error, changes happen meanwhile, and
// once the connection is back the watch relists, reports exactly the
// changes it missed, and goes on.
func TestWatchReconnect(t *testing.T) {
	direct := newDatastore(t, kubernetes.Config{})
	d, px := viaProxy(t, fast)
	backend.WatchReconnect(t, direct, d, px, nil)
}

// TestWatchProbe: the connection goes silent without closing (a
// partition the transport does not notice); the watch's probe fails, the
// watch reports it, and relists once the connection carries data again.
func TestWatchProbe(t *testing.T) {
	direct := newDatastore(t, kubernetes.Config{})
	d, px := viaProxy(t, fast)
	backend.WatchProbe(t, direct, d, px)
}
