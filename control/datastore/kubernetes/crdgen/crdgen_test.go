package crdgen_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/control/datastore/kubernetes/crdgen"
)

type meta struct {
	Name string `json:"name"`
}

type inner struct {
	Port  uint16            `json:"port"`
	Tags  map[string]string `json:"tags,omitempty"`
	Skip  string            `json:"-"`
	plain int
}

type custom string

type spec struct {
	inner   `json:",inline"`
	CIDR    string    `json:"cidr"`
	Count   *int      `json:"count,omitempty"`
	Ratio   float64   `json:"ratio"`
	Items   []inner   `json:"items"`
	Custom  custom    `json:"custom"`
	Customs []*custom `json:"customs"`
}

type kind struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Meta       meta   `json:"metadata"`
	Spec       spec   `json:"spec"`
}

func TestSchema(t *testing.T) {
	g := crdgen.Generator{Types: map[reflect.Type]crdgen.Schema{reflect.TypeFor[custom](): {IntOrString: true}}}
	def := crdgen.Def{Group: "example.com", Version: "v1", Kind: "Kind", Plural: "kinds", Type: reflect.TypeFor[*kind](),
		Props: map[string]crdgen.Props{
			"spec":              {Required: []string{"cidr"}},
			"spec.cidr":         {Format: "cidr"},
			"spec.items[].port": {Min: new(float64)},
			"spec.tags{}":       {MaxLength: new(int64)},
		}}
	s, err := g.Schema(def)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s.Properties["spec"])
	want := `{"type":"object","properties":{"cidr":{"type":"string","format":"cidr"},"count":{"type":"integer","format":"int64","nullable":true},` +
		`"custom":{"x-kubernetes-int-or-string":true},"customs":{"type":"array","nullable":true,"items":{"x-kubernetes-int-or-string":true}},` +
		`"items":{"type":"array","nullable":true,"items":{"type":"object","properties":{"port":{"type":"integer","format":"int32","minimum":0,"maximum":65535},` +
		`"tags":{"type":"object","nullable":true,"additionalProperties":{"type":"string"}}}}},` +
		`"port":{"type":"integer","format":"int32","minimum":0,"maximum":65535},"ratio":{"type":"number"},` +
		`"tags":{"type":"object","nullable":true,"additionalProperties":{"type":"string","maxLength":0}}},"required":["cidr"]}`
	if norm(t, b) != norm(t, []byte(want)) {
		t.Fatalf("spec schema\n got %s\nwant %s", norm(t, b), norm(t, []byte(want)))
	}
	if m := s.Properties["metadata"]; m.Type != "object" || m.Properties != nil {
		t.Fatalf("metadata schema %+v", m)
	}
	y, err := g.Manifest(def)
	if err != nil || !strings.Contains(string(y), "name: kinds.example.com") || !strings.Contains(string(y), "scope: Cluster") {
		t.Fatalf("manifest %s, %v", y, err)
	}

	def.Props["spec.nope"] = crdgen.Props{}
	if _, err := g.Schema(def); err == nil || !strings.Contains(err.Error(), "spec.nope") {
		t.Fatalf("props for a missing field: %v", err)
	}
}

func norm(t *testing.T, b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}
