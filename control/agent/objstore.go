package agent

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

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
	Events() <-chan ObjectEvent
	Stop()
}

// ObjectEvent is one watch event of an agent kind; Type is one of
// datastore's event types.
type ObjectEvent struct {
	Type   datastore.EventType
	Object Object
	Err    error
}

// EtcdObjects is the etcd ObjectStore: each object is one key,
// <prefix><plural>/<name> or <prefix><plural>/<namespace>/<name>, holding
// its JSON without resourceVersion (which is the key's mod revision), next
// to the etcd datastore's keys.
type EtcdObjects struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger
	// Timeout applies to requests whose context has no deadline.
	timeout time.Duration
	// probe is how often a watch checks that etcd answers.
	probe time.Duration
}

// NewEtcdObjects returns the store of the agent kinds on cli under prefix
// (the etcd datastore's Prefix()).
func NewEtcdObjects(cli *clientv3.Client, prefix string, probe time.Duration, log *slog.Logger) *EtcdObjects {
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if probe <= 0 {
		probe = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &EtcdObjects{cli: cli, prefix: prefix, log: log, timeout: 10 * time.Second, probe: probe}
}

var _ ObjectStore = (*EtcdObjects)(nil)

func (s *EtcdObjects) kindPrefix(kind resources.Kind) (string, error) {
	info, ok := agentKinds[kind]
	if !ok {
		return "", fmt.Errorf("object store: %s: %w", kind, errNotAgentKind)
	}
	return s.prefix + info.Plural + "/", nil
}

func (s *EtcdObjects) key(k resources.Key) (string, error) {
	p, err := s.kindPrefix(k.Kind)
	if err != nil {
		return "", err
	}
	if k.Name == "" || strings.Contains(k.Name, "/") || strings.Contains(k.Namespace, "/") {
		return "", fmt.Errorf("object store: %s: invalid name", k)
	}
	if agentKinds[k.Kind].Namespaced {
		if k.Namespace == "" {
			return "", fmt.Errorf("object store: %s: namespace required", k)
		}
		return p + k.Namespace + "/" + k.Name, nil
	}
	return p + k.Name, nil
}

func (s *EtcdObjects) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.timeout)
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

// decodeObject decodes a stored object (unknown fields ignored: a newer
// writer may have added some).
func decodeObject(kind resources.Kind, value []byte, modRev int64) (Object, error) {
	obj, err := decodeStored(kind, value)
	if err != nil {
		return nil, err
	}
	obj.Meta().ResourceVersion = strconv.FormatInt(modRev, 10)
	return obj, nil
}

// decodeStored decodes the JSON of a stored object of an agent kind,
// ignoring unknown fields (a newer writer may have added some, and the
// apiserver adds metadata Tabby does not model); apiVersion and kind are
// set, and a stored kind other than kind is an error.
func decodeStored(kind resources.Kind, value []byte) (Object, error) {
	info, ok := agentKinds[kind]
	if !ok {
		return nil, fmt.Errorf("decode %s: %w", kind, errNotAgentKind)
	}
	obj := info.New()
	if err := json.Unmarshal(value, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kind, err)
	}
	if tm := typeMetaOf(obj); tm.Kind != "" && tm.Kind != string(kind) {
		return nil, fmt.Errorf("decode %s: stored kind is %q", kind, tm.Kind)
	}
	setTypeMeta(obj)
	return obj, nil
}

// Get returns one object or a *datastore.NotFoundError.
func (s *EtcdObjects) Get(ctx context.Context, k resources.Key) (Object, error) {
	key, err := s.key(k)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("object store: get %s: %w", k, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, &datastore.NotFoundError{Key: k}
	}
	return decodeObject(k.Kind, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// List returns every object of the kind.
func (s *EtcdObjects) List(ctx context.Context, kind resources.Kind) ([]Object, error) {
	p, err := s.kindPrefix(kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("object store: list %s: %w", kind, err)
	}
	out := make([]Object, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		obj, err := decodeObject(kind, kv.Value, kv.ModRevision)
		if err != nil {
			return nil, fmt.Errorf("object store: %s: %w", kv.Key, err)
		}
		out = append(out, obj)
	}
	return out, nil
}

// admit defaults and validates an object before a write.
func admit(obj Object) error {
	obj.Default()
	return obj.Validate()
}

// Create stores a new object after defaulting and validating it.
func (s *EtcdObjects) Create(ctx context.Context, obj Object) (Object, error) {
	k := KeyOfObject(obj)
	key, err := s.key(k)
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
	val, err := encodeObject(obj)
	if err != nil {
		return nil, fmt.Errorf("object store: encode %s: %w", k, err)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val))).Commit()
	if err != nil {
		return nil, fmt.Errorf("object store: create %s: %w", k, err)
	}
	if !resp.Succeeded {
		return nil, &datastore.AlreadyExistsError{Key: k}
	}
	return decodeObject(k.Kind, val, resp.Header.Revision)
}

// Update replaces an object whose resourceVersion is current.
func (s *EtcdObjects) Update(ctx context.Context, obj Object) (Object, error) {
	k := KeyOfObject(obj)
	key, err := s.key(k)
	if err != nil {
		return nil, err
	}
	rev, err := strconv.ParseInt(obj.Meta().ResourceVersion, 10, 64)
	if err != nil || rev <= 0 {
		return nil, fmt.Errorf("object store: update %s: invalid resourceVersion %q", k, obj.Meta().ResourceVersion)
	}
	if err := admit(obj); err != nil {
		return nil, err
	}
	val, err := encodeObject(obj)
	if err != nil {
		return nil, fmt.Errorf("object store: encode %s: %w", k, err)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(val))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return nil, fmt.Errorf("object store: update %s: %w", k, err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil, &datastore.NotFoundError{Key: k}
		}
		return nil, &datastore.ConflictError{Key: k, Expected: obj.Meta().ResourceVersion,
			Current: strconv.FormatInt(kvs[0].ModRevision, 10)}
	}
	return decodeObject(k.Kind, val, resp.Header.Revision)
}

// Delete removes an object (compare-and-swap when revision is set).
func (s *EtcdObjects) Delete(ctx context.Context, k resources.Key, revision string) (Object, error) {
	key, err := s.key(k)
	if err != nil {
		return nil, err
	}
	cmp := clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
	if revision != "" {
		rev, err := strconv.ParseInt(revision, 10, 64)
		if err != nil || rev <= 0 {
			return nil, fmt.Errorf("object store: delete %s: invalid resourceVersion %q", k, revision)
		}
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", rev)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpDelete(key, clientv3.WithPrevKV())).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return nil, fmt.Errorf("object store: delete %s: %w", k, err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil, &datastore.NotFoundError{Key: k}
		}
		return nil, &datastore.ConflictError{Key: k, Expected: revision, Current: strconv.FormatInt(kvs[0].ModRevision, 10)}
	}
	prev := resp.Responses[0].GetResponseDeleteRange().PrevKvs
	if len(prev) == 0 {
		return nil, &datastore.NotFoundError{Key: k}
	}
	return decodeObject(k.Kind, prev[0].Value, prev[0].ModRevision)
}

// Watch lists then watches one kind (see datastore.Datastore.Watch).
func (s *EtcdObjects) Watch(ctx context.Context, kind resources.Kind) (ObjectWatcher, error) {
	p, err := s.kindPrefix(kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &objWatcher{s: s, kind: kind, prefix: p, ctx: ctx, cancel: cancel,
		events: make(chan ObjectEvent, 64), done: make(chan struct{}), known: map[string]knownKV{}}
	go w.run()
	return w, nil
}

type knownKV struct {
	rev   int64
	value []byte
}

// objWatcher is one watch; its goroutine owns known and rev.
type objWatcher struct {
	s      *EtcdObjects
	kind   resources.Kind
	prefix string
	ctx    context.Context
	cancel context.CancelFunc
	events chan ObjectEvent
	done   chan struct{}
	known  map[string]knownKV
	rev    int64
}

func (w *objWatcher) Events() <-chan ObjectEvent { return w.events }

func (w *objWatcher) Stop() {
	w.cancel()
	<-w.done
}

func (w *objWatcher) send(ev ObjectEvent) bool {
	select {
	case w.events <- ev:
		return true
	case <-w.ctx.Done():
		return false
	}
}

func (w *objWatcher) run() {
	defer close(w.done)
	defer close(w.events)
	wait, maxWait := 100*time.Millisecond, 10*time.Second
	sleep := func() bool {
		d := wait/2 + rand.N(wait/2+1)
		wait = min(2*wait, maxWait)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-w.ctx.Done():
			return false
		}
	}
	for w.ctx.Err() == nil {
		if err := w.relist(); err != nil {
			if w.ctx.Err() != nil {
				return
			}
			w.s.log.Warn("object watch: list failed", "kind", w.kind, "err", err)
			if !w.send(ObjectEvent{Type: datastore.Error, Err: err}) || !sleep() {
				return
			}
			continue
		}
		start := time.Now()
		err := w.follow()
		if w.ctx.Err() != nil {
			return
		}
		if time.Since(start) > maxWait {
			wait = 100 * time.Millisecond
		}
		w.s.log.Warn("object watch: broken, will relist", "kind", w.kind, "err", err)
		if !w.send(ObjectEvent{Type: datastore.Error, Err: err}) || !sleep() {
			return
		}
	}
}

// relist reads the kind and reports the difference from known, then Synced.
func (w *objWatcher) relist() error {
	ctx, cancel := w.s.ctx(w.ctx)
	defer cancel()
	resp, err := w.s.cli.Get(ctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("object store: list %s: %w", w.kind, err)
	}
	seen := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		seen[key] = true
		old, had := w.known[key]
		if had && old.rev == kv.ModRevision {
			continue
		}
		typ := datastore.Added
		if had {
			typ = datastore.Modified
		}
		if !w.report(typ, key, kv.Value, kv.ModRevision) {
			return w.ctx.Err()
		}
	}
	for key, old := range w.known {
		// A deletion is reported at the list's revision: it happened
		// after every version this watch reported.
		if !seen[key] && !w.report(datastore.Deleted, key, old.value, resp.Header.Revision) {
			return w.ctx.Err()
		}
	}
	w.rev = resp.Header.Revision
	if !w.send(ObjectEvent{Type: datastore.Synced}) {
		return w.ctx.Err()
	}
	return nil
}

func (w *objWatcher) report(typ datastore.EventType, key string, value []byte, rev int64) bool {
	if typ == datastore.Deleted {
		delete(w.known, key)
	} else {
		w.known[key] = knownKV{rev: rev, value: value}
	}
	obj, err := decodeObject(w.kind, value, rev)
	if err != nil {
		return w.send(ObjectEvent{Type: datastore.Error, Err: fmt.Errorf("object store: %s: %w", key, err)})
	}
	return w.send(ObjectEvent{Type: typ, Object: obj})
}

// follow watches changes after w.rev until the watch breaks; a probe
// cancels it when etcd stops answering (the client would otherwise wait
// silently for the connection to return).
func (w *objWatcher) follow() error {
	ctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(w.ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(w.s.probe)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, w.s.probe)
			_, err := w.s.cli.Get(pctx, w.prefix, clientv3.WithCountOnly())
			pcancel()
			if err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("object store: watch %s: probe failed: %w", w.kind, err))
				return
			}
		}
	})
	defer func() {
		cancel(nil)
		wg.Wait()
	}()
	for resp := range w.s.cli.Watch(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(w.rev+1)) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("object store: watch %s: %w", w.kind, err)
		}
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			ok := true
			if ev.Type == mvccpb.DELETE {
				if old, had := w.known[key]; had {
					ok = w.report(datastore.Deleted, key, old.value, ev.Kv.ModRevision)
				}
			} else {
				typ := datastore.Modified
				if _, had := w.known[key]; !had {
					typ = datastore.Added
				}
				ok = w.report(typ, key, ev.Kv.Value, ev.Kv.ModRevision)
			}
			if !ok {
				return w.ctx.Err()
			}
			w.rev = ev.Kv.ModRevision
		}
	}
	if cause := context.Cause(ctx); cause != nil && w.ctx.Err() == nil {
		return cause
	}
	return errors.New("object store: watch channel closed")
}
