package kubernetes

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

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
func toMap(obj resources.Resource) (map[string]any, error) {
	b, err := resources.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: encode %s: %w", resources.KeyOf(obj), err)
	}
	return parseObject(b)
}

// parseObject parses a JSON object with Kubernetes' number handling.
func parseObject(b []byte) (map[string]any, error) {
	var m map[string]any
	if err := utiljson.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("kubernetes: decode object: %w", err)
	}
	if m == nil {
		return nil, fmt.Errorf("kubernetes: decode object: not a JSON object")
	}
	return m, nil
}

// metadataOf returns m's metadata, adding an empty one if it has none.
func metadataOf(m map[string]any) map[string]any {
	meta, _ := m["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		m["metadata"] = meta
	}
	return meta
}

// keyOfMap returns the key of the object m of kind ki, checking its
// apiVersion and kind when set.
func keyOfMap(ki kindInfo, m map[string]any) (resources.Key, error) {
	meta := metadataOf(m)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	k := resources.Key{Kind: ki.kind, Namespace: ns, Name: name}
	if v, ok := m["apiVersion"]; ok && v != resources.APIVersion {
		return k, fmt.Errorf("kubernetes: %s: apiVersion %v is not %s", k, v, resources.APIVersion)
	}
	if v, ok := m["kind"]; ok && v != string(ki.kind) {
		return k, fmt.Errorf("kubernetes: %s: object of kind %v", k, v)
	}
	return k, checkKey(ki, k)
}

// storedAnnotations returns an object's annotations as stored: with
// NameAnnotation when its name is hashed.
func storedAnnotations(meta map[string]any, name string) map[string]any {
	in, _ := meta["annotations"].(map[string]any)
	out := make(map[string]any, len(in)+1)
	for k, v := range in {
		out[k] = v
	}
	if storedName(name) != name {
		out[NameAnnotation] = name
	} else {
		delete(out, NameAnnotation)
	}
	return out
}

// forCreate turns m (a Tabby object as JSON) into the custom resource to
// create: stored name, without the fields the apiserver sets.
func forCreate(m map[string]any, name string) map[string]any {
	meta := metadataOf(m)
	delete(meta, "resourceVersion")
	delete(meta, "uid")
	delete(meta, "creationTimestamp")
	meta["name"] = storedName(name)
	if a := storedAnnotations(meta, name); len(a) > 0 {
		meta["annotations"] = a
	} else {
		delete(meta, "annotations")
	}
	return m
}

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// updatePatch returns the JSON patch of an Update of m: the caller's
// resourceVersion (the apiserver's precondition), labels, annotations and
// every top-level field but apiVersion, kind and metadata (spec).
func updatePatch(m map[string]any, name, rv string) ([]byte, error) {
	meta := metadataOf(m)
	labels, _ := meta["labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
	}
	ops := []patchOp{
		{"add", "/metadata/resourceVersion", rv},
		{"add", "/metadata/labels", labels},
		{"add", "/metadata/annotations", storedAnnotations(meta, name)},
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		switch k {
		case "apiVersion", "kind", "metadata":
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ops = append(ops, patchOp{"add", "/" + jsonPointerEscape(k), m[k]})
	}
	return json.Marshal(ops)
}

// jsonPointerEscape escapes a key for a JSON pointer (RFC 6901).
func jsonPointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
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

// rawOf returns a stored custom resource as the JSON of the Tabby object:
// its real name, without NameAnnotation. With rv set, its
// resourceVersion is replaced.
func rawOf(u *unstructured.Unstructured, rv string) ([]byte, error) {
	m := make(map[string]any, len(u.Object))
	for k, v := range u.Object {
		m[k] = v
	}
	meta := make(map[string]any)
	if in, ok := u.Object["metadata"].(map[string]any); ok {
		for k, v := range in {
			meta[k] = v
		}
	}
	m["metadata"] = meta
	meta["name"] = realName(u.GetName(), u.GetAnnotations())
	if a, ok := meta["annotations"].(map[string]any); ok {
		if _, hashed := a[NameAnnotation]; hashed {
			c := make(map[string]any, len(a))
			for k, v := range a {
				if k != NameAnnotation {
					c[k] = v
				}
			}
			if len(c) == 0 {
				delete(meta, "annotations")
			} else {
				meta["annotations"] = c
			}
		}
	}
	if rv != "" {
		meta["resourceVersion"] = rv
	}
	return json.Marshal(m)
}
