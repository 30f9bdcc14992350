package kubernetes

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

func TestStoredName(t *testing.T) {
	tests := []struct {
		name   string
		hashed bool
	}{
		{"pool-a", false},
		{"k8s-pod-network.0123abcdef", false},
		{"node-a-10-0-0-0-26", false},
		{"Container_ID", true},
		{"UPPER", true},
		{"a_b", true},
		{"-leading", true},
		{strings.Repeat("a", 254), true},
		{"tabby-0000", false}, // looks hashed, is not
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := storedName(tt.name)
			if (s != tt.name) != tt.hashed {
				t.Fatalf("storedName(%q) = %q", tt.name, s)
			}
			if errs := validation.IsDNS1123Subdomain(s); len(errs) > 0 {
				t.Fatalf("%q is no Kubernetes name: %v", s, errs)
			}
			if s != storedName(tt.name) {
				t.Fatal("not deterministic")
			}
			if prev, dup := seen[s]; dup {
				t.Fatalf("%q and %q both stored as %q", prev, tt.name, s)
			}
			seen[s] = tt.name
			var ann map[string]string
			if tt.hashed {
				if !strings.HasPrefix(s, hashedNamePrefix) || len(s) != len(hashedNamePrefix)+40 {
					t.Fatalf("hashed name %q", s)
				}
				ann = map[string]string{NameAnnotation: tt.name}
			}
			if got := realName(s, ann); got != tt.name {
				t.Fatalf("realName = %q", got)
			}
		})
	}
	// An annotation that does not hash to the stored name is ignored.
	if got := realName("pool-a", map[string]string{NameAnnotation: "Other"}); got != "pool-a" {
		t.Fatalf("realName with a foreign annotation = %q", got)
	}
}

func handle(id string) *resources.IPAMHandle {
	return &resources.IPAMHandle{
		ObjectMeta: resources.ObjectMeta{Name: id, ResourceVersion: "42", UID: "u-1", CreationTimestamp: "2025-01-01T00:00:00Z",
			Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"note": "x"}},
		Spec: resources.IPAMHandleSpec{HandleID: id, Block: map[string]int{"10.0.0.0/26": 2}},
	}
}

func encodeForCreate(h *resources.IPAMHandle) (*unstructured.Unstructured, error) {
	m, err := toMap(h)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: forCreate(m, h.Name)}, nil
}

func TestEncodeForCreate(t *testing.T) {
	u, err := encodeForCreate(handle("Pod_1"))
	if err != nil {
		t.Fatal(err)
	}
	if u.GetAPIVersion() != resources.APIVersion || u.GetKind() != "IPAMHandle" || u.GetName() != storedName("Pod_1") ||
		u.GetResourceVersion() != "" || u.GetUID() != "" || u.Object["metadata"].(map[string]any)["creationTimestamp"] != nil {
		t.Fatalf("metadata %v", u.Object["metadata"])
	}
	if a := u.GetAnnotations(); a[NameAnnotation] != "Pod_1" || a["note"] != "x" || len(a) != 2 {
		t.Fatalf("annotations %v", a)
	}
	// Integers stay integers.
	if n, _, _ := unstructured.NestedInt64(u.Object, "spec", "block", "10.0.0.0/26"); n != 2 {
		t.Fatalf("spec %v", u.Object["spec"])
	}
	u, err = encodeForCreate(handle("plain"))
	if err != nil {
		t.Fatal(err)
	}
	if u.GetName() != "plain" || u.GetAnnotations()[NameAnnotation] != "" {
		t.Fatalf("plain name stored as %q %v", u.GetName(), u.GetAnnotations())
	}
}

func TestEncodeUpdatePatch(t *testing.T) {
	h := handle("Pod_1")
	h.Labels = nil
	m, err := toMap(h)
	if err != nil {
		t.Fatal(err)
	}
	b, err := updatePatch(m, h.Name, h.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	var ops []patchOp
	if err := json.Unmarshal(b, &ops); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, op := range ops {
		if op.Op != "add" {
			t.Fatalf("op %+v", op)
		}
		v, _ := json.Marshal(op.Value)
		got[op.Path] = string(v)
	}
	want := map[string]string{
		"/metadata/resourceVersion": `"42"`,
		"/metadata/labels":          `{}`,
		"/metadata/annotations":     `{"note":"x","tabby.dev/name":"Pod_1"}`,
		"/spec":                     `{"block":{"10.0.0.0/26":2},"handleID":"Pod_1"}`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("patch\n got %v\nwant %v", got, want)
	}
	// A name that needs no hashing drops a stale annotation.
	m["metadata"].(map[string]any)["annotations"] = map[string]any{NameAnnotation: "x"}
	b, _ = updatePatch(m, "plain", "1")
	if strings.Contains(string(b), NameAnnotation) {
		t.Fatalf("patch %s", b)
	}
}

func TestRawOf(t *testing.T) {
	u, err := encodeForCreate(handle("Pod_1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := rawOf(u, "99")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Metadata struct {
			Name            string            `json:"name"`
			ResourceVersion string            `json:"resourceVersion"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Metadata.Name != "Pod_1" || got.Metadata.ResourceVersion != "99" || fmt.Sprint(got.Metadata.Annotations) != "map[note:x]" {
		t.Fatalf("raw %s", b)
	}
	// The stored object is not changed.
	if u.GetName() == "Pod_1" || u.GetAnnotations()[NameAnnotation] != "Pod_1" {
		t.Fatalf("rawOf changed its input: %v", u.Object["metadata"])
	}
}

func TestKeyOfMap(t *testing.T) {
	ki := kindOf("NetworkPolicy", "networkpolicies", true)
	tests := []struct {
		doc string
		ok  bool
	}{
		{`{"apiVersion":"tabby.dev/v1","kind":"NetworkPolicy","metadata":{"name":"a","namespace":"ns"}}`, true},
		{`{"metadata":{"name":"a","namespace":"ns"}}`, true},
		{`{"apiVersion":"tabby.dev/v1","kind":"NetworkPolicy","metadata":{"name":"a"}}`, false},
		{`{"apiVersion":"v1","kind":"NetworkPolicy","metadata":{"name":"a","namespace":"ns"}}`, false},
		{`{"apiVersion":"tabby.dev/v1","kind":"Tier","metadata":{"name":"a","namespace":"ns"}}`, false},
		{`{"metadata":{"namespace":"ns"}}`, false},
	}
	for _, tt := range tests {
		m, err := parseObject([]byte(tt.doc))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keyOfMap(ki, m); (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.doc, err)
		}
	}
	if _, err := parseObject([]byte(`[1]`)); err == nil {
		t.Error("parsed an array as an object")
	}
}

func TestDecode(t *testing.T) {
	stored := `{"apiVersion":"tabby.dev/v1","kind":"IPAMHandle","metadata":{"name":"` + storedName("Pod_1") + `",
		"resourceVersion":"7","uid":"u-2","generation":3,"creationTimestamp":"2025-01-01T00:00:00Z",
		"managedFields":[{"manager":"tabby"}],"finalizers":["x"],"labels":{},
		"annotations":{"tabby.dev/name":"Pod_1"}},"spec":{"handleID":"Pod_1","block":{"10.0.0.0/26":1}},"status":{"x":1}}`
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON([]byte(stored)); err != nil {
		t.Fatal(err)
	}
	obj, err := decode(resources.KindIPAMHandle, u)
	if err != nil {
		t.Fatal(err)
	}
	h := obj.(*resources.IPAMHandle)
	if h.Name != "Pod_1" || h.ResourceVersion != "7" || h.UID != "u-2" || h.Labels != nil || h.Annotations != nil ||
		h.Spec.Block["10.0.0.0/26"] != 1 || h.Validate() != nil {
		t.Fatalf("decoded %+v", h)
	}
	u.SetKind("Node")
	if _, err := decode(resources.KindIPAMHandle, u); err == nil {
		t.Fatal("decoded a Node as an IPAMHandle")
	}
}

func TestMapError(t *testing.T) {
	k := resources.Key{Kind: resources.KindNode, Name: "n1"}
	gr := schema.GroupResource{Group: resources.Group, Resource: "nodes"}
	noCRD := &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: 404,
		Reason: metav1.StatusReasonNotFound, Message: "the server could not find the requested resource", Details: &metav1.StatusDetails{}}}
	tests := []struct {
		name  string
		err   error
		check func(error) bool
		msg   string
	}{
		{"not found", apierrors.NewNotFound(gr, "n1"), datastore.IsNotFound, `Node "n1": not found`},
		{"no CRD", noCRD, func(err error) bool { return errors.Is(err, ErrNoCRD) && !datastore.IsNotFound(err) }, ""},
		{"exists", apierrors.NewAlreadyExists(gr, "n1"), datastore.IsAlreadyExists, `Node "n1": already exists`},
		{"conflict", apierrors.NewConflict(gr, "n1", errors.New("modified")), datastore.IsConflict, ""},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Group: resources.Group, Kind: "Node"}, "n1",
			field.ErrorList{field.Invalid(field.NewPath("spec", "addresses").Index(0).Child("type"), "X", "unsupported")}),
			func(err error) bool { return errors.Is(err, resources.ErrInvalid) },
			`Node "n1": spec.addresses[0].type: Invalid value: "X": unsupported`},
		{"other status", apierrors.NewServiceUnavailable("down"), func(err error) bool { return !datastore.IsNotFound(err) && apierrors.IsServiceUnavailable(err) }, ""},
		{"transport", errors.New("connection refused"), func(err error) bool { return err != nil }, `kubernetes: get Node "n1": connection refused`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := mapError("get", k, tt.err)
			if !tt.check(err) {
				t.Fatalf("mapped to %v", err)
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Fatalf("message %q, want %q", err, tt.msg)
			}
		})
	}
	if err := mapError("list", resources.Key{Kind: resources.KindNode}, errors.New("x")); err.Error() != "kubernetes: list Node: x" {
		t.Fatalf("kind-only message %q", err)
	}
}
