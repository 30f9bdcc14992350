package datastore

import (
	"context"
	"fmt"

	"github.com/tabbynet/tabby/control/resources"
)

// Admit defaults and validates obj as every backend's Create and Update do
// before writing. For an IPPool it also checks that no other stored pool
// overlaps it; like Calico's check this reads the pools first and is not
// atomic with the write.
func Admit(ctx context.Context, ds Datastore, obj resources.Resource) error {
	obj.Default()
	if err := obj.Validate(); err != nil {
		return err
	}
	pool, ok := obj.(*resources.IPPool)
	if !ok {
		return nil
	}
	list, err := ds.List(ctx, resources.KindIPPool)
	if err != nil {
		return fmt.Errorf("check pool overlaps: %w", err)
	}
	pools := []*resources.IPPool{pool}
	for _, o := range list.Items {
		if p := o.(*resources.IPPool); p.Name != pool.Name {
			pools = append(pools, p)
		}
	}
	return resources.CheckPoolOverlaps(pools)
}

// kindOf returns the kind of resource type T (a pointer type).
func kindOf[T resources.Resource]() resources.Kind {
	var zero T
	return zero.ResourceKind()
}

// Get returns the cluster-scoped object of type T named name.
func Get[T resources.Resource](ctx context.Context, ds Datastore, name string) (T, error) {
	var zero T
	obj, err := ds.Get(ctx, resources.Key{Kind: kindOf[T](), Name: name})
	if err != nil {
		return zero, err
	}
	return cast[T](obj)
}

// ListOf returns every object of type T and the list's revision.
func ListOf[T resources.Resource](ctx context.Context, ds Datastore) ([]T, string, error) {
	list, err := ds.List(ctx, kindOf[T]())
	if err != nil {
		return nil, "", err
	}
	out := make([]T, 0, len(list.Items))
	for _, o := range list.Items {
		t, err := cast[T](o)
		if err != nil {
			return nil, "", err
		}
		out = append(out, t)
	}
	return out, list.Revision, nil
}

// Create is Datastore.Create returning the object's own type.
func Create[T resources.Resource](ctx context.Context, ds Datastore, obj T) (T, error) {
	var zero T
	out, err := ds.Create(ctx, obj)
	if err != nil {
		return zero, err
	}
	return cast[T](out)
}

// Update is Datastore.Update returning the object's own type.
func Update[T resources.Resource](ctx context.Context, ds Datastore, obj T) (T, error) {
	var zero T
	out, err := ds.Update(ctx, obj)
	if err != nil {
		return zero, err
	}
	return cast[T](out)
}

func cast[T resources.Resource](obj resources.Resource) (T, error) {
	t, ok := obj.(T)
	if !ok {
		var zero T
		return zero, fmt.Errorf("datastore returned %T for kind %s", obj, kindOf[T]())
	}
	return t, nil
}
