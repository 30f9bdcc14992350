package etcd_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
	"github.com/tabbynet/tabby/control/resources"
)

// fast makes watches notice a broken connection and retry quickly.
var fast = etcd.Config{ProbeInterval: 150 * time.Millisecond, BackoffInitial: 20 * time.Millisecond, BackoffMax: 300 * time.Millisecond}

// next returns the next event, failing the test after a timeout.
func next(t *testing.T, w datastore.Watcher) datastore.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatal("events closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	panic("unreachable")
}

// describe formats an object event as "Added n1 zone=a".
func describe(ev datastore.Event) string {
	s := ev.Type.String()
	if ev.Object != nil {
		s += " " + ev.Object.Meta().Name
		if z := ev.Object.Meta().Labels["zone"]; z != "" {
			s += " zone=" + z
		}
	}
	return s
}

// until collects object events up to the next Synced (skipping Error
// events, whose number depends on timing), sorted.
func until(t *testing.T, w datastore.Watcher, typ datastore.EventType) []string {
	t.Helper()
	var out []string
	for {
		ev := next(t, w)
		switch {
		case ev.Type == typ:
			sort.Strings(out)
			return out
		case ev.Type == datastore.Error:
		case ev.Object == nil:
			t.Fatalf("unexpected %s event", ev.Type)
		default:
			if ev.Revision != ev.Object.Meta().ResourceVersion && ev.Type != datastore.Deleted {
				t.Errorf("%s: event revision %s, object %s", describe(ev), ev.Revision, ev.Object.Meta().ResourceVersion)
			}
			out = append(out, describe(ev))
		}
	}
}

func equal(t *testing.T, got []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Fatalf("events\n got: %s\nwant: %s", strings.Join(got, "; "), strings.Join(want, "; "))
	}
}

func mustCreate(t *testing.T, d datastore.Datastore, obj resources.Resource) resources.Resource {
	t.Helper()
	out, err := d.Create(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func relabel(t *testing.T, d datastore.Datastore, name, zone string) {
	t.Helper()
	ctx := context.Background()
	n, err := datastore.Get[*resources.Node](ctx, d, name)
	if err != nil {
		t.Fatal(err)
	}
	n.Labels = map[string]string{"zone": zone}
	if _, err := d.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, d datastore.Datastore, name string) {
	t.Helper()
	if _, err := d.Delete(context.Background(), nodeKey(name), ""); err != nil {
		t.Fatal(err)
	}
}

func TestWatch(t *testing.T) {
	ctx := context.Background()
	d := etcdtest.Datastore(t, etcd.Config{})
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
		got = append(got, describe(next(t, w)))
	}
	if strings.Join(got, "; ") != "Added c; Modified a zone=x; Deleted b" {
		t.Fatalf("events in order: %v", got)
	}
	w.Stop()
	w.Stop()
	if _, ok := <-w.Events(); ok {
		t.Fatal("events open after Stop")
	}

	// Cancelling the context ends a watch too.
	cctx, cancel := context.WithCancel(ctx)
	w, err = d.Watch(cctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	until(t, w, datastore.Synced)
	cancel()
	for range w.Events() {
	}
	if _, err := d.Watch(ctx, "Nope", datastore.WatchOptions{}); err == nil {
		t.Fatal("watch of an unknown kind")
	}
}

// TestWatchResyncAfterCompaction: a watch resumed from a list whose
// revision has been compacted away relists and reports the difference.
func TestWatchResyncAfterCompaction(t *testing.T) {
	ctx := context.Background()
	d := etcdtest.Datastore(t, fast)
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
	rev, err := d.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("list at revision %s, compacted to %d", list.Revision, rev)

	w, err := d.Watch(ctx, resources.KindNode, datastore.WatchOptions{From: list})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if ev := next(t, w); ev.Type != datastore.Synced || ev.Revision != list.Revision {
		t.Fatalf("first event %s at %s, want Synced at %s", ev.Type, ev.Revision, list.Revision)
	}
	ev := next(t, w)
	if ev.Type != datastore.Error || !strings.Contains(ev.Err.Error(), "compacted") {
		t.Fatalf("want an Error event for the compaction, got %s %v", ev.Type, ev.Err)
	}
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

// proxy is a TCP proxy the test can cut, as a network partition between a
// client and etcd.
type proxy struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target}
	p.listen("127.0.0.1:0")
	p.addr = p.ln.Addr().String()
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) listen(addr string) {
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly after a cut
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut closes the listener and every connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() { p.listen(p.addr) }

// TestWatchReconnect: the connection to etcd is cut; requests fail
// promptly, the watch reports an Error, changes and a compaction happen
// meanwhile, and once the connection is back the watch relists, reports
// exactly the changes it missed, and goes on.
func TestWatchReconnect(t *testing.T) {
	ctx := context.Background()
	direct := etcdtest.Datastore(t, etcd.Config{})
	u, err := url.Parse(etcdtest.Server(t).Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, u.Host)
	cfg := fast
	cfg.Endpoints = []string{"http://" + px.addr}
	cfg.Prefix = direct.Prefix()
	cfg.DialTimeout = 500 * time.Millisecond
	viaProxy, err := etcd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer viaProxy.Close()

	mustCreate(t, direct, node("a", nil))
	mustCreate(t, direct, node("b", nil))
	w, err := viaProxy.Watch(ctx, resources.KindNode, datastore.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	equal(t, until(t, w, datastore.Synced), "Added a", "Added b")

	px.cut()
	start := time.Now()
	gctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = viaProxy.Get(gctx, nodeKey("a"))
	cancel()
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("get while cut: %v after %s", err, time.Since(start))
	}
	ev := next(t, w)
	if ev.Type != datastore.Error || !errors.Is(ev.Err, etcd.ErrProbeFailed) {
		t.Fatalf("want an Error event, got %s %v", ev.Type, ev.Err)
	}
	t.Logf("watch reported %v after %s", ev.Err, time.Since(start).Round(time.Millisecond))

	relabel(t, direct, "a", "x")
	remove(t, direct, "b")
	mustCreate(t, direct, node("c", nil))
	if _, err := direct.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a few failed retries
	px.restore()
	equal(t, until(t, w, datastore.Synced), "Modified a zone=x", "Deleted b", "Added c")
	mustCreate(t, direct, node("d", nil))
	if got := describe(next(t, w)); got != "Added d" {
		t.Fatalf("after reconnect: %s", got)
	}
}
