package kubernetes

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// Objects stores the objects of one tabby.dev/v1 kind that package
// resources does not define (the agent's AgentConfiguration, Tier,
// NetworkPolicy, GlobalNetworkPolicy, WorkloadEndpoint; their CRDs are in
// deploy/crds) as JSON documents, with the Datastore's semantics: names
// hashed when they are not Kubernetes names, compare-and-swap Update and
// Delete on resourceVersion, the typed errors of package datastore, and a
// list-then-watch that relists and reports the difference after an
// expired version or a lost connection.
//
// A document is the object as Tabby serializes it (apiVersion, kind,
// metadata, spec); documents returned carry the apiserver's metadata
// (resourceVersion, uid, creationTimestamp and the fields Tabby does not
// model, which decoders ignore). Objects neither defaults nor validates:
// its callers do, as the agent's object store does for etcd.
type Objects struct {
	d  *Datastore
	ki kindInfo
}

// Objects returns the store of kind, whose CRD is <plural>.tabby.dev.
func (d *Datastore) Objects(kind resources.Kind, plural string, namespaced bool) *Objects {
	return &Objects{d: d, ki: kindOf(kind, plural, namespaced)}
}

// ObjectList is the result of Objects.List.
type ObjectList struct {
	Items [][]byte
	// Revision is the resourceVersion the list was read at.
	Revision string
}

// ObjectEvent and ObjectWatcher are the document watch's types, shared by
// the backends (package datastore).
type (
	ObjectEvent   = datastore.DocumentEvent
	ObjectWatcher = datastore.DocumentWatcher
)

func (o *Objects) checkKind(k resources.Key) error {
	if k.Kind != o.ki.kind {
		return fmt.Errorf("kubernetes: %s: not a %s", k, o.ki.kind)
	}
	return nil
}

// Get returns the document of the object with key k.
func (o *Objects) Get(ctx context.Context, k resources.Key) ([]byte, error) {
	if err := o.checkKind(k); err != nil {
		return nil, err
	}
	ctx, cancel := o.d.reqCtx(ctx)
	defer cancel()
	u, err := o.d.getObject(ctx, o.ki, k)
	if err != nil {
		return nil, err
	}
	return rawOf(u, "")
}

// List returns the document of every object of the kind.
func (o *Objects) List(ctx context.Context) (*ObjectList, error) {
	ctx, cancel := o.d.reqCtx(ctx)
	defer cancel()
	items, rev, err := o.d.list(ctx, o.ki)
	if err != nil {
		return nil, err
	}
	out := &ObjectList{Items: make([][]byte, 0, len(items)), Revision: rev}
	for i := range items {
		b, err := rawOf(&items[i], "")
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, b)
	}
	return out, nil
}

// Create stores a new object and returns its stored document. It fails
// with a *datastore.AlreadyExistsError if the key is taken.
func (o *Objects) Create(ctx context.Context, doc []byte) ([]byte, error) {
	m, err := o.parse(doc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := o.d.reqCtx(ctx)
	defer cancel()
	u, err := o.d.createObject(ctx, o.ki, m)
	if err != nil {
		return nil, err
	}
	return rawOf(u, "")
}

// Update replaces the spec, labels and annotations of an object if the
// document's resourceVersion is the stored one (a *datastore.ConflictError
// otherwise; a *datastore.NotFoundError for a missing object).
func (o *Objects) Update(ctx context.Context, doc []byte) ([]byte, error) {
	m, err := o.parse(doc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := o.d.reqCtx(ctx)
	defer cancel()
	u, err := o.d.updateObject(ctx, o.ki, m)
	if err != nil {
		return nil, err
	}
	return rawOf(u, "")
}

// Delete removes the object with key k (if revision is current, when
// set) and returns its last document.
func (o *Objects) Delete(ctx context.Context, k resources.Key, revision string) ([]byte, error) {
	if err := o.checkKind(k); err != nil {
		return nil, err
	}
	ctx, cancel := o.d.reqCtx(ctx)
	defer cancel()
	u, err := o.d.deleteObject(ctx, o.ki, k, revision)
	if err != nil {
		return nil, err
	}
	return rawOf(u, "")
}

// Watch lists and watches the kind as Datastore.Watch does; from, when
// set, is a list the caller holds (see datastore.WatchOptions.From).
func (o *Objects) Watch(ctx context.Context, from *ObjectList) (ObjectWatcher, error) {
	w := newWatcher(o.d, o.ki,
		func(typ datastore.EventType, raw []byte, rv string) ObjectEvent {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(raw); err != nil {
				return ObjectEvent{Type: datastore.Error, Err: fmt.Errorf("kubernetes: %s: %w", o.ki.kind, err), Revision: rv}
			}
			setRV := ""
			if typ == datastore.Deleted {
				setRV = rv
			}
			doc, err := rawOf(u, setRV)
			if err != nil {
				return ObjectEvent{Type: datastore.Error, Err: fmt.Errorf("kubernetes: %s: %w", o.ki.kind, err), Revision: rv}
			}
			return ObjectEvent{Type: typ, Object: doc, Revision: rv}
		},
		func(typ datastore.EventType, rv string, err error) ObjectEvent {
			return ObjectEvent{Type: typ, Revision: rv, Err: err}
		})
	if from != nil {
		if from.Revision == "" {
			return nil, fmt.Errorf("kubernetes: watch %s: list has no revision", o.ki.kind)
		}
		for _, doc := range from.Items {
			m, err := o.parse(doc)
			if err != nil {
				return nil, err
			}
			k, _ := keyOfMap(o.ki, m)
			rv, _, _ := unstructured.NestedString(m, "metadata", "resourceVersion")
			w.known[k] = knownObject{rv: rv, raw: doc}
		}
		w.rev, w.primed = from.Revision, true
	}
	w.start(ctx)
	return w, nil
}

// parse decodes a document of the kind and checks its key.
func (o *Objects) parse(doc []byte) (map[string]any, error) {
	m, err := parseObject(doc)
	if err != nil {
		return nil, err
	}
	if _, err := keyOfMap(o.ki, m); err != nil {
		return nil, err
	}
	return m, nil
}
