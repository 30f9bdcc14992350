package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/resources"
)

var nodesGVR = schema.GroupVersionResource{Group: resources.Group, Version: resources.Version, Resource: "nodes"}

func crNode(name, rv string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": resources.APIVersion, "kind": "Node",
		"metadata": map[string]any{"name": name, "resourceVersion": rv}, "spec": map[string]any{}}}
	return u
}

// watchScript answers the watcher's watch requests in turn and records
// the resourceVersion each asked for.
type watchScript struct {
	mu    sync.Mutex
	steps []func() (watch.Interface, error)
	asked []string
}

func (s *watchScript) react(action clienttesting.Action) (bool, watch.Interface, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, action.(clienttesting.WatchActionImpl).WatchRestrictions.ResourceVersion)
	if len(s.steps) == 0 {
		return true, watch.NewFake(), nil // hangs until the test ends
	}
	step := s.steps[0]
	s.steps = s.steps[1:]
	w, err := step()
	return true, w, err
}

func (s *watchScript) versions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

func show(ev datastore.Event) string {
	switch {
	case ev.Object != nil:
		return fmt.Sprintf("%s %s@%s", ev.Type, ev.Object.Meta().Name, ev.Revision)
	case ev.Err != nil:
		return fmt.Sprintf("%s %v", ev.Type, errors.Is(ev.Err, ErrExpired))
	}
	return fmt.Sprintf("%s@%s", ev.Type, ev.Revision)
}

// expect reads len(want) events; runs of object events may come in any
// order (a relist reports in map order).
func expect(t *testing.T, w datastore.Watcher, want ...string) {
	t.Helper()
	var got []string
	for range want {
		got = append(got, show(datastoretest.Next(t, w)))
	}
	norm := func(s []string) string {
		var out, run []string
		flush := func() { sort.Strings(run); out = append(out, run...); run = nil }
		for _, e := range s {
			if strings.HasPrefix(e, "Added") || strings.HasPrefix(e, "Modified") || strings.HasPrefix(e, "Deleted") {
				run = append(run, e)
				continue
			}
			flush()
			out = append(out, e)
		}
		flush()
		return strings.Join(out, "; ")
	}
	if norm(got) != norm(want) {
		t.Fatalf("events\n got: %s\nwant: %s", norm(got), norm(want))
	}
}

// TestWatcherScript drives the watcher through a scripted apiserver:
// an expired version, changes, duplicates, bookmarks, a server-side end
// of the watch, an ERROR event mid-stream.
func TestWatcherScript(t *testing.T) {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{nodesGVR: "NodeList"}, crNode("a", "10"), crNode("b", "11"))
	stream := watch.NewFakeWithChanSize(16, false)
	second := watch.NewFakeWithChanSize(4, false)
	script := &watchScript{steps: []func() (watch.Interface, error){
		func() (watch.Interface, error) {
			return nil, apierrors.NewResourceExpired("too old resource version: 12 (40)")
		},
		func() (watch.Interface, error) { return stream, nil },
		func() (watch.Interface, error) { return second, nil },
	}}
	dyn.PrependWatchReactor("nodes", script.react)
	cfg := Config{ProbeInterval: -1, BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond}
	cfg.setDefaults()
	d := newDatastore(cfg, nil, dyn, nil, nil)
	defer d.Close()

	a := &resources.Node{ObjectMeta: resources.ObjectMeta{Name: "a", ResourceVersion: "10"}}
	c := &resources.Node{ObjectMeta: resources.ObjectMeta{Name: "c", ResourceVersion: "5"}}
	w, err := d.Watch(context.Background(), resources.KindNode, datastore.WatchOptions{From: &datastore.List{Items: []resources.Resource{a, c}, Revision: "12"}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// The list's version expired: relist, report the difference (a is
	// unchanged, b is new, c is gone).
	expect(t, w, "Synced@12", "Error true", "Added b@11", "Deleted c@", "Synced@")

	stream.Add(crNode("x", "20"))
	stream.Modify(crNode("a", "21"))
	stream.Modify(crNode("a", "21")) // a duplicate: not reported
	stream.Action(watch.Bookmark, crNode("", "30"))
	stream.Delete(crNode("b", "31"))
	stream.Delete(crNode("z", "32")) // never reported: not reported
	expect(t, w, "Added x@20", "Modified a@21", "Deleted b@31")
	// The server ends the watch: it resumes from the last version, with
	// neither an Error nor a relist.
	stream.Stop()
	// The resumed watch fails with 410 in the stream: relist. (The fake
	// store still holds a@10 and b@11: the scripted events never reached
	// it.)
	second.Action(watch.Error, &apierrors.NewGone("gone").ErrStatus)
	expect(t, w, "Error true", "Added b@11", "Modified a@10", "Deleted x@", "Synced@")
	// Watches started from: the list given, the relist (the fake lists at
	// no version), the last event (a deletion of an object never reported
	// still advances the version), the second relist.
	deadline := time.Now().Add(5 * time.Second)
	for len(script.versions()) < 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := strings.Join(script.versions(), ","); got != "12,,32," {
		t.Fatalf("watches asked for versions %s", got)
	}
}
