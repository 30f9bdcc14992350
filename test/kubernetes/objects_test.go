package kubernetes_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
)

// TestObjects: the agent's kinds stored as documents through Objects,
// with the datastore's semantics.
func TestObjects(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, kubernetes.Config{})
	info, _ := agent.LookupAgentKind(agent.KindNetworkPolicy)
	objs := d.Objects(info.Kind, info.Plural, info.Namespaced)
	purgeObjects(t, objs)
	t.Cleanup(func() { purgeObjects(t, objs) })

	w, err := objs.Watch(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if ev := nextObjectEvent(t, w); ev.Type != datastore.Synced {
		t.Fatalf("first event %s", ev.Type)
	}

	np := &agent.NetworkPolicy{
		TypeMeta:   resources.TypeMeta{APIVersion: resources.APIVersion, Kind: string(agent.KindNetworkPolicy)},
		ObjectMeta: resources.ObjectMeta{Name: "allow-web", Namespace: "default", Labels: map[string]string{"team": "a"}},
		Spec: agent.PolicySpec{Selector: "app == 'web'", Ingress: []agent.Rule{{Action: "Allow", Protocol: ptr(agent.Protocol("TCP")),
			Destination: agent.EntityRule{Ports: []agent.Port{"80"}}}}},
	}
	np.Default()
	if err := np.Validate(); err != nil {
		t.Fatal(err)
	}
	doc, _ := json.Marshal(np)
	created, err := objs.Create(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Create(ctx, doc); !datastore.IsAlreadyExists(err) {
		t.Fatalf("create twice: %v", err)
	}
	var got agent.NetworkPolicy
	if err := json.Unmarshal(created, &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != "allow-web" || got.ResourceVersion == "" || got.Spec.Tier != "default" || got.Spec.Ingress[0].Destination.Ports[0] != "80" {
		t.Fatalf("created %+v", got)
	}
	if ev := nextObjectEvent(t, w); ev.Type != datastore.Added || !sameName(t, ev.Object, "allow-web") {
		t.Fatalf("event %s %s", ev.Type, ev.Object)
	}

	key := resources.Key{Kind: agent.KindNetworkPolicy, Namespace: "default", Name: "allow-web"}
	stale := got.ResourceVersion
	got.Spec.Selector = "app == 'api'"
	doc, _ = json.Marshal(&got)
	updated, err := objs.Update(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Update(ctx, doc); !datastore.IsConflict(err) {
		t.Fatalf("update with a stale version: %v", err)
	}
	if ev := nextObjectEvent(t, w); ev.Type != datastore.Modified {
		t.Fatalf("event %s", ev.Type)
	}
	list, err := objs.List(ctx)
	if err != nil || len(list.Items) != 1 || list.Revision == "" {
		t.Fatalf("list %v, %v", list, err)
	}
	if _, err := objs.Delete(ctx, key, stale); !datastore.IsConflict(err) {
		t.Fatalf("delete with a stale version: %v", err)
	}
	var cur agent.NetworkPolicy
	json.Unmarshal(updated, &cur)
	if _, err := objs.Delete(ctx, key, cur.ResourceVersion); err != nil {
		t.Fatal(err)
	}
	if ev := nextObjectEvent(t, w); ev.Type != datastore.Deleted || !sameName(t, ev.Object, "allow-web") {
		t.Fatalf("event %s", ev.Type)
	}
	if _, err := objs.Get(ctx, key); !datastore.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}
	// Documents of another kind are refused.
	if _, err := objs.Create(ctx, []byte(`{"apiVersion":"tabby.dev/v1","kind":"Tier","metadata":{"name":"x","namespace":"default"}}`)); err == nil {
		t.Fatal("created a Tier as a NetworkPolicy")
	}
}

func purgeObjects(t *testing.T, objs *kubernetes.Objects) {
	t.Helper()
	ctx := context.Background()
	list, err := objs.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range list.Items {
		var m struct {
			resources.ObjectMeta `json:"metadata"`
		}
		json.Unmarshal(doc, &m)
		k := resources.Key{Kind: agent.KindNetworkPolicy, Namespace: m.Namespace, Name: m.Name}
		if _, err := objs.Delete(ctx, k, ""); err != nil && !datastore.IsNotFound(err) {
			t.Fatal(err)
		}
	}
}

func nextObjectEvent(t *testing.T, w kubernetes.ObjectWatcher) kubernetes.ObjectEvent {
	t.Helper()
	for {
		ev := datastoretest.Receive(t, w.Events())
		if ev.Type != datastore.Error {
			return ev
		}
		t.Logf("error event: %v", ev.Err)
	}
}

func sameName(t *testing.T, doc []byte, name string) bool {
	var m struct {
		resources.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	return m.Name == name
}
