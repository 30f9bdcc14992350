package etcd_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
)

// fast makes watches notice a broken connection and retry quickly.
var fast = etcd.Config{ProbeInterval: 150 * time.Millisecond, BackoffInitial: 20 * time.Millisecond, BackoffMax: 300 * time.Millisecond}

func TestWatch(t *testing.T) {
	backend.Watch(t, etcdtest.Datastore(t, etcd.Config{}), etcdtest.Datastore(t, etcd.Config{}))
}

// TestWatchResyncAfterCompaction: a watch resumed from a list whose
// revision has been compacted away relists and reports the difference.
func TestWatchResyncAfterCompaction(t *testing.T) {
	backend.WatchResync(t, etcdtest.Datastore(t, fast))
}

// viaProxy returns a datastore on the shared server, with direct's
// prefix, reaching it through a proxy.
func viaProxy(t *testing.T, direct *etcd.Datastore) (*etcd.Datastore, *datastoretest.Proxy) {
	t.Helper()
	u, err := url.Parse(etcdtest.Server(t).Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	px := datastoretest.NewProxy(t, u.Host)
	cfg := fast
	cfg.Endpoints = []string{"http://" + px.Addr()}
	cfg.Prefix = direct.Prefix()
	cfg.DialTimeout = 500 * time.Millisecond
	d, err := etcd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, px
}

// TestWatchReconnect: the connection to etcd is cut; requests fail
// promptly, the watch reports an Error, changes and a compaction happen
// meanwhile, and once the connection is back the watch relists, reports
// exactly the changes it missed, and goes on.
func TestWatchReconnect(t *testing.T) {
	direct := etcdtest.Datastore(t, etcd.Config{})
	d, px := viaProxy(t, direct)
	backend.WatchReconnect(t, direct, d, px, func() { compact(t, direct) })
}

// TestWatchProbe: the connection goes silent without closing; the watch's
// probe fails, the watch reports it, and relists once the connection
// carries data again.
func TestWatchProbe(t *testing.T) {
	direct := etcdtest.Datastore(t, etcd.Config{})
	d, px := viaProxy(t, direct)
	backend.WatchProbe(t, direct, d, px)
}
