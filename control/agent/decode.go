package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"sigs.k8s.io/yaml"

	"github.com/tabbynet/tabby/control/resources"
)

// Decode parses a YAML or JSON stream of objects of any kind (the agent
// kinds and those of package resources), one object per YAML document.
// Unknown fields, a wrong apiVersion and unknown kinds are errors naming
// the document; empty documents are skipped. It neither defaults nor
// validates.
func Decode(data []byte) ([]Object, error) {
	if len(data) > resources.MaxDecodeBytes {
		return nil, fmt.Errorf("decode: input is %d bytes, more than %d", len(data), resources.MaxDecodeBytes)
	}
	var out []Object
	for i, doc := range splitDocuments(data) {
		obj, err := decodeDocument(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if obj != nil {
			out = append(out, obj)
		}
	}
	return out, nil
}

func decodeDocument(doc []byte) (Object, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || string(js) == "null" {
		return nil, nil
	}
	var head struct {
		APIVersion any `json:"apiVersion"`
		Kind       any `json:"kind"`
	}
	if js[0] != '{' {
		return nil, errors.New("not an object")
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return nil, err
	}
	kind, _ := head.Kind.(string)
	info, ok := agentKinds[resources.Kind(kind)]
	if !ok {
		objs, err := resources.Decode(doc)
		if err != nil {
			// One document: drop resources' own "document 1: ".
			if inner := errors.Unwrap(err); inner != nil {
				return nil, inner
			}
			return nil, err
		}
		if len(objs) != 1 {
			return nil, fmt.Errorf("expected one object, found %d", len(objs))
		}
		return Wrap(objs[0]), nil
	}
	if head.APIVersion != resources.APIVersion {
		return nil, fmt.Errorf("apiVersion %q is not %s", head.APIVersion, resources.APIVersion)
	}
	obj := info.New()
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	return obj, nil
}

// splitDocuments splits a YAML stream at "---" separator lines.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			data = nil
		}
		t := bytes.TrimRight(line, "\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}

// Marshal encodes obj as JSON with apiVersion and kind set.
func Marshal(obj Object) ([]byte, error) {
	if r := Unwrap(obj); r != nil {
		return resources.Marshal(r)
	}
	setTypeMeta(obj)
	return json.Marshal(obj)
}

// MarshalYAML encodes objects as a YAML stream.
func MarshalYAML(objs ...Object) ([]byte, error) {
	return resources.YAMLStream(len(objs), func(i int) ([]byte, resources.Key, error) {
		js, err := Marshal(objs[i])
		return js, KeyOfObject(objs[i]), err
	})
}
