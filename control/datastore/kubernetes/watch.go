package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// Errors reported in the Error events of a Watch, matched with errors.Is.
var (
	// ErrExpired: the version the watch resumed from is no longer
	// available (410 Gone); the watch relists.
	ErrExpired = errors.New("watched resourceVersion expired")
	// ErrProbeFailed: the liveness probe of a running watch failed.
	ErrProbeFailed = errors.New("apiserver probe failed")
)

// watcher is one list-then-watch of a kind, delivering events of type E
// (datastore.Event for Datastore.Watch, ObjectEvent for Objects.Watch).
// Its goroutine (run) owns known and rev; events is the only way out.
type watcher[E any] struct {
	d      *Datastore
	ki     kindInfo
	events chan E
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// known is what has been reported: resourceVersion and stored JSON
	// (turned into an event again for a Deleted event found by a relist).
	known map[resources.Key]knownObject
	// rev is the resourceVersion known reflects; the watch resumes from it.
	rev string
	// primed is set when known and rev are valid without a list.
	primed bool

	// object makes the event of an object from its stored JSON; for
	// Deleted, rv is the version of the deletion. It makes an Error event
	// instead when the object does not decode.
	object func(typ datastore.EventType, raw []byte, rv string) E
	// status makes a Synced or Error event.
	status func(typ datastore.EventType, rv string, err error) E
}

type knownObject struct {
	rv  string
	raw []byte
}

// Watch lists and then watches every object of the kind (see package
// datastore). It fails only for an unknown kind or an invalid opts.From;
// an unreachable apiserver is reported as Error events while the watcher
// retries.
func (d *Datastore) Watch(ctx context.Context, kind resources.Kind, opts datastore.WatchOptions) (datastore.Watcher, error) {
	ki, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	w := newWatcher(d, ki,
		func(typ datastore.EventType, raw []byte, rv string) datastore.Event {
			obj, err := decodeJSON(kind, raw)
			if err != nil {
				return datastore.Event{Type: datastore.Error, Err: err, Revision: rv}
			}
			if typ == datastore.Deleted {
				obj.Meta().ResourceVersion = rv
			}
			return datastore.Event{Type: typ, Object: obj, Revision: rv}
		},
		func(typ datastore.EventType, rv string, err error) datastore.Event {
			return datastore.Event{Type: typ, Revision: rv, Err: err}
		})
	if from := opts.From; from != nil {
		if from.Revision == "" {
			return nil, fmt.Errorf("kubernetes: watch %s: list has no revision", kind)
		}
		for _, obj := range from.Items {
			if obj.ResourceKind() != kind {
				return nil, fmt.Errorf("kubernetes: watch %s: list holds a %s", kind, obj.ResourceKind())
			}
			raw, err := resources.Marshal(obj)
			if err != nil {
				return nil, fmt.Errorf("kubernetes: watch %s: %w", kind, err)
			}
			w.known[resources.KeyOf(obj)] = knownObject{rv: obj.Meta().ResourceVersion, raw: raw}
		}
		w.rev, w.primed = from.Revision, true
	}
	w.start(ctx)
	return w, nil
}

func newWatcher[E any](d *Datastore, ki kindInfo, object func(datastore.EventType, []byte, string) E, status func(datastore.EventType, string, error) E) *watcher[E] {
	return &watcher[E]{
		d: d, ki: ki,
		events: make(chan E, 64),
		done:   make(chan struct{}),
		known:  map[resources.Key]knownObject{},
		object: object,
		status: status,
	}
}

// start runs the watch until ctx ends, Stop or Close.
func (w *watcher[E]) start(ctx context.Context) {
	w.ctx, w.cancel = context.WithCancel(ctx)
	stop := context.AfterFunc(w.d.ctx, w.cancel)
	go func() {
		defer stop()
		w.run()
	}()
}

func (w *watcher[E]) Events() <-chan E { return w.events }

// Stop cancels the watch and waits for its goroutine to finish.
func (w *watcher[E]) Stop() {
	w.cancel()
	<-w.done
}

// send delivers ev unless the watch is stopped.
func (w *watcher[E]) send(ev E) bool {
	select {
	case w.events <- ev:
		return true
	case <-w.ctx.Done():
		return false
	}
}

func (w *watcher[E]) sendStatus(typ datastore.EventType, rv string, err error) bool {
	return w.send(w.status(typ, rv, err))
}

func (w *watcher[E]) run() {
	defer close(w.done)
	defer close(w.events)
	cfg := &w.d.cfg
	bo := datastore.Backoff{Initial: cfg.BackoffInitial, Max: cfg.BackoffMax}
	needList := !w.primed
	if w.primed && !w.sendStatus(datastore.Synced, w.rev, nil) {
		return
	}
	for w.ctx.Err() == nil {
		if needList {
			if err := w.relist(); err != nil {
				if w.ctx.Err() != nil {
					return
				}
				w.d.log.Warn("watch: list failed", "kind", w.ki.kind, "err", err)
				if !w.sendStatus(datastore.Error, "", err) || !bo.Sleep(w.ctx) {
					return
				}
				continue
			}
			needList = false
		}
		start := time.Now()
		err := w.watch()
		if w.ctx.Err() != nil {
			return
		}
		// A watch that ran for a while starts its back-off afresh.
		if time.Since(start) > bo.Max {
			bo.Reset()
		}
		if err == nil {
			// The server ended the watch (its timeout, or the connection
			// closed): resume from rev; a resume that fails relists. Pause
			// if it ended at once, so a server that keeps doing so is not
			// hammered.
			if time.Since(start) < time.Second && !bo.Sleep(w.ctx) {
				return
			}
			continue
		}
		w.d.log.Warn("watch: broken, will relist", "kind", w.ki.kind, "revision", w.rev, "err", err)
		if !w.sendStatus(datastore.Error, "", err) {
			return
		}
		needList = true
		if !bo.Sleep(w.ctx) {
			return
		}
	}
}

// relist reads the kind, reports the difference from known, then Synced.
func (w *watcher[E]) relist() error {
	ctx, cancel := w.d.reqCtx(w.ctx)
	defer cancel()
	items, rev, err := w.d.list(ctx, w.ki)
	if err != nil {
		return err
	}
	seen := make(map[resources.Key]bool, len(items))
	for i := range items {
		u := &items[i]
		k := w.key(u)
		seen[k] = true
		old, had := w.known[k]
		if had && old.rv == u.GetResourceVersion() {
			continue
		}
		typ := datastore.Added
		if had {
			typ = datastore.Modified
		}
		if !w.reportObject(typ, k, u) {
			return w.ctx.Err()
		}
	}
	for k, old := range w.known {
		if seen[k] {
			continue
		}
		delete(w.known, k)
		if !w.send(w.object(datastore.Deleted, old.raw, rev)) {
			return w.ctx.Err()
		}
	}
	w.rev = rev
	w.d.log.Debug("watch: listed", "kind", w.ki.kind, "objects", len(items), "revision", rev)
	if !w.sendStatus(datastore.Synced, rev, nil) {
		return w.ctx.Err()
	}
	return nil
}

func (w *watcher[E]) key(u *unstructured.Unstructured) resources.Key {
	return resources.Key{Kind: w.ki.kind, Namespace: u.GetNamespace(), Name: realName(u.GetName(), u.GetAnnotations())}
}

// reportObject updates known with u and sends its event (an object that
// does not decode is reported as an Error event instead, and stays known,
// so it is not reported again until it changes). It returns false when
// the watch is stopped.
func (w *watcher[E]) reportObject(typ datastore.EventType, k resources.Key, u *unstructured.Unstructured) bool {
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return w.sendStatus(datastore.Error, "", fmt.Errorf("kubernetes: encode %s: %w", k, err))
	}
	rv := u.GetResourceVersion()
	if typ == datastore.Deleted {
		delete(w.known, k)
	} else {
		w.known[k] = knownObject{rv: rv, raw: raw}
	}
	return w.send(w.object(typ, raw, rv))
}

// watch follows changes from w.rev. It returns nil when the server ended
// the watch, or why it failed.
func (w *watcher[E]) watch() error {
	ctx, stop := datastore.WithProbe(w.ctx, w.d.cfg.ProbeInterval, w.probe, func(err error) error {
		return fmt.Errorf("kubernetes: watch %s: %w: %w", w.ki.kind, ErrProbeFailed, err)
	})
	defer stop()
	// Jitter the server's timeout so that watches do not all resume at
	// once.
	timeout := int64(w.d.cfg.WatchTimeout/time.Second) * int64(100+rand.IntN(50)) / 100
	wi, err := w.d.client(w.ki, "").Watch(ctx, metav1.ListOptions{
		ResourceVersion:     w.rev,
		AllowWatchBookmarks: true,
		TimeoutSeconds:      &timeout,
	})
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && w.ctx.Err() == nil {
			return cause
		}
		return w.watchError(err)
	}
	defer wi.Stop()
	for {
		var ev watch.Event
		var ok bool
		select {
		case ev, ok = <-wi.ResultChan():
		case <-ctx.Done():
			if cause := context.Cause(ctx); cause != nil && w.ctx.Err() == nil {
				return cause
			}
			return nil
		}
		if !ok {
			if cause := context.Cause(ctx); cause != nil && w.ctx.Err() == nil {
				return cause
			}
			return nil
		}
		switch ev.Type {
		case watch.Error:
			return w.watchError(apierrors.FromObject(ev.Object))
		case watch.Bookmark:
			if u, ok := ev.Object.(*unstructured.Unstructured); ok && u.GetResourceVersion() != "" {
				w.rev = u.GetResourceVersion()
			}
		case watch.Added, watch.Modified, watch.Deleted:
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				return fmt.Errorf("kubernetes: watch %s: unexpected %T", w.ki.kind, ev.Object)
			}
			k := w.key(u)
			rv := u.GetResourceVersion()
			old, had := w.known[k]
			var sent bool
			switch {
			case ev.Type == watch.Deleted && !had:
				sent = true
			case ev.Type == watch.Deleted:
				sent = w.reportObject(datastore.Deleted, k, u)
			case had && old.rv == rv:
				sent = true
			case had:
				sent = w.reportObject(datastore.Modified, k, u)
			default:
				sent = w.reportObject(datastore.Added, k, u)
			}
			if !sent {
				return nil
			}
			w.rev = rv
		}
	}
}

// watchError wraps the error that ended a watch; an expired version
// matches ErrExpired.
func (w *watcher[E]) watchError(err error) error {
	if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return fmt.Errorf("kubernetes: watch %s from resourceVersion %s: %w: %w", w.ki.kind, w.rev, ErrExpired, err)
	}
	return mapError("watch", resources.Key{Kind: w.ki.kind}, err)
}

// probe checks that the apiserver answers a read of the kind, for
// datastore.WithProbe: a watch on a dead connection would otherwise wait
// for the transport to notice.
func (w *watcher[E]) probe(ctx context.Context) error {
	_, err := w.d.meta.Resource(w.ki.gvr).List(ctx, metav1.ListOptions{Limit: 1})
	return err
}
