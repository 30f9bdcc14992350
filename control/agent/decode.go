package agent

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/tabbynet/tabby/control/resources"
)

// Decode parses a YAML or JSON stream of objects of any kind (the agent
// kinds and those of package resources), one object per YAML document.
// Unknown fields, a wrong apiVersion and unknown kinds are errors naming
// the document; empty documents are skipped. It neither defaults nor
// validates.
func Decode(data []byte) ([]Object, error) {
	return resources.DecodeStream(data, decodeDocument)
}

func decodeDocument(doc resources.Document) (Object, error) {
	var head struct {
		APIVersion any `json:"apiVersion"`
		Kind       any `json:"kind"`
	}
	if err := json.Unmarshal(doc.JSON, &head); err != nil {
		return nil, err
	}
	kind, _ := head.Kind.(string)
	info, ok := agentKinds[resources.Kind(kind)]
	if !ok {
		r, err := resources.DecodeDocument(doc)
		if err != nil {
			return nil, err
		}
		return Wrap(r), nil
	}
	if head.APIVersion != resources.APIVersion {
		return nil, fmt.Errorf("apiVersion %q is not %s", head.APIVersion, resources.APIVersion)
	}
	obj := info.New()
	dec := json.NewDecoder(bytes.NewReader(doc.JSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	return obj, nil
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
