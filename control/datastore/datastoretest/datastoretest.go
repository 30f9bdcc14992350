// Package datastoretest holds the behavioural contract every datastore
// backend must pass, so the etcd backend (in-process etcd, tests in
// control/datastore/etcd) and the Kubernetes backend (a real
// kube-apiserver, tests in the test/ module) are checked by the same code.
//
// A backend's test calls one function here per contract test and keeps to
// itself only what is truly its own (etcd transactions and prefixes, the
// apiserver's paging, hashed names, server-side watch timeouts). The
// contract tests that need nothing from the backend but a Datastore are
// functions (CRUD, CASConcurrent, Unreachable); those that depend on what
// the contract leaves to the backend (error texts, how a watched revision
// expires, which error a probe reports) are methods of Backend.
//
// The helpers (Node, Pool, MustCreate, Relabel, Remove, Receive, Next,
// Until, CheckRevision, Equal, WaitClosed, Proxy, RefusedAddr,
// SilentAddr) serve the backends' own tests too. Every wait for an event
// is bounded by EventTimeout: a test fails instead of hanging, and no
// test asserts speed.
//
// The package imports only datastore, resources and the standard library,
// never a backend or a harness (etcdtest, test/kubeapi): the backends'
// tests import it.
package datastoretest

import (
	"context"
	"testing"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// Backend is what the contract leaves to each backend. Expire, IsExpired
// and IsProbeFailed are required by the watch tests that use them.
type Backend struct {
	// Name begins the backend's own error messages ("etcd",
	// "kubernetes").
	Name string
	// InvalidVersionError is the exact error of an Update with
	// resourceVersion "abc", or "" when the backend passes on its
	// server's error (then it is only required to be a non-conflict
	// error).
	InvalidVersionError string
	// Expire is called by WatchResync after changes made since list was
	// read; it returns a list (list itself or a copy) whose revision the
	// backend no longer serves: etcd compacts, Kubernetes names a
	// resourceVersion older than the apiserver's watch cache.
	Expire func(t *testing.T, d datastore.Datastore, list *datastore.List) *datastore.List
	// IsExpired reports whether err, of the Error event of a watch
	// resumed from an expired revision, says so.
	IsExpired func(err error) bool
	// IsProbeFailed reports whether err is the backend's failed liveness
	// probe of a watch.
	IsProbeFailed func(err error) bool
	// IsCutError reports whether err is what a watch reports when its
	// connection is cut (closed); nil accepts any Error event (Kubernetes:
	// the transport's error, which varies with timing).
	IsCutError func(err error) bool
}

// Pool returns an IPPool with only its name and CIDR set.
func Pool(name, cidr string) *resources.IPPool {
	return &resources.IPPool{ObjectMeta: resources.ObjectMeta{Name: name}, Spec: resources.IPPoolSpec{CIDR: cidr}}
}

// Node returns a Node with only its name and labels set.
func Node(name string, labels map[string]string) *resources.Node {
	return &resources.Node{ObjectMeta: resources.ObjectMeta{Name: name, Labels: labels}}
}

// NodeKey returns the key of the Node name.
func NodeKey(name string) resources.Key { return resources.Key{Kind: resources.KindNode, Name: name} }

// MustCreate creates obj, failing the test on an error.
func MustCreate(t testing.TB, d datastore.Datastore, obj resources.Resource) resources.Resource {
	t.Helper()
	out, err := d.Create(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Relabel sets the Node name's labels to zone=zone.
func Relabel(t testing.TB, d datastore.Datastore, name, zone string) {
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

// Remove deletes the Node name, whatever its version.
func Remove(t testing.TB, d datastore.Datastore, name string) {
	t.Helper()
	if _, err := d.Delete(context.Background(), NodeKey(name), ""); err != nil {
		t.Fatal(err)
	}
}
