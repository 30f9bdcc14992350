package kubernetes

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// The storage operations on custom resources, shared by the typed
// Datastore methods and Objects. Requests take the caller's context,
// already bounded by reqCtx.

// kindInfo describes how a kind is stored.
type kindInfo struct {
	kind       resources.Kind
	gvr        schema.GroupVersionResource
	namespaced bool
}

func kindOf(kind resources.Kind, plural string, namespaced bool) kindInfo {
	return kindInfo{
		kind:       kind,
		gvr:        schema.GroupVersionResource{Group: resources.Group, Version: resources.Version, Resource: plural},
		namespaced: namespaced,
	}
}

func lookupKind(kind resources.Kind) (kindInfo, error) {
	info, ok := resources.LookupKind(kind)
	if !ok {
		return kindInfo{}, fmt.Errorf("kubernetes: unknown kind %q", kind)
	}
	return kindOf(kind, info.Plural, info.Namespaced), nil
}

// client returns the dynamic client of a kind in namespace ns (all
// namespaces when ns is empty).
func (d *Datastore) client(ki kindInfo, ns string) dynamic.ResourceInterface {
	r := d.dyn.Resource(ki.gvr)
	if ki.namespaced && ns != "" {
		return r.Namespace(ns)
	}
	return r
}

// checkKey checks that k names one object of kind ki.
func checkKey(ki kindInfo, k resources.Key) error {
	if k.Name == "" || (ki.namespaced && k.Namespace == "") || (!ki.namespaced && k.Namespace != "") {
		return fmt.Errorf("kubernetes: %s: invalid key", k)
	}
	return nil
}

// getObject reads the object with key k.
func (d *Datastore) getObject(ctx context.Context, ki kindInfo, k resources.Key) (*unstructured.Unstructured, error) {
	if err := checkKey(ki, k); err != nil {
		return nil, err
	}
	u, err := d.client(ki, k.Namespace).Get(ctx, storedName(k.Name), metav1.GetOptions{})
	if err != nil {
		return nil, mapError("get", k, err)
	}
	if realName(u.GetName(), u.GetAnnotations()) != k.Name {
		// A stored name that only hashes like k's.
		return nil, &datastore.NotFoundError{Key: k}
	}
	return u, nil
}

// list reads every object of a kind, in pages, at one resourceVersion. A
// continuation that expired restarts the list.
func (d *Datastore) list(ctx context.Context, ki kindInfo) ([]unstructured.Unstructured, string, error) {
	for attempt := 0; ; attempt++ {
		var items []unstructured.Unstructured
		opts := metav1.ListOptions{Limit: d.cfg.ListPageSize}
		rev := ""
		for {
			l, err := d.client(ki, "").List(ctx, opts)
			if err != nil {
				if opts.Continue != "" && apierrors.IsResourceExpired(err) && attempt < 3 {
					break
				}
				return nil, "", mapError("list", resources.Key{Kind: ki.kind}, err)
			}
			if rev == "" {
				rev = l.GetResourceVersion()
			}
			items = append(items, l.Items...)
			if opts.Continue = l.GetContinue(); opts.Continue == "" {
				return items, rev, nil
			}
		}
	}
}

// listKeys lists the keys of a kind from the objects' metadata only.
func (d *Datastore) listKeys(ctx context.Context, ki kindInfo) ([]resources.Key, error) {
	var out []resources.Key
	opts := metav1.ListOptions{Limit: d.cfg.ListPageSize}
	for attempt := 0; ; {
		l, err := d.meta.Resource(ki.gvr).List(ctx, opts)
		if err != nil {
			if opts.Continue != "" && apierrors.IsResourceExpired(err) && attempt < 3 {
				attempt++
				out, opts.Continue = out[:0], ""
				continue
			}
			return nil, mapError("list", resources.Key{Kind: ki.kind}, err)
		}
		for _, m := range l.Items {
			out = append(out, resources.Key{Kind: ki.kind, Namespace: m.Namespace, Name: realName(m.Name, m.Annotations)})
		}
		if opts.Continue = l.Continue; opts.Continue == "" {
			return out, nil
		}
	}
}

// createObject creates the object m (a Tabby object as JSON).
func (d *Datastore) createObject(ctx context.Context, ki kindInfo, m map[string]any) (*unstructured.Unstructured, error) {
	k, err := keyOfMap(ki, m)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: forCreate(m, k.Name)}
	out, err := d.client(ki, k.Namespace).Create(ctx, u, metav1.CreateOptions{FieldManager: FieldManager})
	if err != nil {
		return nil, mapError("create", k, err)
	}
	return out, nil
}

// updateObject applies m (a Tabby object as JSON, with the
// resourceVersion it was read at) as a JSON patch conditional on that
// version.
func (d *Datastore) updateObject(ctx context.Context, ki kindInfo, m map[string]any) (*unstructured.Unstructured, error) {
	k, err := keyOfMap(ki, m)
	if err != nil {
		return nil, err
	}
	rv, _, _ := unstructured.NestedString(m, "metadata", "resourceVersion")
	if rv == "" {
		return nil, fmt.Errorf("kubernetes: update %s: resourceVersion is required", k)
	}
	patch, err := updatePatch(m, k.Name, rv)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: encode %s: %w", k, err)
	}
	out, err := d.client(ki, k.Namespace).Patch(ctx, storedName(k.Name), types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
	if err != nil {
		err = mapError("update", k, err)
		if datastore.IsConflict(err) {
			return nil, d.conflict(ctx, ki, k, rv)
		}
		return nil, err
	}
	return out, nil
}

// conflict returns the error of a failed compare-and-swap: a conflict
// naming the current version, or not found when the object is gone.
func (d *Datastore) conflict(ctx context.Context, ki kindInfo, k resources.Key, expected string) error {
	cur, err := d.getObject(ctx, ki, k)
	switch {
	case datastore.IsNotFound(err):
		return err
	case err != nil:
		return &datastore.ConflictError{Key: k, Expected: expected}
	}
	return &datastore.ConflictError{Key: k, Expected: expected, Current: cur.GetResourceVersion()}
}

// deleteObject reads the object and deletes it with its resourceVersion
// as a precondition (which must be revision when that is set), so what it
// returns is exactly what was deleted.
func (d *Datastore) deleteObject(ctx context.Context, ki kindInfo, k resources.Key, revision string) (*unstructured.Unstructured, error) {
	for {
		cur, err := d.getObject(ctx, ki, k)
		if err != nil {
			return nil, err
		}
		rv := cur.GetResourceVersion()
		if revision != "" && rv != revision {
			return nil, &datastore.ConflictError{Key: k, Expected: revision, Current: rv}
		}
		err = d.client(ki, k.Namespace).Delete(ctx, cur.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		if err == nil {
			return cur, nil
		}
		err = mapError("delete", k, err)
		if !datastore.IsConflict(err) {
			return nil, err
		}
		if revision != "" {
			return nil, d.conflict(ctx, ki, k, revision)
		}
		// Changed between the read and the delete: read it again.
	}
}
