package resources

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"sigs.k8s.io/yaml"
)

// MaxDecodeBytes is the largest input Decode accepts.
const MaxDecodeBytes = 8 << 20

// Decode parses resources written by a person or a tool: YAML or JSON, one
// object or several YAML documents separated by "---" lines. Unknown fields
// (matched case-sensitively), duplicate keys, a wrong apiVersion and unknown
// kinds are errors; documents that are empty or only comments are skipped.
// Decode neither defaults nor validates. YAML is YAML 1.1 as kubectl reads
// it: quote string values such as yes, no, on, off, y and n.
func Decode(data []byte) ([]Resource, error) {
	return DecodeStream(data, DecodeDocument)
}

// Document is one document of a YAML stream that holds an object.
type Document struct {
	YAML []byte // as written
	JSON []byte // converted to JSON: an object, duplicate keys rejected
}

// DecodeStream splits a YAML or JSON stream of at most MaxDecodeBytes into
// documents at "---" lines, converts each to JSON and decodes every one
// that is not empty (nor only comments) with decode. A document that is
// not an object, or that decode refuses, is an error naming the document
// by its number. It is Decode's loop, shared with decoders of kinds of
// their own (the agent's).
func DecodeStream[T any](data []byte, decode func(Document) (T, error)) ([]T, error) {
	if len(data) > MaxDecodeBytes {
		return nil, fmt.Errorf("decode: input is %d bytes, more than %d", len(data), MaxDecodeBytes)
	}
	var out []T
	for i, doc := range splitYAML(data) {
		obj, ok, err := decodeOne(doc, decode)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if ok {
			out = append(out, obj)
		}
	}
	return out, nil
}

// decodeOne converts one document to JSON and decodes it; ok is false for
// an empty document.
func decodeOne[T any](doc []byte, decode func(Document) (T, error)) (obj T, ok bool, err error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return obj, false, err
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || string(js) == "null" {
		return obj, false, nil
	}
	if js[0] != '{' {
		return obj, false, errors.New("not an object")
	}
	obj, err = decode(Document{YAML: doc, JSON: js})
	return obj, err == nil, err
}

// DecodeDocument decodes one document of a kind of this package, as Decode
// does.
func DecodeDocument(doc Document) (Resource, error) {
	// A first pass without type information finds apiVersion and kind and
	// rejects duplicate keys; values are then converted with the kind's Go
	// type as a guide (so that "name: n" stays a string).
	var generic map[string]any
	if err := json.Unmarshal(doc.JSON, &generic); err != nil {
		return nil, err
	}
	apiVersion, _ := generic["apiVersion"].(string)
	kind, _ := generic["kind"].(string)
	if apiVersion != APIVersion {
		return nil, fmt.Errorf("apiVersion %q is not %s", generic["apiVersion"], APIVersion)
	}
	obj := New(Kind(kind))
	if obj == nil {
		return nil, fmt.Errorf("unknown kind %q", generic["kind"])
	}
	if err := checkFields(generic, reflect.TypeOf(obj).Elem(), ""); err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	if err := yaml.UnmarshalStrict(doc.YAML, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	return obj, nil
}

// checkFields rejects object keys that name no field of t exactly
// (encoding/json would match them case-insensitively).
func checkFields(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil // a type mismatch; the decoder reports it
		}
		fields := jsonFields(t)
		for k, sub := range m {
			ft, ok := fields[k]
			if !ok {
				return fmt.Errorf("unknown field %q", joinPath(path, k))
			}
			if err := checkFields(sub, ft, joinPath(path, k)); err != nil {
				return err
			}
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		for k, sub := range m {
			if err := checkFields(sub, t.Elem(), fmt.Sprintf("%s[%q]", path, k)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		s, ok := v.([]any)
		if !ok {
			return nil
		}
		for i, sub := range s {
			if err := checkFields(sub, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// jsonFields maps the JSON names of t's fields (embedded structs without a
// name inlined) to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, ft := range jsonFields(f.Type) {
				out[k] = ft
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// DecodeJSON decodes one stored object of a known kind, as a datastore
// reads it back. Unknown fields are ignored (a newer writer may have added
// some); apiVersion and kind, when present, must match.
func DecodeJSON(kind Kind, data []byte) (Resource, error) {
	obj := New(kind)
	if obj == nil {
		return nil, fmt.Errorf("decode: unknown kind %q", kind)
	}
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kind, err)
	}
	tm := obj.typeMeta()
	if tm.APIVersion != "" && tm.APIVersion != APIVersion {
		return nil, fmt.Errorf("decode %s: apiVersion %q is not %s", kind, tm.APIVersion, APIVersion)
	}
	if tm.Kind != "" && tm.Kind != string(kind) {
		return nil, fmt.Errorf("decode %s: stored kind is %q", kind, tm.Kind)
	}
	setTypeMeta(obj)
	return obj, nil
}

// Marshal encodes obj as JSON with apiVersion and kind filled in (the form
// the etcd datastore stores).
func Marshal(obj Resource) ([]byte, error) {
	setTypeMeta(obj)
	return json.Marshal(obj)
}

// MarshalYAML encodes objects as a YAML stream, one document each.
func MarshalYAML(objs ...Resource) ([]byte, error) {
	return YAMLStream(len(objs), func(i int) ([]byte, Key, error) {
		js, err := Marshal(objs[i])
		return js, KeyOf(objs[i]), err
	})
}

// YAMLStream encodes n objects as a YAML stream: doc(i) returns object
// i's JSON and its key (named in errors).
func YAMLStream(n int, doc func(i int) ([]byte, Key, error)) ([]byte, error) {
	var buf bytes.Buffer
	for i := range n {
		js, k, err := doc(i)
		if err != nil {
			return nil, fmt.Errorf("marshal %s: %w", k, err)
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return nil, fmt.Errorf("marshal %s: %w", k, err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(y)
	}
	return buf.Bytes(), nil
}

// splitYAML splits a YAML stream at document separator lines ("---",
// optionally followed by a space and anything).
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	start := 0
	for pos := 0; pos <= len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos
		}
		line := bytes.TrimRight(data[pos:end], "\r")
		if bytes.Equal(line, []byte("---")) || bytes.HasPrefix(line, []byte("--- ")) {
			docs = append(docs, data[start:pos])
			start = end + 1
		}
		pos = end + 1
	}
	if start <= len(data) {
		docs = append(docs, data[start:])
	}
	return docs
}
