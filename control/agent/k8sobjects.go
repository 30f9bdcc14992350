package agent

import (
	"context"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
)

// KubernetesObjects is the ObjectStore of the Kubernetes datastore: each
// object of an agent kind is one custom resource of API group tabby.dev
// (<plural>.tabby.dev, CRDs in deploy/crds), stored as its JSON document
// through kubernetes.Datastore.Objects, with that backend's semantics:
// the apiserver's resourceVersion, compare-and-swap Update and Delete,
// the typed errors of package datastore, and a list-then-watch that
// reports Error while the apiserver is unreachable and relists (reporting
// the difference) when it is back.
//
// WorkloadEndpoint is not stored: with the Kubernetes datastore the pods
// are the workload endpoints (see Options.Cluster), so every method
// refuses it with ErrKindUnavailable rather than keep objects nobody
// reads.
//
// Objects are defaulted and validated before writes, as EtcdObjects does;
// documents read back are decoded leniently (the apiserver adds metadata
// Tabby does not model). KubernetesObjects is safe for concurrent use.
type KubernetesObjects struct {
	documentObjects
}

var _ ObjectStore = (*KubernetesObjects)(nil)

// NewKubernetesObjects returns the store of the agent kinds on ds.
func NewKubernetesObjects(ds *kubernetes.Datastore) *KubernetesObjects {
	s := &KubernetesObjects{documentObjects{
		stores:      map[resources.Kind]kindDocuments{},
		unavailable: map[resources.Kind]string{KindWorkloadEndpoint: errPodsAreEndpoints},
		// The document carries its resourceVersion; the apiserver drops
		// empty annotations, so an object reads back as it was written.
		decoded: func(obj Object, _ string) {
			if m := obj.Meta(); len(m.Annotations) == 0 {
				m.Annotations = nil
			}
		},
	}}
	for _, info := range agentKinds {
		if info.Kind != KindWorkloadEndpoint {
			s.stores[info.Kind] = kubernetesDocuments{ds.Objects(info.Kind, info.Plural, info.Namespaced)}
		}
	}
	return s
}

// errPodsAreEndpoints explains why WorkloadEndpoint is unavailable.
const errPodsAreEndpoints = "with the Kubernetes datastore the pods are the workload endpoints"

// kubernetesDocuments is one kind's custom resources: whole documents,
// resourceVersion (the compare-and-swap of Update) included.
type kubernetesDocuments struct{ o *kubernetes.Objects }

func (d kubernetesDocuments) get(ctx context.Context, k resources.Key) ([]byte, string, error) {
	doc, err := d.o.Get(ctx, k)
	return doc, "", err
}

func (d kubernetesDocuments) list(ctx context.Context) ([][]byte, []string, error) {
	l, err := d.o.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	return l.Items, make([]string, len(l.Items)), nil
}

func (d kubernetesDocuments) create(ctx context.Context, k resources.Key, obj Object) ([]byte, string, error) {
	doc, err := encodeFor(k, obj, false)
	if err != nil {
		return nil, "", err
	}
	doc, err = d.o.Create(ctx, doc)
	return doc, "", err
}

func (d kubernetesDocuments) update(ctx context.Context, k resources.Key, obj Object) ([]byte, string, error) {
	doc, err := encodeFor(k, obj, true)
	if err != nil {
		return nil, "", err
	}
	doc, err = d.o.Update(ctx, doc)
	return doc, "", err
}

func (d kubernetesDocuments) delete(ctx context.Context, k resources.Key, revision string) ([]byte, string, error) {
	doc, err := d.o.Delete(ctx, k, revision)
	return doc, "", err
}

func (d kubernetesDocuments) watch(ctx context.Context) (datastore.DocumentWatcher, error) {
	return d.o.Watch(ctx, nil)
}
