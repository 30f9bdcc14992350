package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/test/kubeapi"
)

// objectStore returns the agent's object store on the shared apiserver
// (through rc when set), after purging what earlier tests left.
func objectStore(t *testing.T, rc *rest.Config, cfg kubernetes.Config) (*agent.KubernetesObjects, *agent.Store) {
	t.Helper()
	direct := kubeapi.Datastore(t, kubernetes.Config{})
	e := &env{t: t, kds: direct, store: &agent.Store{DS: direct, Objects: agent.NewKubernetesObjects(direct)}}
	e.purge()
	cfg.RESTConfig = rc
	kds := kubeapi.Datastore(t, cfg)
	objs := agent.NewKubernetesObjects(kds)
	return objs, &agent.Store{DS: kds, Objects: objs}
}

func gnp(name, selector string) *agent.GlobalNetworkPolicy {
	return &agent.GlobalNetworkPolicy{ObjectMeta: resources.ObjectMeta{Name: name},
		Spec: agent.PolicySpec{Selector: selector, Ingress: []agent.Rule{{Action: "Allow"}}}}
}

// TestKubernetesObjects: the agent's ObjectStore on the apiserver keeps
// the contract of the etcd one: defaults and validation before writes,
// the apiserver's resourceVersion, typed NotFound / AlreadyExists /
// Conflict errors, compare-and-swap Update and Delete, lists; the
// WorkloadEndpoint kind is refused (pods are the endpoints) and so are
// kinds that are not the agent's.
func TestKubernetesObjects(t *testing.T) {
	ctx := context.Background()
	objs, _ := objectStore(t, nil, kubernetes.Config{})
	key := resources.Key{Kind: agent.KindGlobalNetworkPolicy, Name: "p1"}

	if _, err := objs.Get(ctx, key); !datastore.IsNotFound(err) {
		t.Fatalf("get missing: %v", err)
	}
	created, err := objs.Create(ctx, gnp("p1", "app == 'web'"))
	must(t, err)
	c := created.(*agent.GlobalNetworkPolicy)
	if c.Spec.Tier != "default" || c.ResourceVersion == "" || c.UID == "" || c.CreationTimestamp == "" ||
		c.APIVersion != resources.APIVersion || c.Kind != string(agent.KindGlobalNetworkPolicy) || c.Annotations != nil {
		t.Fatalf("created: %+v", c)
	}
	if _, err := objs.Create(ctx, gnp("p1", "app == 'web'")); !datastore.IsAlreadyExists(err) {
		t.Fatalf("create twice: %v", err)
	}
	got, err := objs.Get(ctx, key)
	must(t, err)
	if got.Meta().ResourceVersion != c.ResourceVersion || got.(*agent.GlobalNetworkPolicy).Spec.Selector != "app == 'web'" {
		t.Fatalf("get: %+v", got)
	}

	// Update: compare-and-swap on the resourceVersion.
	c.Spec.Selector = "app == 'api'"
	c.Labels = map[string]string{"team": "a"}
	updated, err := objs.Update(ctx, c)
	must(t, err)
	if updated.Meta().ResourceVersion == c.ResourceVersion || updated.Meta().Labels["team"] != "a" {
		t.Fatalf("updated: %+v", updated)
	}
	var ce *datastore.ConflictError
	if _, err := objs.Update(ctx, c); !errors.As(err, &ce) || ce.Current != updated.Meta().ResourceVersion {
		t.Fatalf("update with a stale version: %v", err)
	}
	noVersion := gnp("p1", "all()")
	if _, err := objs.Update(ctx, noVersion); err == nil || !strings.Contains(err.Error(), "resourceVersion") {
		t.Fatalf("update without a version: %v", err)
	}
	missing := gnp("p9", "all()")
	missing.ResourceVersion = updated.Meta().ResourceVersion
	if _, err := objs.Update(ctx, missing); !datastore.IsNotFound(err) {
		t.Fatalf("update of a missing object: %v", err)
	}

	// Validation before writes, naming the object and the field.
	_, err = objs.Create(ctx, gnp("bad", "app == 'x"))
	errorIs(t, err, resources.ErrInvalid)
	contains(t, "invalid create", err.Error(), `GlobalNetworkPolicy "bad"`, "spec.selector")
	np := &agent.NetworkPolicy{ObjectMeta: resources.ObjectMeta{Name: "np1"}, Spec: agent.PolicySpec{Selector: "all()"}}
	_, err = objs.Create(ctx, np)
	contains(t, "namespaced kind without a namespace", fmt.Sprint(err), "metadata.namespace")

	// Namespaced kinds and lists.
	np.Namespace = "default"
	_, err = objs.Create(ctx, np)
	must(t, err)
	_, err = objs.Create(ctx, &agent.Tier{ObjectMeta: resources.ObjectMeta{Name: "security"}, Spec: agent.TierSpec{Order: ptr(100.0)}})
	must(t, err)
	_, err = objs.Create(ctx, gnp("p2", "all()"))
	must(t, err)
	l, err := objs.List(ctx, agent.KindGlobalNetworkPolicy)
	must(t, err)
	if names := objectNames(l); names != "p1 p2" {
		t.Errorf("list: %s", names)
	}
	l, err = objs.List(ctx, agent.KindNetworkPolicy)
	must(t, err)
	if names := objectNames(l); names != "default/np1" {
		t.Errorf("list: %s", names)
	}

	// Delete: with a stale version, with the current one, missing.
	if _, err := objs.Delete(ctx, key, c.ResourceVersion); !datastore.IsConflict(err) {
		t.Fatalf("delete with a stale version: %v", err)
	}
	last, err := objs.Delete(ctx, key, updated.Meta().ResourceVersion)
	must(t, err)
	if last.(*agent.GlobalNetworkPolicy).Spec.Selector != "app == 'api'" {
		t.Errorf("delete returned %+v", last)
	}
	if _, err := objs.Delete(ctx, key, ""); !datastore.IsNotFound(err) {
		t.Fatalf("delete missing: %v", err)
	}

	// Kinds the store does not hold.
	wep := resources.Key{Kind: agent.KindWorkloadEndpoint, Namespace: "default", Name: "w1"}
	_, err = objs.Get(ctx, wep)
	errorIs(t, err, agent.ErrKindUnavailable)
	contains(t, "WorkloadEndpoint", err.Error(), "pods are the workload endpoints")
	if _, err := objs.Watch(ctx, agent.KindWorkloadEndpoint); !errors.Is(err, agent.ErrKindUnavailable) {
		t.Errorf("watch WorkloadEndpoint: %v", err)
	}
	if _, err := objs.List(ctx, resources.KindIPPool); err == nil {
		t.Error("listed IPPools as an agent kind")
	}
}

func ptr[T any](v T) *T { return &v }

func objectNames(objs []agent.Object) string {
	var out []string
	for _, o := range objs {
		k := agent.KeyOfObject(o)
		if k.Namespace != "" {
			out = append(out, k.Namespace+"/"+k.Name)
		} else {
			out = append(out, k.Name)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// nextEvent returns the next watch event, failing after 15s.
func nextEvent(t *testing.T, w agent.ObjectWatcher) agent.ObjectEvent {
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
	return agent.ObjectEvent{}
}

// eventsUntil collects events up to the next of type typ (Error events,
// whose number depends on timing, are logged), as sorted "Added p1
// app == 'x'" strings.
func eventsUntil(t *testing.T, w agent.ObjectWatcher, typ datastore.EventType) string {
	t.Helper()
	var out []string
	for {
		ev := nextEvent(t, w)
		switch {
		case ev.Type == typ:
			sort.Strings(out)
			return strings.Join(out, "; ")
		case ev.Type == datastore.Error:
			t.Logf("error event: %v", ev.Err)
		case ev.Object == nil:
			t.Fatalf("unexpected %s event", ev.Type)
		default:
			g := ev.Object.(*agent.GlobalNetworkPolicy)
			if g.ResourceVersion == "" || g.APIVersion != resources.APIVersion {
				t.Errorf("event object without version or type: %+v", g)
			}
			out = append(out, fmt.Sprintf("%s %s %s", ev.Type, g.Name, g.Spec.Selector))
		}
	}
}

// TestKubernetesObjectsWatch: the object store's watch delivers decoded
// objects (list, Synced, changes); when the connection to the apiserver
// is cut it reports an Error, and once it is back it relists and reports
// exactly the changes made meanwhile, then Synced, and goes on; Stop
// closes the events.
func TestKubernetesObjectsWatch(t *testing.T) {
	ctx := context.Background()
	rc := rest.CopyConfig(kubeapi.Shared(t).Config)
	u, err := url.Parse(rc.Host)
	must(t, err)
	px := datastoretest.NewProxy(t, u.Host)
	rc.Host = "https://" + px.Addr()
	objs, _ := objectStore(t, rc, kubernetes.Config{ProbeInterval: 300 * time.Millisecond,
		BackoffInitial: 50 * time.Millisecond, BackoffMax: 300 * time.Millisecond, RequestTimeout: 2 * time.Second})
	direct := agent.NewKubernetesObjects(kubeapi.Datastore(t, kubernetes.Config{}))

	for _, n := range []string{"a", "b"} {
		_, err := direct.Create(ctx, gnp(n, "app == '"+n+"'"))
		must(t, err)
	}
	w, err := objs.Watch(ctx, agent.KindGlobalNetworkPolicy)
	must(t, err)
	if got := eventsUntil(t, w, datastore.Synced); got != "Added a app == 'a'; Added b app == 'b'" {
		t.Fatalf("list: %s", got)
	}
	_, err = direct.Create(ctx, gnp("c", "all()"))
	must(t, err)
	if ev := nextEvent(t, w); ev.Type != datastore.Added || ev.Object.Meta().Name != "c" {
		t.Fatalf("event %s %v", ev.Type, ev.Object)
	}

	px.Cut()
	if ev := nextEvent(t, w); ev.Type != datastore.Error || ev.Err == nil {
		t.Fatalf("want an Error event after the cut, got %s", ev.Type)
	}
	a, err := direct.Get(ctx, resources.Key{Kind: agent.KindGlobalNetworkPolicy, Name: "a"})
	must(t, err)
	a.(*agent.GlobalNetworkPolicy).Spec.Selector = "app == 'x'"
	_, err = direct.Update(ctx, a)
	must(t, err)
	_, err = direct.Delete(ctx, resources.Key{Kind: agent.KindGlobalNetworkPolicy, Name: "b"}, "")
	must(t, err)
	_, err = direct.Create(ctx, gnp("d", "app == 'd'"))
	must(t, err)
	time.Sleep(500 * time.Millisecond) // a few failed retries
	px.Restore()
	if got := eventsUntil(t, w, datastore.Synced); got != "Added d app == 'd'; Deleted b app == 'b'; Modified a app == 'x'" {
		t.Fatalf("after the outage: %s", got)
	}
	_, err = direct.Delete(ctx, resources.Key{Kind: agent.KindGlobalNetworkPolicy, Name: "c"}, "")
	must(t, err)
	if ev := nextEvent(t, w); ev.Type != datastore.Deleted || ev.Object.Meta().Name != "c" {
		t.Fatalf("event %s %v", ev.Type, ev.Object)
	}
	w.Stop()
	select {
	case _, ok := <-w.Events():
		for ok {
			_, ok = <-w.Events()
		}
	case <-time.After(5 * time.Second):
		t.Fatal("events not closed after Stop")
	}
}
