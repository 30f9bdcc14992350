package kubernetes_test

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/test/kubeapi"
)

func TestMain(m *testing.M) { kubeapi.Main(m) }

// newDatastore returns a datastore on the shared apiserver, after
// deleting every object of the kinds the tests use (they share one
// apiserver, one test at a time).
func newDatastore(t *testing.T, cfg kubernetes.Config) *kubernetes.Datastore {
	t.Helper()
	d := kubeapi.Datastore(t, cfg)
	purge(t, d)
	return d
}

// purge deletes every object of every kind.
func purge(t *testing.T, d datastore.Datastore) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, info := range resources.Kinds() {
		keys, err := d.ListKeys(ctx, info.Kind)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if _, err := d.Delete(ctx, k, ""); err != nil && !datastore.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
}

func pool(name, cidr string) *resources.IPPool {
	return &resources.IPPool{ObjectMeta: resources.ObjectMeta{Name: name}, Spec: resources.IPPoolSpec{CIDR: cidr}}
}

func node(name string, labels map[string]string) *resources.Node {
	return &resources.Node{ObjectMeta: resources.ObjectMeta{Name: name, Labels: labels}}
}

func nodeKey(name string) resources.Key { return resources.Key{Kind: resources.KindNode, Name: name} }

// next returns the next event, failing the test after a timeout.
func next(t *testing.T, w datastore.Watcher) datastore.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatal("events closed")
		}
		return ev
	case <-time.After(15 * time.Second):
		t.Fatal("no event within 15s")
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

// until collects object events up to the next event of type typ
// (skipping Error events, whose number depends on timing), sorted.
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
			t.Logf("error event: %v", ev.Err)
		case ev.Object == nil:
			t.Fatalf("unexpected %s event", ev.Type)
		default:
			if ev.Revision != ev.Object.Meta().ResourceVersion {
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

func netipPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func timeout() <-chan time.Time { return time.After(15 * time.Second) }
