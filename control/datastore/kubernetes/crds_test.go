package kubernetes_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore/kubernetes/crdgen"
	"github.com/tabbynet/tabby/control/resources"
)

var update = flag.Bool("update", false, "rewrite deploy/crds from the Go types")

// crdDir is deploy/crds, from this package's directory.
const crdDir = "../../../deploy/crds"

const header = "# Generated from the Go types of Tabby's kinds by\n" +
	"#   go test ./control/datastore/kubernetes/ -run TestCRDs -update\n" +
	"# Do not edit; change the types or the Props in crds_test.go.\n"

func ptr[T any](v T) *T { return &v }

var intOrString = crdgen.Schema{IntOrString: true}

var generator = crdgen.Generator{
	Header: header,
	Types: map[reflect.Type]crdgen.Schema{
		// An AS number: 64512, "64512" or asdot "1.10".
		reflect.TypeFor[resources.ASNumber](): intOrString,
		// A protocol name or number.
		reflect.TypeFor[agent.Protocol](): intOrString,
		// A port, a range "lo:hi" or a port name.
		reflect.TypeFor[agent.Port](): intOrString,
	},
}

var encapModes = []any{"Never", "Always", "CrossSubnet"}

func policyProps() map[string]crdgen.Props {
	p := map[string]crdgen.Props{}
	for _, dir := range []string{"ingress", "egress"} {
		r := "spec." + dir + "[]"
		p[r] = crdgen.Props{Required: []string{"action"}}
		p[r+".action"] = crdgen.Props{Enum: []any{"Allow", "Deny", "Pass", "Log"}}
		p[r+".ipVersion"] = crdgen.Props{Enum: []any{4, 6}}
		for _, icmp := range []string{".icmp", ".notICMP"} {
			p[r+icmp+".type"] = crdgen.Props{Min: ptr(0.0), Max: ptr(255.0)}
			p[r+icmp+".code"] = crdgen.Props{Min: ptr(0.0), Max: ptr(255.0)}
		}
		for _, side := range []string{".source", ".destination"} {
			p[r+side+".nets[]"] = crdgen.Props{Format: "cidr"}
			p[r+side+".notNets[]"] = crdgen.Props{Format: "cidr"}
		}
	}
	return p
}

var policyColumns = []crdgen.Column{
	{Name: "Tier", Type: "string", JSONPath: ".spec.tier"},
	{Name: "Order", Type: "number", JSONPath: ".spec.order"},
	{Name: "Selector", Type: "string", JSONPath: ".spec.selector", Priority: 1},
}

// defs are the CRDs of every tabby.dev/v1 kind: package resources' kinds
// and the agent's.
func defs(t *testing.T) []crdgen.Def {
	t.Helper()
	byKind := map[resources.Kind]crdgen.Def{
		resources.KindIPPool: {
			Description: "IPPool is a range of pod addresses, cut into blocks that nodes claim.",
			Props: map[string]crdgen.Props{
				"spec":           {Required: []string{"cidr"}},
				"spec.cidr":      {Format: "cidr"},
				"spec.blockSize": {Min: ptr(20.0), Max: ptr(128.0)},
				"spec.ipipMode":  {Enum: encapModes},
				"spec.vxlanMode": {Enum: encapModes},
			},
			Columns: []crdgen.Column{
				{Name: "CIDR", Type: "string", JSONPath: ".spec.cidr"},
				{Name: "Block", Type: "integer", JSONPath: ".spec.blockSize"},
				{Name: "IPIP", Type: "string", JSONPath: ".spec.ipipMode"},
				{Name: "VXLAN", Type: "string", JSONPath: ".spec.vxlanMode"},
				{Name: "Disabled", Type: "boolean", JSONPath: ".spec.disabled", Priority: 1},
			},
		},
		resources.KindBGPConfiguration: {
			Description: `BGPConfiguration is the BGP configuration of the cluster ("default") or of one node ("node.<name>").`,
			Props: map[string]crdgen.Props{
				"spec.listenPort":                {Min: ptr(1.0)},
				"spec.logSeverityScreen":         {Enum: []any{"Debug", "Info", "Warning", "Error", "Fatal"}},
				"spec.serviceClusterIPs[]":       {Required: []string{"cidr"}},
				"spec.serviceClusterIPs[].cidr":  {Format: "cidr"},
				"spec.serviceExternalIPs[]":      {Required: []string{"cidr"}},
				"spec.serviceExternalIPs[].cidr": {Format: "cidr"},
			},
			Columns: []crdgen.Column{
				{Name: "AS", Type: "string", JSONPath: ".spec.asNumber"},
				{Name: "Mesh", Type: "boolean", JSONPath: ".spec.nodeToNodeMeshEnabled"},
			},
		},
		resources.KindBGPPeer: {
			Description: "BGPPeer is a BGP session of some nodes with a peer address or with the nodes a selector picks.",
			Props: map[string]crdgen.Props{
				"spec.password.value":        {MaxLength: ptr(int64(80))},
				"spec.password.secretKeyRef": {Required: []string{"name", "key"}},
			},
			Columns: []crdgen.Column{
				{Name: "Peer", Type: "string", JSONPath: ".spec.peerIP"},
				{Name: "AS", Type: "string", JSONPath: ".spec.asNumber"},
				{Name: "Node", Type: "string", JSONPath: ".spec.node"},
				{Name: "PeerSelector", Type: "string", JSONPath: ".spec.peerSelector", Priority: 1},
			},
		},
		resources.KindNode: {
			Description: "Node is a node's addresses, BGP settings and tunnel endpoints.",
			Props: map[string]crdgen.Props{
				"spec.addresses[]":      {Required: []string{"address"}},
				"spec.addresses[].type": {Enum: []any{"CalicoNodeIP", "InternalIP", "ExternalIP"}},
			},
			Columns: []crdgen.Column{
				{Name: "IPv4", Type: "string", JSONPath: ".spec.bgp.ipv4Address"},
				{Name: "IPv6", Type: "string", JSONPath: ".spec.bgp.ipv6Address", Priority: 1},
			},
		},
		resources.KindHostEndpoint: {
			Description: "HostEndpoint is a host interface that policy applies to.",
			Props: map[string]crdgen.Props{
				"spec":                  {Required: []string{"node"}},
				"spec.interfaceName":    {MaxLength: ptr(int64(15))},
				"spec.ports[]":          {Required: []string{"name", "protocol", "port"}},
				"spec.ports[].protocol": {Enum: []any{"TCP", "UDP", "SCTP"}},
				"spec.ports[].port":     {Min: ptr(1.0)},
			},
			Columns: []crdgen.Column{
				{Name: "Node", Type: "string", JSONPath: ".spec.node"},
				{Name: "Interface", Type: "string", JSONPath: ".spec.interfaceName"},
			},
		},
		resources.KindIPAMBlock: {
			Description: "IPAMBlock is one block of a pool: which of its addresses are assigned, and to which handle.",
			Props: map[string]crdgen.Props{
				"spec":               {Required: []string{"cidr", "allocations", "unallocated", "attributes"}},
				"spec.cidr":          {Format: "cidr"},
				"spec.affinity":      {Pattern: "^host:"},
				"spec.allocations":   {MaxItems: ptr(int64(resources.MaxBlockOrdinals))},
				"spec.allocations[]": {Min: ptr(-1.0)},
				"spec.unallocated":   {MaxItems: ptr(int64(resources.MaxBlockOrdinals))},
				"spec.unallocated[]": {Min: ptr(0.0)},
			},
			Columns: []crdgen.Column{
				{Name: "CIDR", Type: "string", JSONPath: ".spec.cidr"},
				{Name: "Affinity", Type: "string", JSONPath: ".spec.affinity"},
			},
		},
		resources.KindBlockAffinity: {
			Description: "BlockAffinity records a node's claim of a block.",
			Props: map[string]crdgen.Props{
				"spec":       {Required: []string{"node", "cidr"}},
				"spec.cidr":  {Format: "cidr"},
				"spec.state": {Enum: []any{"pending", "confirmed", "pendingDeletion"}},
			},
			Columns: []crdgen.Column{
				{Name: "Node", Type: "string", JSONPath: ".spec.node"},
				{Name: "CIDR", Type: "string", JSONPath: ".spec.cidr"},
				{Name: "State", Type: "string", JSONPath: ".spec.state"},
			},
		},
		resources.KindIPAMHandle: {
			Description: "IPAMHandle records which blocks hold the addresses of one handle (a container ID).",
			Props: map[string]crdgen.Props{
				"spec":         {Required: []string{"handleID"}},
				"spec.block{}": {Min: ptr(1.0)},
			},
			Columns: []crdgen.Column{
				{Name: "Handle", Type: "string", JSONPath: ".spec.handleID"},
			},
		},
		agent.KindAgentConfiguration: {
			Description: `AgentConfiguration is the agent's configuration in the datastore, for every node ("default") or one ("node.<name>").`,
		},
		agent.KindTier: {
			Description: "Tier orders policies: tiers by their order, and the policies of a tier by theirs.",
			Props: map[string]crdgen.Props{
				"spec.defaultAction": {Enum: []any{"Deny", "Pass"}},
			},
			Columns: []crdgen.Column{
				{Name: "Order", Type: "number", JSONPath: ".spec.order"},
				{Name: "DefaultAction", Type: "string", JSONPath: ".spec.defaultAction"},
			},
		},
		agent.KindNetworkPolicy: {
			Description: "NetworkPolicy is Tabby's namespaced policy (Calico's NetworkPolicy): ordered rules for the endpoints its selector selects in its namespace.",
			Props:       policyProps(),
			Columns:     policyColumns,
		},
		agent.KindGlobalNetworkPolicy: {
			Description: "GlobalNetworkPolicy is a policy for endpoints of every namespace and host endpoints.",
			Props:       policyProps(),
			Columns:     policyColumns,
		},
		agent.KindWorkloadEndpoint: {
			Description: "WorkloadEndpoint is a pod's interface, registered when the CNI plugin adds it.",
			Props: map[string]crdgen.Props{
				"spec":               {Required: []string{"node", "containerID"}},
				"spec.ports[]":       {Required: []string{"name", "protocol", "port"}},
				"spec.ports[].port":  {Min: ptr(1.0)},
				"spec.interfaceName": {MaxLength: ptr(int64(15))},
				"spec.endpoint":      {MaxLength: ptr(int64(15))},
			},
			Columns: []crdgen.Column{
				{Name: "Node", Type: "string", JSONPath: ".spec.node"},
				{Name: "Pod", Type: "string", JSONPath: ".spec.pod"},
				{Name: "Networks", Type: "string", JSONPath: ".spec.ipNetworks", Priority: 1},
			},
		},
	}
	var out []crdgen.Def
	add := func(kind resources.Kind, plural string, namespaced bool, typ reflect.Type) {
		d, ok := byKind[kind]
		if !ok {
			t.Fatalf("kind %s has no CRD definition in crds_test.go", kind)
		}
		delete(byKind, kind)
		d.Group, d.Version = resources.Group, resources.Version
		d.Kind, d.Plural, d.Namespaced, d.Type = string(kind), plural, namespaced, typ
		out = append(out, d)
	}
	for _, info := range resources.Kinds() {
		add(info.Kind, info.Plural, info.Namespaced, reflect.TypeOf(info.New()))
	}
	for _, info := range agent.AgentKinds() {
		add(info.Kind, info.Plural, info.Namespaced, reflect.TypeOf(info.New()))
	}
	for kind := range byKind {
		t.Errorf("CRD definition of %s, which is no kind", kind)
	}
	return out
}

// TestCRDs checks that deploy/crds holds exactly the CRDs generated from
// the Go types (-update rewrites them), and that each decodes as a CRD of
// its kind.
func TestCRDs(t *testing.T) {
	want := map[string][]byte{}
	for _, d := range defs(t) {
		b, err := generator.Manifest(d)
		if err != nil {
			t.Fatal(err)
		}
		want[crdgen.FileName(d)] = b
		checkManifest(t, d, b)
	}
	if *update {
		if err := os.MkdirAll(crdDir, 0o755); err != nil {
			t.Fatal(err)
		}
		old, _ := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
		for _, f := range old {
			if _, ok := want[filepath.Base(f)]; !ok {
				os.Remove(f)
			}
		}
		for name, b := range want {
			if err := os.WriteFile(filepath.Join(crdDir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		name := filepath.Base(f)
		names = append(names, name)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		w, ok := want[name]
		switch {
		case !ok:
			t.Errorf("%s: no kind has this CRD (remove it, or run with -update)", f)
		case !bytes.Equal(b, w):
			t.Errorf("%s differs from the Go types: run go test ./control/datastore/kubernetes/ -run TestCRDs -update", f)
		}
	}
	for name := range want {
		if !contains(names, name) {
			t.Errorf("%s is missing: run go test ./control/datastore/kubernetes/ -run TestCRDs -update", filepath.Join(crdDir, name))
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// crd is what checkManifest reads of a CustomResourceDefinition.
type crd struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind       string   `json:"kind"`
			ListKind   string   `json:"listKind"`
			Plural     string   `json:"plural"`
			Singular   string   `json:"singular"`
			Categories []string `json:"categories"`
		} `json:"names"`
		Scope    string `json:"scope"`
		Versions []struct {
			Name    string `json:"name"`
			Served  bool   `json:"served"`
			Storage bool   `json:"storage"`
			Schema  struct {
				OpenAPIV3Schema *crdgen.Schema `json:"openAPIV3Schema"`
			} `json:"schema"`
			Columns []struct {
				Name     string `json:"name"`
				Type     string `json:"type"`
				JSONPath string `json:"jsonPath"`
				Priority int32  `json:"priority"`
			} `json:"additionalPrinterColumns"`
		} `json:"versions"`
	} `json:"spec"`
}

// checkManifest decodes a manifest strictly and checks it names def's
// kind and that its schema has a property for every JSON field of the
// kind's spec (the apiserver would prune the others).
func checkManifest(t *testing.T, def crdgen.Def, b []byte) {
	t.Helper()
	var c crd
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		t.Fatalf("%s: %v", def.Kind, err)
	}
	scope := "Cluster"
	if def.Namespaced {
		scope = "Namespaced"
	}
	if c.APIVersion != "apiextensions.k8s.io/v1" || c.Kind != "CustomResourceDefinition" ||
		c.Metadata.Name != def.Plural+"."+resources.Group || c.Spec.Group != resources.Group ||
		c.Spec.Names.Kind != def.Kind || c.Spec.Names.Plural != def.Plural || c.Spec.Scope != scope ||
		len(c.Spec.Versions) != 1 || c.Spec.Versions[0].Name != resources.Version || !c.Spec.Versions[0].Storage {
		t.Fatalf("%s: CRD %+v", def.Kind, c)
	}
	root := c.Spec.Versions[0].Schema.OpenAPIV3Schema
	if root == nil || root.Properties["spec"] == nil || root.Properties["metadata"] == nil {
		t.Fatalf("%s: schema without spec or metadata", def.Kind)
	}
	spec, ok := def.Type.Elem().FieldByName("Spec")
	if !ok {
		t.Fatalf("%s: no Spec field", def.Kind)
	}
	var missing []string
	covers(root.Properties["spec"], spec.Type, "spec", &missing)
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s: schema lacks %s", def.Kind, strings.Join(missing, ", "))
	}
}

// covers lists the JSON fields of t that s has no property for.
func covers(s *crdgen.Schema, t reflect.Type, path string, missing *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s.IntOrString || s.PreserveUnknown {
		return
	}
	switch t.Kind() {
	case reflect.Slice:
		if s.Items == nil {
			*missing = append(*missing, path+"[]")
			return
		}
		covers(s.Items, t.Elem(), path+"[]", missing)
	case reflect.Map:
		if s.AdditionalProperties == nil {
			*missing = append(*missing, path+"{}")
			return
		}
		covers(s.AdditionalProperties, t.Elem(), path+"{}", missing)
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			sub, ok := s.Properties[name]
			if !ok {
				*missing = append(*missing, path+"."+name)
				continue
			}
			covers(sub, f.Type, path+"."+name, missing)
		}
	}
}
