package agent

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/resources"
)

// EtcdObjects is the ObjectStore of the etcd datastore: each object of an
// agent kind is one key, <prefix><plural>/<name> or
// <prefix><plural>/<namespace>/<name>, next to the datastore's keys,
// holding its JSON without resourceVersion (which is the key's mod
// revision), stored through etcd.Datastore.Objects with that backend's
// semantics: compare-and-swap Update and Delete, the typed errors of
// package datastore, and the datastore's list-then-watch, which reports
// Error while etcd is unreachable (its probe notices a silent connection)
// and relists, reporting the difference, when it is back. The datastore's
// Config (ProbeInterval, RequestTimeout, back-off) applies, and Close
// ends the watches.
//
// Objects are defaulted and validated before writes; documents read back
// are decoded leniently (a newer writer may have added fields).
// EtcdObjects is safe for concurrent use.
type EtcdObjects struct {
	stores map[resources.Kind]*etcd.Objects
}

var _ ObjectStore = (*EtcdObjects)(nil)

// NewEtcdObjects returns the store of the agent kinds on ds.
func NewEtcdObjects(ds *etcd.Datastore) *EtcdObjects {
	s := &EtcdObjects{stores: map[resources.Kind]*etcd.Objects{}}
	for _, info := range agentKinds {
		s.stores[info.Kind] = ds.Objects(info.Kind, info.Plural, info.Namespaced)
	}
	return s
}

func (s *EtcdObjects) objects(kind resources.Kind) (*etcd.Objects, error) {
	o, ok := s.stores[kind]
	if !ok {
		return nil, fmt.Errorf("object store: %s: %w", kind, errNotAgentKind)
	}
	return o, nil
}

// decode decodes a stored document of kind at its revision.
func (s *EtcdObjects) decode(kind resources.Kind, doc []byte, revision string) (Object, error) {
	obj, err := decodeStored(kind, doc)
	if err != nil {
		return nil, err
	}
	obj.Meta().ResourceVersion = revision
	return obj, nil
}

// Get returns one object or a *datastore.NotFoundError.
func (s *EtcdObjects) Get(ctx context.Context, k resources.Key) (Object, error) {
	o, err := s.objects(k.Kind)
	if err != nil {
		return nil, err
	}
	doc, err := o.Get(ctx, k)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, doc.Value, doc.Revision)
}

// List returns every object of the kind.
func (s *EtcdObjects) List(ctx context.Context, kind resources.Kind) ([]Object, error) {
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
		obj, err := s.decode(kind, doc.Value, doc.Revision)
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
	return out, nil
}

// Create stores a new object after defaulting and validating it, with a
// fresh uid and creationTimestamp; it fails with a
// *datastore.AlreadyExistsError if the key is taken.
func (s *EtcdObjects) Create(ctx context.Context, obj Object) (Object, error) {
	k := KeyOfObject(obj)
	o, err := s.objects(k.Kind)
	if err != nil {
		return nil, err
	}
	if err := admit(obj); err != nil {
		return nil, err
	}
	m := obj.Meta()
	var uid [16]byte
	crand.Read(uid[:])
	m.UID = hex.EncodeToString(uid[:])
	m.CreationTimestamp = time.Now().UTC().Format(time.RFC3339)
	doc, err := encodeObject(obj)
	if err != nil {
		return nil, fmt.Errorf("object store: encode %s: %w", k, err)
	}
	rev, err := o.Create(ctx, k, doc)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, doc, rev)
}

// Update replaces an object whose resourceVersion is current (a
// *datastore.ConflictError otherwise, a *datastore.NotFoundError when it
// is gone).
func (s *EtcdObjects) Update(ctx context.Context, obj Object) (Object, error) {
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
	doc, err := encodeObject(obj)
	if err != nil {
		return nil, fmt.Errorf("object store: encode %s: %w", k, err)
	}
	rev, err := o.Update(ctx, k, doc, obj.Meta().ResourceVersion)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, doc, rev)
}

// Delete removes an object (compare-and-swap when revision is set) and
// returns its last version.
func (s *EtcdObjects) Delete(ctx context.Context, k resources.Key, revision string) (Object, error) {
	o, err := s.objects(k.Kind)
	if err != nil {
		return nil, err
	}
	doc, err := o.Delete(ctx, k, revision)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, doc.Value, doc.Revision)
}

// Watch lists then watches one kind (see datastore.Datastore.Watch): every
// object as Added, Synced, then changes in order; Error while etcd is
// unreachable or the watched revision was compacted, then the difference
// found by a relist and Synced again. A document that does not decode is
// reported as an Error event naming it.
func (s *EtcdObjects) Watch(ctx context.Context, kind resources.Kind) (ObjectWatcher, error) {
	o, err := s.objects(kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	return watchDocuments(ctx, cancel, o.Watch(ctx), func(ev etcd.ObjectEvent) ObjectEvent {
		return documentEvent(ev.Type, ev.Err, func() (Object, error) { return s.decode(kind, ev.Object, ev.Revision) })
	}), nil
}
