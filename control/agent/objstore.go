package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// ObjectStore stores the agent kinds (see KindInfo) with the semantics of
// datastore.Datastore: resourceVersion compare-and-swap on Update and
// Delete, *datastore.NotFoundError / AlreadyExistsError / ConflictError,
// and a list-then-watch that reports Error while the store is unreachable
// and relists (reporting the difference) when it is back.
type ObjectStore interface {
	Get(ctx context.Context, k resources.Key) (Object, error)
	List(ctx context.Context, kind resources.Kind) ([]Object, error)
	Create(ctx context.Context, obj Object) (Object, error)
	Update(ctx context.Context, obj Object) (Object, error)
	Delete(ctx context.Context, k resources.Key, revision string) (Object, error)
	Watch(ctx context.Context, kind resources.Kind) (ObjectWatcher, error)
}

// ObjectWatcher delivers the events of one ObjectStore.Watch.
type ObjectWatcher interface {
	// Events delivers events in order; it is closed after Stop.
	Events() <-chan ObjectEvent
	// Stop ends the watch; Events is closed when it returns.
	Stop()
}

// ObjectEvent is one watch event of an agent kind; Type is one of
// datastore's event types.
type ObjectEvent struct {
	Type   datastore.EventType
	Object Object
	Err    error
}

// encodeObject returns the stored form: JSON with apiVersion and kind,
// without resourceVersion.
func encodeObject(obj Object) ([]byte, error) {
	m := obj.Meta()
	rv := m.ResourceVersion
	m.ResourceVersion = ""
	defer func() { m.ResourceVersion = rv }()
	setTypeMeta(obj)
	return json.Marshal(obj)
}

func setTypeMeta(obj Object) {
	if tm := typeMetaOf(obj); tm != nil {
		tm.APIVersion, tm.Kind = resources.APIVersion, string(obj.ObjectKind())
	}
}

func typeMetaOf(obj Object) *resources.TypeMeta {
	switch o := obj.(type) {
	case *AgentConfiguration:
		return &o.TypeMeta
	case *Tier:
		return &o.TypeMeta
	case *NetworkPolicy:
		return &o.TypeMeta
	case *GlobalNetworkPolicy:
		return &o.TypeMeta
	case *WorkloadEndpoint:
		return &o.TypeMeta
	}
	return nil
}

// decodeStored decodes the JSON of a stored object of an agent kind,
// ignoring unknown fields (a newer writer may have added some, and the
// apiserver adds metadata Tabby does not model); apiVersion and kind are
// set, and a stored kind other than kind is an error. Errors name the
// object when the document says which it is.
func decodeStored(kind resources.Kind, doc []byte) (Object, error) {
	obj, err := decodeKind(kind, doc)
	if err == nil {
		return obj, nil
	}
	var m struct {
		resources.ObjectMeta `json:"metadata"`
	}
	if jsonErr := json.Unmarshal(doc, &m); jsonErr == nil && m.Name != "" {
		k := resources.Key{Kind: kind, Namespace: m.Namespace, Name: m.Name}
		return nil, fmt.Errorf("object store: %s: %w", k, err)
	}
	return nil, fmt.Errorf("object store: %w", err)
}

// decodeKind is decodeStored without the name in its errors.
func decodeKind(kind resources.Kind, doc []byte) (Object, error) {
	info, ok := agentKinds[kind]
	if !ok {
		return nil, fmt.Errorf("decode %s: %w", kind, errNotAgentKind)
	}
	obj := info.New()
	if err := json.Unmarshal(doc, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kind, err)
	}
	if tm := typeMetaOf(obj); tm.Kind != "" && tm.Kind != string(kind) {
		return nil, fmt.Errorf("decode %s: stored kind is %q", kind, tm.Kind)
	}
	setTypeMeta(obj)
	return obj, nil
}

// admit defaults and validates an object before a write.
func admit(obj Object) error {
	obj.Default()
	return obj.Validate()
}

// documentEvent is the ObjectEvent of a backend's document event: for
// Added, Modified and Deleted the document decoded by decode (an Error
// event naming the object when it does not decode); Synced and Error as
// they are.
func documentEvent(typ datastore.EventType, err error, decode func() (Object, error)) ObjectEvent {
	switch typ {
	case datastore.Added, datastore.Modified, datastore.Deleted:
		obj, err := decode()
		if err != nil {
			return ObjectEvent{Type: datastore.Error, Err: err}
		}
		return ObjectEvent{Type: typ, Object: obj}
	}
	return ObjectEvent{Type: typ, Err: err}
}

// documentWatcher turns a backend's document watch into ObjectEvents
// (with event); its goroutine (run) is the only sender on events.
type documentWatcher struct {
	inner  datastore.DocumentWatcher
	event  func(datastore.DocumentEvent) ObjectEvent
	ctx    context.Context
	cancel context.CancelFunc
	events chan ObjectEvent
	done   chan struct{}
	once   sync.Once
}

// watchDocuments starts a documentWatcher over inner, whose watch runs
// under ctx; cancel ends ctx.
func watchDocuments(ctx context.Context, cancel context.CancelFunc, inner datastore.DocumentWatcher, event func(datastore.DocumentEvent) ObjectEvent) *documentWatcher {
	w := &documentWatcher{inner: inner, event: event, ctx: ctx, cancel: cancel,
		events: make(chan ObjectEvent, 64), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *documentWatcher) Events() <-chan ObjectEvent { return w.events }

// Stop ends the watch; Events is closed when it returns.
func (w *documentWatcher) Stop() {
	w.once.Do(func() {
		w.cancel()
		w.inner.Stop()
	})
	<-w.done
}

func (w *documentWatcher) run() {
	defer close(w.done)
	defer close(w.events)
	for ev := range w.inner.Events() {
		select {
		case w.events <- w.event(ev):
		case <-w.ctx.Done():
			return
		}
	}
}

// kindDocuments is one kind's documents in a backend's document store:
// the part of an ObjectStore that differs between etcd and Kubernetes.
// Writes take the admitted object and encode it as the backend stores it.
// A revision returned with a document is the backend's version of it when
// the document does not carry its own (etcd's mod revision); "" otherwise.
type kindDocuments interface {
	get(ctx context.Context, k resources.Key) (doc []byte, revision string, err error)
	list(ctx context.Context) (docs [][]byte, revisions []string, err error)
	create(ctx context.Context, k resources.Key, obj Object) (doc []byte, revision string, err error)
	update(ctx context.Context, k resources.Key, obj Object) (doc []byte, revision string, err error)
	delete(ctx context.Context, k resources.Key, revision string) (doc []byte, docRevision string, err error)
	watch(ctx context.Context) (datastore.DocumentWatcher, error)
}

// documentObjects is the ObjectStore over the agent kinds' document
// backends: kind routing, admission before writes, decoding (errors name
// the object) and the watch, shared by EtcdObjects and KubernetesObjects.
type documentObjects struct {
	stores map[resources.Kind]kindDocuments
	// unavailable refuses a kind with ErrKindUnavailable and the reason.
	unavailable map[resources.Kind]string
	// decoded finishes an object read back with the revision its backend
	// returned with it (the document as the backend keeps it otherwise).
	decoded func(obj Object, revision string)
}

func (s *documentObjects) objects(kind resources.Kind) (kindDocuments, error) {
	if why, ok := s.unavailable[kind]; ok {
		return nil, fmt.Errorf("%s: %w: %s", kind, ErrKindUnavailable, why)
	}
	o, ok := s.stores[kind]
	if !ok {
		return nil, fmt.Errorf("object store: %s: %w", kind, errNotAgentKind)
	}
	return o, nil
}

func (s *documentObjects) decode(kind resources.Kind, doc []byte, revision string) (Object, error) {
	obj, err := decodeStored(kind, doc)
	if err != nil {
		return nil, err
	}
	s.decoded(obj, revision)
	return obj, nil
}

// encodeFor encodes an object for a write to k; withVersion keeps its
// resourceVersion in the document (the apiserver's compare-and-swap).
func encodeFor(k resources.Key, obj Object, withVersion bool) ([]byte, error) {
	var doc []byte
	var err error
	if withVersion {
		doc, err = Marshal(obj)
	} else {
		doc, err = encodeObject(obj)
	}
	if err != nil {
		return nil, fmt.Errorf("object store: encode %s: %w", k, err)
	}
	return doc, nil
}

// Get returns one object or a *datastore.NotFoundError.
func (s *documentObjects) Get(ctx context.Context, k resources.Key) (Object, error) {
	o, err := s.objects(k.Kind)
	if err != nil {
		return nil, err
	}
	doc, rev, err := o.get(ctx, k)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, doc, rev)
}

// List returns every object of the kind.
func (s *documentObjects) List(ctx context.Context, kind resources.Kind) ([]Object, error) {
	o, err := s.objects(kind)
	if err != nil {
		return nil, err
	}
	docs, revs, err := o.list(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Object, 0, len(docs))
	for i, doc := range docs {
		obj, err := s.decode(kind, doc, revs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
	return out, nil
}

// Create stores a new object after defaulting and validating it; it fails
// with a *datastore.AlreadyExistsError if the key is taken.
func (s *documentObjects) Create(ctx context.Context, obj Object) (Object, error) {
	k := KeyOfObject(obj)
	o, err := s.objects(k.Kind)
	if err != nil {
		return nil, err
	}
	if err := admit(obj); err != nil {
		return nil, err
	}
	doc, rev, err := o.create(ctx, k, obj)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, doc, rev)
}

// Update replaces an object whose resourceVersion is current (a
// *datastore.ConflictError otherwise, a *datastore.NotFoundError when it
// is gone).
func (s *documentObjects) Update(ctx context.Context, obj Object) (Object, error) {
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
	doc, rev, err := o.update(ctx, k, obj)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, doc, rev)
}

// Delete removes an object (compare-and-swap when revision is set) and
// returns its last version.
func (s *documentObjects) Delete(ctx context.Context, k resources.Key, revision string) (Object, error) {
	o, err := s.objects(k.Kind)
	if err != nil {
		return nil, err
	}
	doc, rev, err := o.delete(ctx, k, revision)
	if err != nil {
		return nil, err
	}
	return s.decode(k.Kind, doc, rev)
}

// Watch lists then watches one kind (see datastore.Datastore.Watch): every
// object as Added, Synced, then changes in order; Error while the backend
// is unreachable or the watched revision is gone, then the difference
// found by a relist and Synced again. A document that does not decode is
// reported as an Error event naming it.
func (s *documentObjects) Watch(ctx context.Context, kind resources.Kind) (ObjectWatcher, error) {
	o, err := s.objects(kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	inner, err := o.watch(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return watchDocuments(ctx, cancel, inner, func(ev datastore.DocumentEvent) ObjectEvent {
		return documentEvent(ev.Type, ev.Err, func() (Object, error) { return s.decode(kind, ev.Object, ev.Revision) })
	}), nil
}
