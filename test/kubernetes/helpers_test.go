package kubernetes_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
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

// Shorthands for the shared helpers, used by the Kubernetes-only tests.
var (
	node       = datastoretest.Node
	nodeKey    = datastoretest.NodeKey
	pool       = datastoretest.Pool
	mustCreate = datastoretest.MustCreate
)

// backend is what the shared contract tests need to know about the
// Kubernetes datastore.
var backend = datastoretest.Backend{
	Name: "kubernetes",
	// The apiserver's own error, passed on.
	InvalidVersionError: "",
	// A resourceVersion older than the apiserver's watch cache (as after
	// an apiserver restart) is answered with 410 Gone.
	Expire: func(t *testing.T, d datastore.Datastore, list *datastore.List) *datastore.List {
		expired := *list
		expired.Revision = "1"
		return &expired
	},
	IsExpired:     func(err error) bool { return errors.Is(err, kubernetes.ErrExpired) },
	IsProbeFailed: func(err error) bool { return errors.Is(err, kubernetes.ErrProbeFailed) },
	// A cut connection ends the watch request with the transport's error,
	// which varies with timing: any Error event will do.
	IsCutError: nil,
}

func netipPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
