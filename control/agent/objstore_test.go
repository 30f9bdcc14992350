package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
	"github.com/tabbynet/tabby/control/resources"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// testStore returns a Store on the shared etcd under a fresh prefix.
func testStore(t *testing.T) (*Store, *etcd.Datastore) {
	t.Helper()
	ds := etcdtest.Datastore(t, etcd.Config{ProbeInterval: 200 * time.Millisecond})
	return &Store{DS: ds, Objects: NewEtcdObjects(ds)}, ds
}

const examplePolicies = `
apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: deny-db
spec:
  order: 10
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination:
      ports: [5432, "6000:6010", http]
---
# a namespaced policy
apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: shop
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: 6
    source:
      selector: app == 'lb'
      nets: [10.0.0.0/8]
---
apiVersion: tabby.dev/v1
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 10.65.0.0/16
---
apiVersion: tabby.dev/v1
kind: Tier
metadata:
  name: security
spec:
  order: 100
  defaultAction: Pass
`

func TestDecodeMixedKinds(t *testing.T) {
	objs, err := Decode([]byte(examplePolicies))
	if err != nil {
		t.Fatal(err)
	}
	kinds := []resources.Kind{KindGlobalNetworkPolicy, KindNetworkPolicy, resources.KindIPPool, KindTier}
	if len(objs) != len(kinds) {
		t.Fatalf("decoded %d objects, want %d", len(objs), len(kinds))
	}
	for i, o := range objs {
		if o.ObjectKind() != kinds[i] {
			t.Errorf("object %d: kind %s, want %s", i, o.ObjectKind(), kinds[i])
		}
		o.Default()
		if err := o.Validate(); err != nil {
			t.Errorf("object %d: %v", i, err)
		}
	}
	gnp := objs[0].(*GlobalNetworkPolicy)
	p, err := gnp.ToACL()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(p.Ingress[0].Destination.Ports); got != 3 || p.Ingress[0].Destination.Ports[2].Name != "http" {
		t.Errorf("ports: %+v", p.Ingress[0].Destination.Ports)
	}
	// Round trip through YAML.
	y, err := MarshalYAML(objs...)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Decode(y)
	if err != nil || len(again) != len(objs) {
		t.Fatalf("round trip: %v (%d objects)\n%s", err, len(again), y)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"unknown field", "apiVersion: tabby.dev/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: b}\nspec:\n  selectr: x\n",
			`document 1: NetworkPolicy: json: unknown field "selectr"`},
		{"unknown kind", "apiVersion: tabby.dev/v1\nkind: Pod\nmetadata: {name: a}\n", `document 1: unknown kind "Pod"`},
		{"wrong version", "apiVersion: tabby.dev/v2\nkind: Tier\nmetadata: {name: a}\n", `document 1: apiVersion "tabby.dev/v2"`},
		{"second document", "apiVersion: tabby.dev/v1\nkind: Tier\nmetadata: {name: a}\n---\nkind: [\n", `document 2:`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestValidateNamesObjectAndField(t *testing.T) {
	doc := `
apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata: {name: p1, namespace: shop}
spec:
  selector: app == 'web
  ingress:
  - action: Allow
---
apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: p2}
spec:
  egress:
  - action: Allow
    destination:
      nets: [10.0.0.0/33]
---
apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata: {name: p3, namespace: shop}
spec:
  ingress:
  - action: Maybe
---
apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata: {name: p4}
spec: {}
---
apiVersion: tabby.dev/v1
kind: WorkloadEndpoint
metadata: {name: w1, namespace: shop}
spec:
  node: n1
  containerID: abc
  ipNetworks: [10.65.0.1/24]
---
apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata: {name: knp.default.web, namespace: shop}
spec: {}
`
	objs, err := Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`NetworkPolicy "shop/p1": spec.selector:`,
		`GlobalNetworkPolicy "p2": spec.egress[0].destination.nets[0]:`,
		`NetworkPolicy "shop/p3": spec.ingress[0].action: "Maybe" is not one of Allow, Deny, Pass, Log`,
		`NetworkPolicy "p4": metadata.namespace: is required for NetworkPolicy`,
		`WorkloadEndpoint "shop/w1": spec.ipNetworks[0]: "10.65.0.1/24" is not a host prefix (/32)`,
		`NetworkPolicy "shop/knp.default.web": metadata.name: "knp.default.web": the prefix "knp.default." is reserved`,
	}
	for i, o := range objs {
		o.Default()
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), want[i]) || !errors.Is(err, resources.ErrInvalid) {
			t.Errorf("object %d: got %v, want %q", i, err, want[i])
		}
	}
}

func TestObjectStore(t *testing.T) {
	store, _ := testStore(t)
	ctx := context.Background()
	os := store.Objects
	w, err := os.Watch(ctx, KindTier)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := func(want datastore.EventType) ObjectEvent {
		t.Helper()
		select {
		case ev := <-w.Events():
			if ev.Type != want {
				t.Fatalf("event %s (%v), want %s", ev.Type, ev.Err, want)
			}
			return ev
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s event", want)
		}
		return ObjectEvent{}
	}
	next(datastore.Synced)

	tier := &Tier{ObjectMeta: resources.ObjectMeta{Name: "security"}}
	created, err := os.Create(ctx, tier)
	if err != nil {
		t.Fatal(err)
	}
	if created.Meta().ResourceVersion == "" || created.Meta().UID == "" || created.(*Tier).Spec.DefaultAction != "Deny" {
		t.Errorf("created: %+v", created)
	}
	if ev := next(datastore.Added); ev.Object.Meta().Name != "security" {
		t.Errorf("added %v", ev.Object.Meta().Name)
	}
	if _, err := os.Create(ctx, &Tier{ObjectMeta: resources.ObjectMeta{Name: "security"}}); !datastore.IsAlreadyExists(err) {
		t.Errorf("second create: %v", err)
	}
	// Compare-and-swap.
	stale := created.(*Tier)
	upd := *stale
	order := 5.0
	upd.Spec.Order = &order
	if _, err := os.Update(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	next(datastore.Modified)
	stale.Spec.DefaultAction = "Pass"
	if _, err := os.Update(ctx, stale); !datastore.IsConflict(err) {
		t.Errorf("stale update: %v", err)
	}
	if _, err := os.Create(ctx, &Tier{ObjectMeta: resources.ObjectMeta{Name: "Bad_Name"}}); !errors.Is(err, resources.ErrInvalid) {
		t.Errorf("invalid create: %v", err)
	}
	// Apply through the Store: update without a resourceVersion.
	if _, created, err := store.Apply(ctx, &Tier{ObjectMeta: resources.ObjectMeta{Name: "security"},
		Spec: TierSpec{DefaultAction: "Pass"}}); err != nil || created {
		t.Fatalf("apply: created %v, %v", created, err)
	}
	if ev := next(datastore.Modified); ev.Object.(*Tier).Spec.DefaultAction != "Pass" {
		t.Errorf("modified to %+v", ev.Object)
	}
	list, err := store.List(ctx, KindTier)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %d", err, len(list))
	}
	if _, err := store.Delete(ctx, KeyOfObject(tier), ""); err != nil {
		t.Fatal(err)
	}
	next(datastore.Deleted)
	if _, err := store.Delete(ctx, KeyOfObject(tier), ""); !datastore.IsNotFound(err) {
		t.Errorf("second delete: %v", err)
	}
	if _, err := store.Get(ctx, KeyOfObject(tier)); !datastore.IsNotFound(err) {
		t.Errorf("get deleted: %v", err)
	}
	// Resources go to the datastore through the same Store.
	pool := Wrap(&resources.IPPool{ObjectMeta: resources.ObjectMeta{Name: "p"}, Spec: resources.IPPoolSpec{CIDR: "10.9.0.0/16"}})
	if _, created, err := store.Apply(ctx, pool); err != nil || !created {
		t.Fatalf("apply pool: %v", err)
	}
	overlap := Wrap(&resources.IPPool{ObjectMeta: resources.ObjectMeta{Name: "q"}, Spec: resources.IPPoolSpec{CIDR: "10.9.1.0/24"}})
	if _, _, err := store.Apply(ctx, overlap); !errors.Is(err, resources.ErrInvalid) {
		t.Errorf("overlapping pool: %v", err)
	}
}
