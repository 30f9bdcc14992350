package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/test/kubeapi"
)

func gvr(plural string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: resources.Group, Version: resources.Version, Resource: plural}
}

func dynamicClient(t *testing.T) dynamic.Interface {
	t.Helper()
	c, err := dynamic.NewForConfig(kubeapi.Shared(t).Config)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCRUD(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, kubernetes.Config{})

	created, err := d.Create(ctx, pool("pool-a", "10.65.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	m := created.Meta()
	if m.ResourceVersion == "" || m.UID == "" || m.CreationTimestamp == "" {
		t.Fatalf("metadata not filled in: %+v", m)
	}
	got, err := datastore.Get[*resources.IPPool](ctx, d, "pool-a")
	if err != nil {
		t.Fatal(err)
	}
	// Defaults were stored.
	if got.Spec.BlockSize != 26 || got.Spec.IPIPMode != resources.EncapNever || got.Spec.NodeSelector != "all()" ||
		got.ResourceVersion != m.ResourceVersion || got.UID != m.UID || got.APIVersion != resources.APIVersion || got.Kind != "IPPool" {
		t.Fatalf("stored %+v", got)
	}

	got.Spec.NATOutgoing = true
	updated, err := datastore.Update(ctx, d, got)
	if err != nil {
		t.Fatal(err)
	}
	if updated.ResourceVersion == m.ResourceVersion || !updated.Spec.NATOutgoing || updated.UID != m.UID {
		t.Fatalf("updated %+v", updated)
	}

	list, err := d.List(ctx, resources.KindIPPool)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || !list.Items[0].(*resources.IPPool).Spec.NATOutgoing || list.Revision == "" {
		t.Fatalf("list %+v", list)
	}
	if rev, _ := strconv.ParseInt(list.Revision, 10, 64); rev < 2 {
		t.Fatalf("list revision %s", list.Revision)
	}

	old, err := d.Delete(ctx, resources.KeyOf(updated), updated.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	if old.(*resources.IPPool).Spec.CIDR != "10.65.0.0/16" || old.Meta().ResourceVersion != updated.ResourceVersion {
		t.Fatalf("deleted object %+v", old)
	}
	if _, err := d.Get(ctx, resources.KeyOf(updated)); !datastore.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}
	// Kinds do not see each other.
	if _, err := d.Create(ctx, node("pool-a", nil)); err != nil {
		t.Fatal(err)
	}
	keys, err := d.ListKeys(ctx, resources.KindNode)
	if err != nil || len(keys) != 1 || keys[0] != nodeKey("pool-a") {
		t.Fatalf("ListKeys = %v, %v", keys, err)
	}
	if l, err := d.List(ctx, resources.KindIPPool); err != nil || len(l.Items) != 0 {
		t.Fatalf("pools %v, %v", l, err)
	}
}

// TestListPages: a list larger than a page is read in pages at one
// version.
func TestListPages(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, kubernetes.Config{ListPageSize: 4})
	for i := range 11 {
		mustCreate(t, d, node(fmt.Sprintf("page-%02d", i), nil))
	}
	list, err := d.List(ctx, resources.KindNode)
	if err != nil || len(list.Items) != 11 {
		t.Fatalf("list: %d items, %v", len(list.Items), err)
	}
	keys, err := d.ListKeys(ctx, resources.KindNode)
	if err != nil || len(keys) != 11 || keys[10] != nodeKey("page-10") {
		t.Fatalf("keys: %v, %v", keys, err)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, kubernetes.Config{})
	n, err := datastore.Create(ctx, d, node("n1", nil))
	if err != nil {
		t.Fatal(err)
	}
	stale := n.ResourceVersion
	n.Labels = map[string]string{"a": "b"}
	n, err = datastore.Update(ctx, d, n)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		op    func() error
		check func(error) bool
		msg   string
	}{
		{"create existing", func() error { _, err := d.Create(ctx, node("n1", nil)); return err },
			datastore.IsAlreadyExists, `Node "n1": already exists`},
		{"update stale", func() error {
			x := node("n1", map[string]string{"x": "y"})
			x.ResourceVersion = stale
			_, err := d.Update(ctx, x)
			return err
		}, datastore.IsConflict, fmt.Sprintf(`Node "n1": resourceVersion %s is stale (current %s)`, stale, n.ResourceVersion)},
		{"delete stale", func() error { _, err := d.Delete(ctx, nodeKey("n1"), stale); return err },
			datastore.IsConflict, fmt.Sprintf(`Node "n1": resourceVersion %s is stale (current %s)`, stale, n.ResourceVersion)},
		{"update missing", func() error {
			x := node("nope", nil)
			x.ResourceVersion = stale
			_, err := d.Update(ctx, x)
			return err
		}, datastore.IsNotFound, `Node "nope": not found`},
		{"delete missing", func() error { _, err := d.Delete(ctx, nodeKey("nope"), ""); return err },
			datastore.IsNotFound, `Node "nope": not found`},
		{"delete missing with revision", func() error { _, err := d.Delete(ctx, nodeKey("nope"), "5"); return err },
			datastore.IsNotFound, `Node "nope": not found`},
		{"get missing", func() error { _, err := d.Get(ctx, nodeKey("nope")); return err },
			datastore.IsNotFound, `Node "nope": not found`},
		{"update without version", func() error { _, err := d.Update(ctx, node("n1", nil)); return err },
			func(err error) bool { return err != nil }, `kubernetes: update Node "n1": resourceVersion is required`},
		{"invalid version", func() error { x := node("n1", nil); x.ResourceVersion = "abc"; _, err := d.Update(ctx, x); return err },
			func(err error) bool { return err != nil && !datastore.IsConflict(err) }, ``},
		{"create pool", func() error { _, err := d.Create(ctx, pool("bad", "10.0.0.0/16")); return err },
			func(err error) bool { return err == nil }, ``},
		{"invalid block size", func() error {
			p := pool("bad2", "10.1.0.0/16")
			p.Spec.BlockSize = 33
			_, err := d.Create(ctx, p)
			return err
		}, func(err error) bool { return errors.Is(err, resources.ErrInvalid) }, `IPPool "bad2": spec.blockSize: 33 is out of range 20..32 for IPv4`},
		{"overlapping pool", func() error { _, err := d.Create(ctx, pool("overlap", "10.0.128.0/17")); return err },
			func(err error) bool { return errors.Is(err, resources.ErrInvalid) }, `IPPool "overlap": spec.cidr: 10.0.128.0/17 overlaps IPPool "bad" (10.0.0.0/16)`},
		{"unknown kind", func() error { _, err := d.Get(ctx, resources.Key{Kind: "Pod", Name: "x"}); return err },
			func(err error) bool { return err != nil }, `kubernetes: unknown kind "Pod"`},
		{"namespace on a cluster-scoped kind", func() error {
			_, err := d.Get(ctx, resources.Key{Kind: resources.KindNode, Namespace: "default", Name: "x"})
			return err
		}, func(err error) bool { return err != nil && !datastore.IsNotFound(err) }, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			if !tt.check(err) {
				t.Fatalf("unexpected error %v", err)
			}
			if tt.msg != "" && (err == nil || err.Error() != tt.msg) {
				t.Fatalf("error %q, want %q", err, tt.msg)
			}
		})
	}
	// The typed conflict error carries both versions.
	x := node("n1", nil)
	x.ResourceVersion = stale
	_, err = d.Update(ctx, x)
	var ce *datastore.ConflictError
	if !errors.As(err, &ce) || ce.Expected != stale || ce.Current != n.ResourceVersion {
		t.Fatalf("conflict error %#v", err)
	}
	// Updating a pool onto another's range is refused too; its own range is fine.
	p, err := datastore.Get[*resources.IPPool](ctx, d, "bad")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Create(ctx, pool("other", "10.9.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if _, err := datastore.Update(ctx, d, p); err != nil {
		t.Fatalf("update in place: %v", err)
	}
	p.Spec.CIDR = "10.9.0.0/20"
	if _, err := datastore.Update(ctx, d, p); !errors.Is(err, resources.ErrInvalid) {
		t.Fatalf("update onto another pool: %v", err)
	}
}

// TestCASConcurrent: goroutines increment one counter by read-modify-write
// with compare-and-swap; no increment may be lost.
func TestCASConcurrent(t *testing.T) {
	d := newDatastore(t, kubernetes.Config{})
	if n, _ := datastoretest.CASConcurrent(t, d); n == 0 {
		t.Error("no conflicts: the test did not exercise compare-and-swap")
	}
}

// TestHashedNames: IPAM handles may hold characters Kubernetes names may
// not; they are stored under a hashed name and come back as they were.
func TestHashedNames(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, kubernetes.Config{})
	dyn := dynamicClient(t)
	for _, handle := range []string{"k8s-pod-network.0123abc", "Container_ID.X", "UPPER", "a_b"} {
		t.Run(handle, func(t *testing.T) {
			h := &resources.IPAMHandle{Spec: resources.IPAMHandleSpec{HandleID: handle, Block: map[string]int{"10.0.0.0/26": 1}}}
			created, err := datastore.Create(ctx, d, h)
			if err != nil {
				t.Fatal(err)
			}
			if created.Name != handle {
				t.Fatalf("created name %q", created.Name)
			}
			got, err := datastore.Get[*resources.IPAMHandle](ctx, d, handle)
			if err != nil || got.Name != handle || got.Annotations != nil {
				t.Fatalf("get: %+v, %v", got, err)
			}
			// Stored under the hashed name with the real one annotated.
			l, err := dyn.Resource(gvr("ipamhandles")).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var stored []string
			for _, u := range l.Items {
				if u.GetAnnotations()[kubernetes.NameAnnotation] == handle || u.GetName() == handle {
					stored = append(stored, u.GetName())
				}
			}
			valid := strings.ToLower(handle) == handle && !strings.Contains(handle, "_")
			if len(stored) != 1 || (stored[0] == handle) != valid || (!valid && !strings.HasPrefix(stored[0], "tabby-")) {
				t.Fatalf("stored as %v", stored)
			}
			keys, err := d.ListKeys(ctx, resources.KindIPAMHandle)
			if err != nil || len(keys) != 1 || keys[0].Name != handle {
				t.Fatalf("keys %v, %v", keys, err)
			}
			got.Spec.Block["10.0.0.0/26"] = 2
			if got, err = datastore.Update(ctx, d, got); err != nil || got.Name != handle || got.Spec.Block["10.0.0.0/26"] != 2 {
				t.Fatalf("update: %+v, %v", got, err)
			}
			if _, err := d.Delete(ctx, resources.KeyOf(got), got.ResourceVersion); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Get(ctx, resources.KeyOf(got)); !datastore.IsNotFound(err) {
				t.Fatalf("after delete: %v", err)
			}
		})
	}
}

// TestForeignMetadata: what other clients add to an object (finalizers,
// owner references, annotations) survives Tabby's updates.
func TestForeignMetadata(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, kubernetes.Config{})
	dyn := dynamicClient(t).Resource(gvr("nodes"))
	mustCreate(t, d, node("fm", map[string]string{"zone": "a"}))
	patch := `{"metadata":{"finalizers":["example.com/keep"],"annotations":{"example.com/note":"x"},` +
		`"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":"6a1f5d0c-0000-4000-8000-000000000001"}]}}`
	if _, err := dyn.Patch(ctx, "fm", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := datastore.Get[*resources.Node](ctx, d, "fm")
	if err != nil || n.Annotations["example.com/note"] != "x" {
		t.Fatalf("get: %+v, %v", n, err)
	}
	n.Labels["zone"] = "b"
	n.Spec.IPv4VXLANTunnelAddr = "10.65.0.1"
	if _, err := d.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	u, err := dyn.Get(ctx, "fm", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u.GetLabels()["zone"] != "b" || len(u.GetFinalizers()) != 1 || len(u.GetOwnerReferences()) != 1 || u.GetAnnotations()["example.com/note"] != "x" {
		t.Fatalf("after update: %v", u.Object["metadata"])
	}
	// Labels and annotations removed by Tabby are removed.
	n, _ = datastore.Get[*resources.Node](ctx, d, "fm")
	n.Labels, n.Annotations = nil, nil
	if n, err = datastore.Update(ctx, d, n); err != nil || n.Labels != nil || n.Annotations != nil {
		t.Fatalf("update: %+v, %v", n, err)
	}
	if _, err := dyn.Patch(ctx, "fm", types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestUnreachable: requests to an apiserver nobody answers fail within
// their deadline, or the default request timeout.
func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rc := rest.CopyConfig(kubeapi.Shared(t).Config)
	rc.Host = "https://" + addr
	d, err := kubernetes.New(kubernetes.Config{RESTConfig: rc, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// And one that accepts connections but never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	rc2 := rest.CopyConfig(rc)
	rc2.Host = "https://" + silent.Addr().String()
	d2, err := kubernetes.New(kubernetes.Config{RESTConfig: rc2, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	tests := []struct {
		name string
		d    *kubernetes.Datastore
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"refused, context deadline", d, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 200*time.Millisecond)
		}},
		{"refused, default timeout", d, func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }},
		{"silent, default timeout", d2, func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, op := range []func(context.Context) error{
				func(ctx context.Context) error { _, err := tt.d.Get(ctx, nodeKey("a")); return err },
				func(ctx context.Context) error { _, err := tt.d.Create(ctx, node("a", nil)); return err },
				func(ctx context.Context) error { _, err := tt.d.List(ctx, resources.KindNode); return err },
			} {
				ctx, cancel := tt.ctx()
				start := time.Now()
				err := op(ctx)
				cancel()
				if err == nil {
					t.Fatal("no error from an unreachable apiserver")
				}
				if el := time.Since(start); el > 2*time.Second {
					t.Fatalf("took %s to fail: %v", el, err)
				}
			}
		})
	}
}
