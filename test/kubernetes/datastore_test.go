package kubernetes_test

import (
	"context"
	"fmt"
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
	datastoretest.CRUD(t, newDatastore(t, kubernetes.Config{}))
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
	d := newDatastore(t, kubernetes.Config{})
	backend.Errors(t, d)
	// The apiserver knows which kinds are namespaced.
	t.Run("namespace on a cluster-scoped kind", func(t *testing.T) {
		_, err := d.Get(context.Background(), resources.Key{Kind: resources.KindNode, Namespace: "default", Name: "x"})
		if err == nil || datastore.IsNotFound(err) {
			t.Fatalf("unexpected error %v", err)
		}
	})
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

// TestUnreachable: requests to an apiserver nobody answers (connections
// refused, or accepted and never answered) fail within their deadline,
// or the default request timeout.
func TestUnreachable(t *testing.T) {
	datastoretest.Unreachable(t, func(t *testing.T, addr string) datastore.Datastore {
		rc := rest.CopyConfig(kubeapi.Shared(t).Config)
		rc.Host = "https://" + addr
		d, err := kubernetes.New(kubernetes.Config{RESTConfig: rc, RequestTimeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	})
}
