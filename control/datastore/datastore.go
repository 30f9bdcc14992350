// Package datastore is the interface between Tabby's control plane and where
// its resources live. Two backends implement it: etcd v3 (package
// datastore/etcd: an external cluster or an embedded single-member server)
// and, later, Kubernetes (CRDs for Tabby's kinds, informers for the
// cluster's own objects).
//
// The model is Kubernetes': typed objects (package resources) identified by
// kind, namespace and name; every object returned carries an opaque
// metadata.resourceVersion; Update and Delete compare it with the stored
// one and fail with a *ConflictError when it is stale (optimistic
// concurrency, a compare-and-swap on one object). There are no
// multi-object transactions, so IPAM and everything else are written to be
// correct with single-object compare-and-swap.
//
// Watch is a list-then-watch (an informer without the cache): it reports
// every existing object as Added, then Synced, then changes. When the
// backend loses its watch (the datastore is unreachable, the watched
// revision was compacted) it reports Error, keeps retrying with back-off,
// relists when it can, reports the difference from what it had reported
// (Added, Modified, Deleted), then Synced again. A consumer that applies
// the events in order therefore converges on the datastore's state without
// restarting.
//
// Every method honours its context's deadline; a backend applies a default
// request timeout when the context has none, so an unreachable datastore
// returns an error promptly instead of hanging.
package datastore

import (
	"context"
	"errors"
	"fmt"

	"github.com/tabbynet/tabby/control/resources"
)

// Datastore stores Tabby's resources. Implementations are safe for
// concurrent use. Objects passed in are not retained; objects returned
// belong to the caller.
type Datastore interface {
	// Get returns the object with key k, or a *NotFoundError.
	Get(ctx context.Context, k resources.Key) (resources.Resource, error)
	// List returns every object of the kind and the revision the list was
	// read at (which a Watch may start from).
	List(ctx context.Context, kind resources.Kind) (*List, error)
	// ListKeys returns the key of every object of the kind, without
	// reading the objects.
	ListKeys(ctx context.Context, kind resources.Kind) ([]resources.Key, error)
	// Create stores a new object after defaulting and validating it. It
	// fails with an *AlreadyExistsError if the key is taken. The returned
	// object carries the new resourceVersion, UID and creation time.
	Create(ctx context.Context, obj resources.Resource) (resources.Resource, error)
	// Update replaces an existing object after defaulting and validating
	// it, if obj's resourceVersion is the stored one (compare-and-swap): a
	// stale version fails with a *ConflictError, a missing object with a
	// *NotFoundError. The resourceVersion is required.
	Update(ctx context.Context, obj resources.Resource) (resources.Resource, error)
	// Delete removes the object with key k. With a non-empty revision it is
	// a compare-and-swap (a *ConflictError when stale). A missing object is
	// a *NotFoundError. It returns the object as it was.
	Delete(ctx context.Context, k resources.Key, revision string) (resources.Resource, error)
	// Watch lists and then watches one kind until ctx is done or Stop is
	// called (see the package documentation).
	Watch(ctx context.Context, kind resources.Kind, opts WatchOptions) (Watcher, error)
	// Close ends every Watch (their Events are closed) and releases the
	// backend's connections. It does not stop an embedded server the
	// backend did not start.
	Close() error
}

// List is the result of Datastore.List.
type List struct {
	Items []resources.Resource
	// Revision is the datastore revision the list was read at.
	Revision string
}

// WatchOptions modify a Watch.
type WatchOptions struct {
	// From is a list of the kind the consumer already holds (from List).
	// The watch then starts with Synced and reports the changes after the
	// list's revision instead of listing first; if that revision is no
	// longer available (compacted), it relists and reports the difference
	// from From.
	From *List
}

// Watcher delivers the events of one Watch.
type Watcher interface {
	// Events delivers events in order; it is closed after Stop or when the
	// Watch's context is done.
	Events() <-chan Event
	// Stop ends the watch and closes Events. It may be called more than
	// once and from any goroutine.
	Stop()
}

// EventType says what happened.
type EventType int

// Event types.
const (
	// Added: an object appeared (or was reported by the initial list).
	Added EventType = iota + 1
	// Modified: an object changed.
	Modified
	// Deleted: an object went away; Object is its last known state.
	Deleted
	// Synced: every object that existed at Revision has been reported; the
	// consumer's view is complete and current (ready).
	Synced
	// Error: the watch broke (Err says why) and the watcher is retrying;
	// the consumer's view may be stale (not ready) until the next Synced.
	Error
)

func (t EventType) String() string {
	switch t {
	case Added:
		return "Added"
	case Modified:
		return "Modified"
	case Deleted:
		return "Deleted"
	case Synced:
		return "Synced"
	case Error:
		return "Error"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// DocumentEvent is one event of a backend's watch of raw documents (the
// etcd and Kubernetes backends' Objects stores, for kinds this package does
// not define), with Event's meaning: Object is the document and Revision
// its revision (for Deleted, the revision of the deletion and the last
// document); Err is set for Error.
type DocumentEvent struct {
	Type     EventType
	Object   []byte
	Revision string
	Err      error
}

// DocumentWatcher delivers the events of one document watch.
type DocumentWatcher interface {
	// Events delivers events in order; it is closed after Stop, when the
	// watch's context is done, or when the backend is closed.
	Events() <-chan DocumentEvent
	// Stop ends the watch and closes Events.
	Stop()
}

// Event is one watch event.
type Event struct {
	Type EventType
	// Object is set for Added, Modified and Deleted; it belongs to the
	// receiver.
	Object resources.Resource
	// Revision is the datastore revision of the event (for Synced, of the
	// list).
	Revision string
	// Err is set for Error.
	Err error
}

// Sentinel errors, matched with errors.Is by the typed errors below.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrConflict      = errors.New("resource version conflict")
)

// NotFoundError: the object does not exist.
type NotFoundError struct{ Key resources.Key }

func (e *NotFoundError) Error() string { return e.Key.String() + ": not found" }

// Is matches ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// AlreadyExistsError: Create found the key taken.
type AlreadyExistsError struct{ Key resources.Key }

func (e *AlreadyExistsError) Error() string { return e.Key.String() + ": already exists" }

// Is matches ErrAlreadyExists.
func (e *AlreadyExistsError) Is(target error) bool { return target == ErrAlreadyExists }

// ConflictError: Update or Delete was given a resourceVersion that is no
// longer the stored one.
type ConflictError struct {
	Key resources.Key
	// Expected is the resourceVersion the caller gave; Current is the
	// stored one (empty when the backend did not read it).
	Expected, Current string
}

func (e *ConflictError) Error() string {
	if e.Current == "" {
		return fmt.Sprintf("%s: resourceVersion %s is stale", e.Key, e.Expected)
	}
	return fmt.Sprintf("%s: resourceVersion %s is stale (current %s)", e.Key, e.Expected, e.Current)
}

// Is matches ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// IsNotFound reports whether err is or wraps a not-found error.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err is or wraps an already-exists error.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// IsConflict reports whether err is or wraps a conflict error.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// Transactor is implemented by backends that can change several objects
// in one atomic step (etcd; not Kubernetes). Users check for it and fall
// back to one compare-and-swap per object without it.
type Transactor interface {
	// Commit applies every op or none. When an op's condition fails, no
	// op is applied and the error is that op's *AlreadyExistsError,
	// *ConflictError or *NotFoundError (the first failing one in ops
	// order). On success it returns, in ops order, the created and updated
	// objects (the Op's own objects, with their new resourceVersion) and
	// nil for deletes.
	Commit(ctx context.Context, ops ...Op) ([]resources.Resource, error)
}

// OpType is what an Op does.
type OpType int

// Op types, with the same conditions as the Datastore methods.
const (
	// OpCreate creates Object; it fails if the key exists.
	OpCreate OpType = iota + 1
	// OpUpdate replaces Object if its resourceVersion is current.
	OpUpdate
	// OpDelete deletes Key, if Revision is current when it is set; it
	// fails if the key does not exist.
	OpDelete
)

// Op is one change of a Transactor.Commit.
type Op struct {
	Type     OpType
	Object   resources.Resource // OpCreate, OpUpdate
	Key      resources.Key      // OpDelete
	Revision string             // OpDelete (optional)
}
