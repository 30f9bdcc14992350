package etcd

import (
	"context"
	"fmt"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// Objects stores the objects of one kind that package resources does not
// define (the agent's AgentConfiguration, Tier, NetworkPolicy,
// GlobalNetworkPolicy, WorkloadEndpoint) as documents next to the
// Datastore's own keys, <prefix><plural>/<name> or
// <prefix><plural>/<namespace>/<name>, with the Datastore's semantics: a
// document's revision is the mod revision of its key, Update and Delete
// compare it, errors are the typed errors of package datastore, and Watch
// is Datastore.Watch's list-then-watch (probe, back-off, relist and
// report the difference after a lost connection or a compaction).
//
// A document is stored as given and returned as stored: Objects neither
// parses, defaults nor validates it, and does not put the revision into
// it; its callers do (agent.EtcdObjects). Objects is safe for concurrent
// use.
type Objects struct {
	d          *Datastore
	kind       resources.Kind
	prefix     string
	namespaced bool
}

// Objects returns the store of kind, under <prefix><plural>/. plural must
// not be the plural of a kind of package resources (their keys would
// mix).
func (d *Datastore) Objects(kind resources.Kind, plural string, namespaced bool) *Objects {
	return &Objects{d: d, kind: kind, prefix: d.cfg.Prefix + plural + "/", namespaced: namespaced}
}

// Document is a stored document and its revision, the object's
// resourceVersion.
type Document struct {
	Value    []byte
	Revision string
}

// ObjectList is the result of Objects.List.
type ObjectList struct {
	Items []Document
	// Revision is the revision the list was read at.
	Revision string
}

// ObjectEvent and ObjectWatcher are the document watch's types, shared by
// the backends (package datastore).
type (
	ObjectEvent   = datastore.DocumentEvent
	ObjectWatcher = datastore.DocumentWatcher
)

// key returns the etcd key of k: a namespaced kind needs a namespace, and
// a cluster-scoped kind's key has none whatever k says.
func (o *Objects) key(k resources.Key) (string, error) {
	if k.Kind != o.kind {
		return "", fmt.Errorf("etcd: %s: not a %s", k, o.kind)
	}
	if !o.namespaced {
		k.Namespace = ""
	} else if k.Namespace == "" {
		return "", fmt.Errorf("etcd: %s: namespace required", k)
	}
	return joinKey(o.prefix, k)
}

// Get returns the document with key k (a *datastore.NotFoundError when
// there is none).
func (o *Objects) Get(ctx context.Context, k resources.Key) (Document, error) {
	key, err := o.key(k)
	if err != nil {
		return Document{}, err
	}
	kv, err := o.d.getKV(ctx, k, key)
	if err != nil {
		return Document{}, err
	}
	return Document{Value: kv.Value, Revision: formatRev(kv.ModRevision)}, nil
}

// List returns every document of the kind.
func (o *Objects) List(ctx context.Context) (*ObjectList, error) {
	resp, err := o.d.listKVs(ctx, o.kind, o.prefix)
	if err != nil {
		return nil, err
	}
	out := &ObjectList{Items: make([]Document, 0, len(resp.Kvs)), Revision: formatRev(resp.Header.Revision)}
	for _, kv := range resp.Kvs {
		out.Items = append(out.Items, Document{Value: kv.Value, Revision: formatRev(kv.ModRevision)})
	}
	return out, nil
}

// Create stores doc as the new object with key k and returns its
// revision; it fails with a *datastore.AlreadyExistsError if the key is
// taken.
func (o *Objects) Create(ctx context.Context, k resources.Key, doc []byte) (string, error) {
	key, err := o.key(k)
	if err != nil {
		return "", err
	}
	rev, err := o.d.createKV(ctx, k, key, doc)
	if err != nil {
		return "", err
	}
	return formatRev(rev), nil
}

// Update replaces the document with key k if its revision is revision (a
// *datastore.ConflictError otherwise, a *datastore.NotFoundError when it
// is gone) and returns the new revision.
func (o *Objects) Update(ctx context.Context, k resources.Key, doc []byte, revision string) (string, error) {
	key, err := o.key(k)
	if err != nil {
		return "", err
	}
	rev, err := o.d.updateKV(ctx, k, key, doc, revision)
	if err != nil {
		return "", err
	}
	return formatRev(rev), nil
}

// Delete removes the document with key k (if its revision is revision,
// when set) and returns its last version.
func (o *Objects) Delete(ctx context.Context, k resources.Key, revision string) (Document, error) {
	key, err := o.key(k)
	if err != nil {
		return Document{}, err
	}
	kv, err := o.d.deleteKV(ctx, k, key, revision)
	if err != nil {
		return Document{}, err
	}
	return Document{Value: kv.Value, Revision: formatRev(kv.ModRevision)}, nil
}

// Watch lists and then watches the documents of the kind as
// Datastore.Watch does: every document as Added, Synced, then changes in
// order; Error while the cluster is unreachable or the watched revision
// was compacted, then the difference found by a relist and Synced again.
// Events are closed when ctx ends, on Stop, and on Datastore.Close.
func (o *Objects) Watch(ctx context.Context) ObjectWatcher {
	w := newWatcher(ctx, o.d, o.kind, o.prefix,
		func(typ datastore.EventType, _ string, value []byte, rev int64) ObjectEvent {
			return ObjectEvent{Type: typ, Object: value, Revision: formatRev(rev)}
		},
		func(typ datastore.EventType, rev string, err error) ObjectEvent {
			return ObjectEvent{Type: typ, Revision: rev, Err: err}
		})
	go w.run()
	return w
}
