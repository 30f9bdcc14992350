package kubernetes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRDs creates, or updates when they exist, the
// CustomResourceDefinitions in manifests (YAML or JSON, any number of
// documents each, such as the files of deploy/crds) and waits until the
// apiserver serves each of them (condition Established).
func (d *Datastore) InstallCRDs(ctx context.Context, manifests ...[]byte) error {
	var names []string
	for _, m := range manifests {
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(m), 4096)
		for {
			var obj map[string]any
			if err := dec.Decode(&obj); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return fmt.Errorf("kubernetes: decode CRD manifest: %w", err)
			}
			if obj == nil {
				continue
			}
			u := &unstructured.Unstructured{Object: obj}
			if u.GetKind() != "CustomResourceDefinition" {
				return fmt.Errorf("kubernetes: manifest holds a %s, not a CustomResourceDefinition", u.GetKind())
			}
			if err := d.applyCRD(ctx, u); err != nil {
				return err
			}
			names = append(names, u.GetName())
		}
	}
	for _, name := range names {
		if err := d.waitEstablished(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func (d *Datastore) applyCRD(ctx context.Context, u *unstructured.Unstructured) error {
	rctx, cancel := d.reqCtx(ctx)
	defer cancel()
	crds := d.dyn.Resource(crdGVR)
	_, err := crds.Create(rctx, u, metav1.CreateOptions{FieldManager: FieldManager})
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("kubernetes: create CRD %s: %w", u.GetName(), err)
		}
		return nil
	}
	for {
		cur, err := crds.Get(rctx, u.GetName(), metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("kubernetes: update CRD %s: %w", u.GetName(), err)
		}
		u.SetResourceVersion(cur.GetResourceVersion())
		_, err = crds.Update(rctx, u, metav1.UpdateOptions{FieldManager: FieldManager})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("kubernetes: update CRD %s: %w", u.GetName(), err)
		}
		return nil
	}
}

// waitEstablished polls a CRD until its Established condition is True.
func (d *Datastore) waitEstablished(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		u, err := d.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("kubernetes: wait for CRD %s: %w", name, err)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubernetes: CRD %s not established: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
