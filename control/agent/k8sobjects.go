package agent

import (
	"context"
	"fmt"

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
	stores map[resources.Kind]*kubernetes.Objects
}

var _ ObjectStore = (*KubernetesObjects)(nil)

// NewKubernetesObjects returns the store of the agent kinds on ds.
func NewKubernetesObjects(ds *kubernetes.Datastore) *KubernetesObjects {
	s := &KubernetesObjects{stores: map[resources.Kind]*kubernetes.Objects{}}
	for _, info := range agentKinds {
		if info.Kind != KindWorkloadEndpoint {
			s.stores[info.Kind] = ds.Objects(info.Kind, info.Plural, info.Namespaced)
		}
	}
	return s
}

// errPodsAreEndpoints explains why WorkloadEndpoint is unavailable.
const errPodsAreEndpoints = "with the Kubernetes datastore the pods are the workload endpoints"

func (s *KubernetesObjects) objects(kind resources.Kind) (*kubernetes.Objects, error) {
	if kind == KindWorkloadEndpoint {
		return nil, fmt.Errorf("%s: %w: %s", kind, ErrKindUnavailable, errPodsAreEndpoints)
	}
	o, ok := s.stores[kind]
	if !ok {
		return nil, fmt.Errorf("object store: %s: %w", kind, errNotAgentKind)
	}
	return o, nil
}

// decode decodes a document of kind read from the apiserver; errors name
// the object.
func (s *KubernetesObjects) decode(kind resources.Kind, doc []byte) (Object, error) {
	obj, err := decodeStored(kind, doc)
	if err != nil {
		return nil, err
	}
	if m := obj.Meta(); len(m.Annotations) == 0 {
		m.Annotations = nil
	}
	return obj, nil
}

// Get returns one object or a *datastore.NotFoundError.
func (s *KubernetesObjects) Get(ctx context.Context, k resources.Key) (Object, error) {
	o, err := s.objects(k.Kind)
	if err != nil {
		return nil, err
	}
	doc, err := o.Get(ctx, k)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, doc)
}

// List returns every object of the kind.
func (s *KubernetesObjects) List(ctx context.Context, kind resources.Kind) ([]Object, error) {
	o, err := s.objects(kind)
	if err != nil {
		return nil, err
	}
	l, err := o.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Object, 0, len(l.Items))
	for _, doc := range l.Items {
		obj, err := s.decode(kind, doc)
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
	return out, nil
}

// Create stores a new object after defaulting and validating it; it fails
// with a *datastore.AlreadyExistsError if the key is taken.
func (s *KubernetesObjects) Create(ctx context.Context, obj Object) (Object, error) {
	k := KeyOfObject(obj)
	o, err := s.objects(k.Kind)
	if err != nil {
		return nil, err
	}
	if err := admit(obj); err != nil {
		return nil, err
	}
	doc, err := encodeObject(obj)
	if err != nil {
		return nil, fmt.Errorf("object store: encode %s: %w", k, err)
	}
	out, err := o.Create(ctx, doc)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, out)
}

// Update replaces an object whose resourceVersion is current (a
// *datastore.ConflictError otherwise, a *datastore.NotFoundError when it
// is gone).
func (s *KubernetesObjects) Update(ctx context.Context, obj Object) (Object, error) {
	k := KeyOfObject(obj)
	o, err := s.objects(k.Kind)
	if err != nil {
		return nil, err
	}
	if obj.Meta().ResourceVersion == "" {
		return nil, fmt.Errorf("object store: update %s: resourceVersion is required", k)
	}
	if err := admit(obj); err != nil {
		return nil, err
	}
	doc, err := Marshal(obj) // with the resourceVersion: the compare-and-swap
	if err != nil {
		return nil, fmt.Errorf("object store: encode %s: %w", k, err)
	}
	out, err := o.Update(ctx, doc)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, out)
}

// Delete removes an object (compare-and-swap when revision is set) and
// returns its last version.
func (s *KubernetesObjects) Delete(ctx context.Context, k resources.Key, revision string) (Object, error) {
	o, err := s.objects(k.Kind)
	if err != nil {
		return nil, err
	}
	doc, err := o.Delete(ctx, k, revision)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, doc)
}

// Watch lists then watches one kind (see datastore.Datastore.Watch): every
// object as Added, Synced, then changes in order; Error while the
// apiserver is unreachable or the watched version expired, then the
// difference found by a relist and Synced again. A document that does not
// decode is reported as an Error event naming it.
func (s *KubernetesObjects) Watch(ctx context.Context, kind resources.Kind) (ObjectWatcher, error) {
	o, err := s.objects(kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	inner, err := o.Watch(ctx, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	return watchDocuments(ctx, cancel, inner, func(ev kubernetes.ObjectEvent) ObjectEvent {
		return documentEvent(ev.Type, ev.Err, func() (Object, error) { return s.decode(kind, ev.Object) })
	}), nil
}
