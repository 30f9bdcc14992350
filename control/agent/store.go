package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// ErrKindUnavailable: the backend in use does not store an agent kind
// (WorkloadEndpoint with the Kubernetes datastore, whose pods are the
// endpoints; every agent kind with a Store without Objects).
var ErrKindUnavailable = errors.New("kind not available with this datastore")

// Store gives one view of every kind: the kinds of package resources go to
// the datastore, the agent kinds to the ObjectStore. It is what the CLI and
// the agent's own writes use.
type Store struct {
	DS      datastore.Datastore
	Objects ObjectStore // nil: agent kinds are unavailable
}

func (s *Store) objects(k resources.Kind) (ObjectStore, error) {
	if s.Objects == nil {
		return nil, fmt.Errorf("%s: %w", k, ErrKindUnavailable)
	}
	return s.Objects, nil
}

// Get returns the object with key k.
func (s *Store) Get(ctx context.Context, k resources.Key) (Object, error) {
	if _, ok := agentKinds[k.Kind]; ok {
		os, err := s.objects(k.Kind)
		if err != nil {
			return nil, err
		}
		return os.Get(ctx, k)
	}
	r, err := s.DS.Get(ctx, k)
	if err != nil {
		return nil, err
	}
	return Wrap(r), nil
}

// List returns every object of a kind, sorted by namespace and name.
func (s *Store) List(ctx context.Context, kind resources.Kind) ([]Object, error) {
	var out []Object
	if _, ok := agentKinds[kind]; ok {
		os, err := s.objects(kind)
		if err != nil {
			return nil, err
		}
		if out, err = os.List(ctx, kind); err != nil {
			return nil, err
		}
	} else {
		l, err := s.DS.List(ctx, kind)
		if err != nil {
			return nil, err
		}
		for _, r := range l.Items {
			out = append(out, Wrap(r))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Meta(), out[j].Meta()
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out, nil
}

// Create stores a new object.
func (s *Store) Create(ctx context.Context, obj Object) (Object, error) {
	return s.write(ctx, obj, datastore.Datastore.Create, ObjectStore.Create)
}

// Update replaces an object (compare-and-swap on its resourceVersion).
func (s *Store) Update(ctx context.Context, obj Object) (Object, error) {
	return s.write(ctx, obj, datastore.Datastore.Update, ObjectStore.Update)
}

// write hands obj to the store of its kind: inDS (a method expression, so
// that a nil DS is not touched for an agent kind) for a kind of package
// resources, inObjects for an agent kind.
func (s *Store) write(ctx context.Context, obj Object,
	inDS func(datastore.Datastore, context.Context, resources.Resource) (resources.Resource, error),
	inObjects func(ObjectStore, context.Context, Object) (Object, error)) (Object, error) {
	if r := Unwrap(obj); r != nil {
		out, err := inDS(s.DS, ctx, r)
		if err != nil {
			return nil, err
		}
		return Wrap(out), nil
	}
	os, err := s.objects(obj.ObjectKind())
	if err != nil {
		return nil, err
	}
	return inObjects(os, ctx, obj)
}

// Delete removes the object with key k (compare-and-swap when revision is
// set).
func (s *Store) Delete(ctx context.Context, k resources.Key, revision string) (Object, error) {
	if _, ok := agentKinds[k.Kind]; ok {
		os, err := s.objects(k.Kind)
		if err != nil {
			return nil, err
		}
		return os.Delete(ctx, k, revision)
	}
	r, err := s.DS.Delete(ctx, k, revision)
	if err != nil {
		return nil, err
	}
	return Wrap(r), nil
}

// Apply creates obj or, if it exists, replaces it with obj (taking the
// stored resourceVersion unless obj carries one; a concurrent change is
// retried a few times). It reports whether it created the object. For an
// IPPool it also checks that no other pool overlaps.
func (s *Store) Apply(ctx context.Context, obj Object) (Object, bool, error) {
	if r := Unwrap(obj); r != nil {
		if err := datastore.Admit(ctx, s.DS, r); err != nil {
			return nil, false, err
		}
	}
	pinned := obj.Meta().ResourceVersion != ""
	for range 5 {
		if !pinned {
			cur, err := s.Get(ctx, KeyOfObject(obj))
			switch {
			case datastore.IsNotFound(err):
				out, err := s.Create(ctx, obj)
				if datastore.IsAlreadyExists(err) {
					continue
				}
				return out, err == nil, err
			case err != nil:
				return nil, false, err
			}
			m, cm := obj.Meta(), cur.Meta()
			m.ResourceVersion, m.UID, m.CreationTimestamp = cm.ResourceVersion, cm.UID, cm.CreationTimestamp
		}
		out, err := s.Update(ctx, obj)
		if datastore.IsConflict(err) && !pinned {
			continue
		}
		return out, false, err
	}
	return nil, false, fmt.Errorf("apply %s: too many conflicting updates", KeyOfObject(obj))
}
