package etcd

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// watcher is one list-then-watch of the keys under prefix, delivering
// events of type E (datastore.Event for Datastore.Watch, ObjectEvent for
// Objects.Watch). Its goroutine (run) owns known and rev; events is the
// only way out.
type watcher[E any] struct {
	d      *Datastore
	kind   resources.Kind
	prefix string
	events chan E
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// known is what has been reported: key → mod revision and stored value
	// (decoded again for a Deleted event found by a relist).
	known map[string]knownObject
	// rev is the revision known reflects; the watch resumes after it.
	rev int64
	// primed is set when known and rev are valid without a list.
	primed bool

	// object makes the event of a stored value at its revision (for
	// Deleted, the revision of the deletion); it makes an Error event
	// instead when the value does not decode.
	object func(typ datastore.EventType, key string, value []byte, rev int64) E
	// status makes a Synced or Error event; rev is empty for Error.
	status func(typ datastore.EventType, rev string, err error) E
}

type knownObject struct {
	modRev int64
	value  []byte
}

// ErrProbeFailed wraps the error of a failed liveness probe of a watch.
var ErrProbeFailed = errors.New("datastore probe failed")

// Watch lists and then watches every object of the kind (see package
// datastore). It fails only for an unknown kind or an invalid
// opts.From; an unreachable cluster is reported as Error events while the
// watcher retries.
func (d *Datastore) Watch(ctx context.Context, kind resources.Kind, opts datastore.WatchOptions) (datastore.Watcher, error) {
	prefix, err := d.kindPrefix(kind)
	if err != nil {
		return nil, err
	}
	w := newWatcher(ctx, d, kind, prefix,
		func(typ datastore.EventType, key string, value []byte, rev int64) datastore.Event {
			obj, err := decode(kind, key, value, rev)
			if err != nil {
				return datastore.Event{Type: datastore.Error, Err: err, Revision: formatRev(rev)}
			}
			return datastore.Event{Type: typ, Object: obj, Revision: formatRev(rev)}
		},
		func(typ datastore.EventType, rev string, err error) datastore.Event {
			return datastore.Event{Type: typ, Revision: rev, Err: err}
		})
	if from := opts.From; from != nil {
		rev, err := strconv.ParseInt(from.Revision, 10, 64)
		if err != nil || rev <= 0 {
			w.cancel()
			return nil, fmt.Errorf("etcd: watch %s: invalid list revision %q", kind, from.Revision)
		}
		for _, obj := range from.Items {
			if obj.ResourceKind() != kind {
				w.cancel()
				return nil, fmt.Errorf("etcd: watch %s: list holds a %s", kind, obj.ResourceKind())
			}
			k := resources.KeyOf(obj)
			key, err := d.key(k)
			if err != nil {
				w.cancel()
				return nil, err
			}
			modRev, err := parseRev(k, obj.Meta().ResourceVersion)
			if err != nil {
				w.cancel()
				return nil, err
			}
			val, err := encode(obj)
			if err != nil {
				w.cancel()
				return nil, err
			}
			w.known[key] = knownObject{modRev: modRev, value: val}
		}
		w.rev, w.primed = rev, true
	}
	go w.run()
	return w, nil
}

// newWatcher returns a watch of the keys under prefix, which hold
// objects of kind; run starts it.
func newWatcher[E any](ctx context.Context, d *Datastore, kind resources.Kind, prefix string,
	object func(datastore.EventType, string, []byte, int64) E, status func(datastore.EventType, string, error) E) *watcher[E] {
	ctx, cancel := context.WithCancel(ctx)
	// Close ends the watch too; cancel releases that link.
	unlink := context.AfterFunc(d.closed, cancel)
	return &watcher[E]{
		d: d, kind: kind, prefix: prefix,
		events: make(chan E, 64),
		ctx:    ctx, cancel: func() { unlink(); cancel() },
		done:   make(chan struct{}),
		known:  map[string]knownObject{},
		object: object,
		status: status,
	}
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

func (w *watcher[E]) run() {
	defer close(w.done)
	defer close(w.events)
	defer w.cancel()
	bo := datastore.Backoff{Initial: w.d.cfg.BackoffInitial, Max: w.d.cfg.BackoffMax}
	needList := !w.primed
	if w.primed && !w.send(w.status(datastore.Synced, formatRev(w.rev), nil)) {
		return
	}
	for w.ctx.Err() == nil {
		if needList {
			if err := w.relist(); err != nil {
				if w.ctx.Err() != nil {
					return
				}
				w.d.log.Warn("watch: list failed", "kind", w.kind, "err", err)
				if !w.send(w.status(datastore.Error, "", err)) || !bo.Sleep(w.ctx) {
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
		w.d.log.Warn("watch: broken, will relist", "kind", w.kind, "revision", w.rev, "err", err)
		if !w.send(w.status(datastore.Error, "", err)) {
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
	resp, err := w.d.cli.Get(ctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("etcd: list %s: %w", w.kind, err)
	}
	seen := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		seen[key] = true
		old, had := w.known[key]
		if had && old.modRev == kv.ModRevision {
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
		if seen[key] {
			continue
		}
		if !w.report(datastore.Deleted, key, old.value, resp.Header.Revision) {
			return w.ctx.Err()
		}
	}
	w.rev = resp.Header.Revision
	w.d.log.Debug("watch: listed", "kind", w.kind, "objects", len(resp.Kvs), "revision", w.rev)
	if !w.send(w.status(datastore.Synced, formatRev(w.rev), nil)) {
		return w.ctx.Err()
	}
	return nil
}

// report updates known and sends one object event. An object that does
// not decode is reported as an Error event instead (and stays known, so it
// is not reported again until it changes). It returns false when the watch
// is stopped.
func (w *watcher[E]) report(typ datastore.EventType, key string, value []byte, rev int64) bool {
	if typ == datastore.Deleted {
		delete(w.known, key)
	} else {
		w.known[key] = knownObject{modRev: rev, value: value}
	}
	return w.send(w.object(typ, key, value, rev))
}

// watch follows changes after w.rev until the watch fails (compaction,
// cancellation, a failed probe); it returns why.
func (w *watcher[E]) watch() error {
	ctx, stop := datastore.WithProbe(clientv3.WithRequireLeader(w.ctx), w.d.cfg.ProbeInterval, w.probe, func(err error) error {
		return fmt.Errorf("etcd: watch %s: %w: %w", w.kind, ErrProbeFailed, err)
	})
	defer stop()
	ch := w.d.cli.Watch(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(w.rev+1))
	for resp := range ch {
		if err := resp.Err(); err != nil {
			if resp.CompactRevision != 0 {
				return fmt.Errorf("etcd: watch %s from revision %d: %w (compacted to %d)", w.kind, w.rev+1, err, resp.CompactRevision)
			}
			return fmt.Errorf("etcd: watch %s: %w", w.kind, err)
		}
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			var ok bool
			switch ev.Type {
			case mvccpb.DELETE:
				old, had := w.known[key]
				if !had {
					w.rev = ev.Kv.ModRevision
					continue
				}
				ok = w.report(datastore.Deleted, key, old.value, ev.Kv.ModRevision)
			default:
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
	return fmt.Errorf("etcd: watch %s: channel closed", w.kind)
}

// probe checks that the cluster answers, for datastore.WithProbe: a
// linearizable read, so a member without a leader fails it too. A
// client's watch stream would otherwise wait silently for the connection
// to come back.
func (w *watcher[E]) probe(ctx context.Context) error {
	_, err := w.d.cli.Get(ctx, w.prefix, clientv3.WithCountOnly())
	return err
}
