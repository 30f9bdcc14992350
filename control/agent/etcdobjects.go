package agent

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
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
	documentObjects
}

var _ ObjectStore = (*EtcdObjects)(nil)

// NewEtcdObjects returns the store of the agent kinds on ds.
func NewEtcdObjects(ds *etcd.Datastore) *EtcdObjects {
	s := &EtcdObjects{documentObjects{
		stores: map[resources.Kind]kindDocuments{},
		// The key's mod revision is the resourceVersion.
		decoded: func(obj Object, revision string) { obj.Meta().ResourceVersion = revision },
	}}
	for _, info := range agentKinds {
		s.stores[info.Kind] = etcdDocuments{ds.Objects(info.Kind, info.Plural, info.Namespaced)}
	}
	return s
}

// etcdDocuments is one kind's keys: documents without resourceVersion,
// which travels beside them as the key's mod revision.
type etcdDocuments struct{ o *etcd.Objects }

func (d etcdDocuments) get(ctx context.Context, k resources.Key) ([]byte, string, error) {
	doc, err := d.o.Get(ctx, k)
	return doc.Value, doc.Revision, err
}

func (d etcdDocuments) list(ctx context.Context) ([][]byte, []string, error) {
	l, err := d.o.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	docs, revs := make([][]byte, len(l.Items)), make([]string, len(l.Items))
	for i, doc := range l.Items {
		docs[i], revs[i] = doc.Value, doc.Revision
	}
	return docs, revs, nil
}

// create gives the object a fresh uid and creationTimestamp (what the
// apiserver does on Kubernetes).
func (d etcdDocuments) create(ctx context.Context, k resources.Key, obj Object) ([]byte, string, error) {
	m := obj.Meta()
	var uid [16]byte
	crand.Read(uid[:])
	m.UID = hex.EncodeToString(uid[:])
	m.CreationTimestamp = time.Now().UTC().Format(time.RFC3339)
	doc, err := encodeFor(k, obj, false)
	if err != nil {
		return nil, "", err
	}
	rev, err := d.o.Create(ctx, k, doc)
	return doc, rev, err
}

func (d etcdDocuments) update(ctx context.Context, k resources.Key, obj Object) ([]byte, string, error) {
	doc, err := encodeFor(k, obj, false)
	if err != nil {
		return nil, "", err
	}
	rev, err := d.o.Update(ctx, k, doc, obj.Meta().ResourceVersion)
	return doc, rev, err
}

func (d etcdDocuments) delete(ctx context.Context, k resources.Key, revision string) ([]byte, string, error) {
	doc, err := d.o.Delete(ctx, k, revision)
	return doc.Value, doc.Revision, err
}

func (d etcdDocuments) watch(ctx context.Context) (datastore.DocumentWatcher, error) {
	return d.o.Watch(ctx), nil
}
