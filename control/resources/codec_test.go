package resources

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestDecodeExample(t *testing.T) {
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, string(o.ResourceKind())+"/"+o.Meta().Name)
		o.Default()
		if err := o.Validate(); err != nil {
			t.Errorf("%v", err)
		}
	}
	want := "IPPool/pool-a IPPool/pool-v6 BGPConfiguration/default BGPPeer/tor-a Node/node-a HostEndpoint/node-a-eth0"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("decoded %s\nwant %s", got, want)
	}
	p := objs[0].(*IPPool)
	if p.Spec.IPIPMode != EncapCrossSubnet || !p.Spec.NATOutgoing || p.Spec.BlockSize != 26 {
		t.Errorf("pool-a spec %+v", p.Spec)
	}
	if p6 := objs[1].(*IPPool); p6.Spec.BlockSize != 122 || !p6.Spec.Disabled {
		t.Errorf("pool-v6 spec after Default %+v", p6.Spec)
	}
	if c := objs[2].(*BGPConfiguration); *c.Spec.NodeToNodeMeshEnabled {
		t.Errorf("mesh: explicit false was overwritten")
	}
	if peer := objs[3].(*BGPPeer); peer.Spec.ASNumber != 65546 || peer.Spec.Password.SecretKeyRef.Key != "tor-a" {
		t.Errorf("peer %+v", peer.Spec)
	}
	if n := objs[4].(*Node); n.Labels["zone"] != "a" || n.Spec.BGP.ASNumber != 65010 {
		t.Errorf("node %+v", n)
	}

	// Round trip through MarshalYAML.
	y, err := MarshalYAML(objs...)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Decode(y)
	if err != nil {
		t.Fatalf("decode of MarshalYAML output: %v\n%s", err, y)
	}
	y2, _ := MarshalYAML(again...)
	if !bytes.Equal(y, y2) {
		t.Fatalf("YAML round trip differs:\n%s\n---- vs ----\n%s", y, y2)
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		kinds string // space-separated kinds decoded
		err   string // substring of the error
	}{
		{"json object", `{"apiVersion":"tabby.dev/v1","kind":"IPPool","metadata":{"name":"a"},"spec":{"cidr":"10.0.0.0/16"}}`, "IPPool", ""},
		{"number as label value", "apiVersion: tabby.dev/v1\nkind: Node\nmetadata: {name: a, labels: {rack: 1}}\n", "Node", ""},
		{"empty", "", "", ""},
		{"comments and separators", "# nothing\n---\n---\n# still nothing\n", "", ""},
		{"leading separator", "---\napiVersion: tabby.dev/v1\nkind: Node\nmetadata: {name: a}\n", "Node", ""},
		{"crlf", "apiVersion: tabby.dev/v1\r\nkind: Node\r\nmetadata: {name: a}\r\n---\r\napiVersion: tabby.dev/v1\r\nkind: Node\r\nmetadata: {name: b}\r\n", "Node Node", ""},
		{"wrong apiVersion", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\n", "", `document 1: apiVersion "projectcalico.org/v3" is not tabby.dev/v1`},
		{"unknown kind", "apiVersion: tabby.dev/v1\nkind: Pool\n", "", `document 1: unknown kind "Pool"`},
		{"unknown field", "apiVersion: tabby.dev/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/8, blocksize: 24}\n", "", `IPPool: unknown field "spec.blocksize"`},
		{"duplicate key", "apiVersion: tabby.dev/v1\nkind: IPPool\nkind: IPPool\n", "", `document 1:`},
		{"wrong type", "apiVersion: tabby.dev/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {blockSize: big}\n", "", `cannot unmarshal string into Go struct field IPPoolSpec.spec.blockSize`},
		{"second document bad", "apiVersion: tabby.dev/v1\nkind: Node\nmetadata: {name: a}\n---\n[1, 2]\n", "", `document 2: not an object`},
		{"bad asn", "apiVersion: tabby.dev/v1\nkind: BGPPeer\nmetadata: {name: p}\nspec: {asNumber: -1}\n", "", `AS number -1 is not an integer`},
		{"list unsupported", `{"apiVersion":"tabby.dev/v1","kind":"List","items":[]}`, "", `unknown kind "List"`},
		{"unknown nested field", "apiVersion: tabby.dev/v1\nkind: Node\nmetadata: {name: a}\nspec: {addresses: [{address: 1.2.3.4, typ: x}]}\n", "", `Node: unknown field "spec.addresses[0].typ"`},
		{"unknown metadata field", "apiVersion: tabby.dev/v1\nkind: Node\nmetadata: {name: a, Labels: {}}\n", "", `Node: unknown field "metadata.Labels"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, string(o.ResourceKind()))
				if v, ok := o.Meta().Labels["rack"]; ok && v != "1" {
					t.Errorf("label rack = %q, want \"1\"", v)
				}
			}
			if got := strings.Join(kinds, " "); got != tt.kinds {
				t.Fatalf("kinds %q, want %q", got, tt.kinds)
			}
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	obj, err := DecodeJSON(KindIPAMHandle, []byte(`{"metadata":{"name":"h"},"spec":{"handleID":"h","block":{"10.0.0.0/26":2}},"future":1}`))
	if err != nil {
		t.Fatal(err)
	}
	h := obj.(*IPAMHandle)
	if h.Spec.Block["10.0.0.0/26"] != 2 || h.APIVersion != APIVersion || h.Kind != "IPAMHandle" {
		t.Fatalf("%+v", h)
	}
	if _, err := DecodeJSON(KindNode, []byte(`{"kind":"IPPool"}`)); err == nil {
		t.Fatal("kind mismatch accepted")
	}
	if _, err := DecodeJSON("Nope", []byte(`{}`)); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

// FuzzDecode checks that decoding, defaulting and validating arbitrary
// input never panics, and that whatever decodes survives an encode/decode
// round trip unchanged.
func FuzzDecode(f *testing.F) {
	if data, err := os.ReadFile("testdata/example.yaml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode(data)
		if err != nil {
			return
		}
		for _, o := range objs {
			_ = o.Validate()
			o.Default()
			_ = o.Validate()
			_ = KeyOf(o).String()
		}
		var pools []*IPPool
		for _, o := range objs {
			if p, ok := o.(*IPPool); ok {
				pools = append(pools, p)
			}
		}
		_ = CheckPoolOverlaps(pools)
		y, err := MarshalYAML(objs...)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := Decode(y)
		if err != nil {
			t.Fatalf("decode of our own output: %v\n%s", err, y)
		}
		if len(again) != len(objs) {
			t.Fatalf("round trip: %d objects, want %d", len(again), len(objs))
		}
		y2, err := MarshalYAML(again...)
		if err != nil || !bytes.Equal(y, y2) {
			t.Fatalf("round trip differs (%v):\n%s\n---- vs ----\n%s", err, y, y2)
		}
		for _, o := range objs {
			js, err := Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeJSON(o.ResourceKind(), js); err != nil {
				t.Fatalf("DecodeJSON of Marshal output: %v", err)
			}
		}
	})
}

// FuzzDecodeJSON checks that decoding a stored object of any kind, as a
// datastore reads it back, and validating it never panic.
func FuzzDecodeJSON(f *testing.F) {
	f.Add(`{"metadata":{"name":"10-0-0-0-30"},"spec":{"cidr":"10.0.0.0/30","allocations":[0,-1,0,-1],"unallocated":[3,1],"attributes":[{"handleID":"h"}]}}`)
	f.Add(`{"apiVersion":"tabby.dev/v1","kind":"IPAMHandle","metadata":{"name":"h"},"spec":{"handleID":"h","block":{"10.0.0.0/26":1}}}`)
	f.Add(`{"spec":{"allocations":[5],"unallocated":[-7,99999]}}`)
	f.Fuzz(func(t *testing.T, data string) {
		for _, info := range Kinds() {
			obj, err := DecodeJSON(info.Kind, []byte(data))
			if err != nil {
				continue
			}
			_ = obj.Validate()
			obj.Default()
			_ = obj.Validate()
			if _, err := Marshal(obj); err != nil {
				t.Fatalf("marshal %s: %v", info.Kind, err)
			}
		}
	})
}

// FuzzParseBlockName checks that block names parse only when they are
// what BlockName makes.
func FuzzParseBlockName(f *testing.F) {
	for _, s := range []string{"10-65-0-64-26", "fd00-65---122", "fd00-65--40-122", "1-2-3-4-5-6", "--"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := ParseBlockName(s)
		if ok && BlockName(p) != s {
			t.Fatalf("ParseBlockName(%q) = %s, whose name is %q", s, p, BlockName(p))
		}
	})
}
