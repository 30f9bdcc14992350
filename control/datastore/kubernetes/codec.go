package kubernetes

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// NameAnnotation holds the real name of an object stored under a hashed
// name (see storedName).
const NameAnnotation = "tabby.dev/name"

// hashedNamePrefix starts every hashed name.
const hashedNamePrefix = "tabby-"

// storedName returns the Kubernetes name of an object named name: name
// itself when it is a DNS-1123 subdomain, else "tabby-" and 40 hex digits
// of its SHA-256.
func storedName(name string) string {
	if len(validation.IsDNS1123Subdomain(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return hashedNamePrefix + hex.EncodeToString(sum[:20])
}

// realName returns the Tabby name of a stored object.
func realName(stored string, annotations map[string]string) string {
	if n, ok := annotations[NameAnnotation]; ok && n != "" && storedName(n) == stored {
		return n
	}
	return stored
}

// decode turns a stored custom resource into an object of kind.
func decode(kind resources.Kind, u *unstructured.Unstructured) (resources.Resource, error) {
	b, err := json.Marshal(u.Object)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: encode %s %q: %w", kind, u.GetName(), err)
	}
	return decodeJSON(kind, b)
}

func decodeJSON(kind resources.Kind, b []byte) (resources.Resource, error) {
	obj, err := resources.DecodeJSON(kind, b)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	m := obj.Meta()
	m.Name = realName(m.Name, m.Annotations)
	delete(m.Annotations, NameAnnotation)
	if len(m.Annotations) == 0 {
		m.Annotations = nil
	}
	if len(m.Labels) == 0 {
		m.Labels = nil
	}
	return obj, nil
}

// toMap marshals obj into a JSON object with Kubernetes' number handling
// (integers stay int64).
func toMap(obj resources.Resource) (map[string]any, map[string]any, error) {
	b, err := resources.Marshal(obj)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes: encode %s: %w", resources.KeyOf(obj), err)
	}
	var m map[string]any
	if err := utiljson.Unmarshal(b, &m); err != nil {
		return nil, nil, fmt.Errorf("kubernetes: encode %s: %w", resources.KeyOf(obj), err)
	}
	meta, _ := m["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		m["metadata"] = meta
	}
	return m, meta, nil
}

// storedAnnotations returns obj's annotations as stored: with
// NameAnnotation when the name is hashed.
func storedAnnotations(m *resources.ObjectMeta) map[string]any {
	out := make(map[string]any, len(m.Annotations)+1)
	for k, v := range m.Annotations {
		out[k] = v
	}
	if storedName(m.Name) != m.Name {
		out[NameAnnotation] = m.Name
	}
	return out
}

// encodeForCreate returns the custom resource to create for obj: without
// the fields the apiserver sets.
func encodeForCreate(obj resources.Resource) (*unstructured.Unstructured, error) {
	m, meta, err := toMap(obj)
	if err != nil {
		return nil, err
	}
	om := obj.Meta()
	delete(meta, "resourceVersion")
	delete(meta, "uid")
	delete(meta, "creationTimestamp")
	meta["name"] = storedName(om.Name)
	if a := storedAnnotations(om); len(a) > 0 {
		meta["annotations"] = a
	}
	return &unstructured.Unstructured{Object: m}, nil
}

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// encodeUpdatePatch returns the JSON patch of an Update: the caller's
// resourceVersion (the apiserver's precondition), labels, annotations and
// every top-level field but apiVersion, kind and metadata (spec).
func encodeUpdatePatch(obj resources.Resource) ([]byte, error) {
	m, _, err := toMap(obj)
	if err != nil {
		return nil, err
	}
	om := obj.Meta()
	labels := make(map[string]any, len(om.Labels))
	for k, v := range om.Labels {
		labels[k] = v
	}
	ops := []patchOp{
		{"add", "/metadata/resourceVersion", om.ResourceVersion},
		{"add", "/metadata/labels", labels},
		{"add", "/metadata/annotations", storedAnnotations(om)},
	}
	for k, v := range m {
		switch k {
		case "apiVersion", "kind", "metadata":
			continue
		}
		ops = append(ops, patchOp{"add", "/" + k, v})
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: encode %s: %w", resources.KeyOf(obj), err)
	}
	return b, nil
}

// target names what a request was about: a key, or a kind.
func target(k resources.Key) string {
	if k.Name == "" {
		return string(k.Kind)
	}
	return k.String()
}

// mapError turns an apiserver error into the datastore's typed errors.
// Conflicts come back without versions; callers fill them in.
func mapError(op string, k resources.Key, err error) error {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return fmt.Errorf("kubernetes: %s %s: %w", op, target(k), err)
	}
	s := status.Status()
	switch {
	case apierrors.IsNotFound(err):
		if s.Details == nil || s.Details.Name == "" {
			return fmt.Errorf("kubernetes: %s %s: %w: %w", op, target(k), ErrNoCRD, err)
		}
		return &datastore.NotFoundError{Key: k}
	case apierrors.IsAlreadyExists(err):
		return &datastore.AlreadyExistsError{Key: k}
	case apierrors.IsConflict(err):
		return &datastore.ConflictError{Key: k}
	case apierrors.IsInvalid(err):
		ve := &resources.ValidationError{Key: k}
		if s.Details != nil {
			for _, c := range s.Details.Causes {
				ve.Fields = append(ve.Fields, &resources.FieldError{Field: c.Field, Msg: c.Message})
			}
		}
		if len(ve.Fields) == 0 {
			ve.Fields = []*resources.FieldError{{Field: "", Msg: s.Message}}
		}
		return ve
	}
	return fmt.Errorf("kubernetes: %s %s: %w", op, target(k), err)
}
