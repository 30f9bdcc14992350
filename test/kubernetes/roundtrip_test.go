package kubernetes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
)

func ptr[T any](v T) *T { return &v }

// samples set every field of every kind of package resources at least
// once (TestRoundTrip checks that they do).
func samples() []resources.Resource {
	meta := func(name string) resources.ObjectMeta {
		return resources.ObjectMeta{Name: name, Labels: map[string]string{"zone": "a", "example.com/rack": "r1"},
			Annotations: map[string]string{"note": "round trip"}}
	}
	block := netipPrefix("10.66.0.0/30")
	return []resources.Resource{
		&resources.IPPool{ObjectMeta: meta("rt-pool"), Spec: resources.IPPoolSpec{CIDR: "10.66.0.0/16", BlockSize: 28,
			IPIPMode: resources.EncapCrossSubnet, VXLANMode: resources.EncapNever, NATOutgoing: true, Disabled: true, NodeSelector: "zone == 'a'"}},
		&resources.BGPConfiguration{ObjectMeta: meta("default"), Spec: resources.BGPConfigurationSpec{ASNumber: 4200000000,
			NodeToNodeMeshEnabled: ptr(false), ListenPort: 1179, LogSeverityScreen: "Debug",
			ServiceClusterIPs: []resources.ServiceIPBlock{{CIDR: "10.96.0.0/12"}}, ServiceExternalIPs: []resources.ServiceIPBlock{{CIDR: "192.0.2.0/24"}}}},
		&resources.BGPPeer{ObjectMeta: meta("rt-peer-ip"), Spec: resources.BGPPeerSpec{Node: "node-a", PeerIP: "192.0.2.1:1179", ASNumber: 65010,
			Password: &resources.BGPPassword{Value: "s3cret"}, KeepOriginalNextHop: true, MaxRestartTime: "120s"}},
		&resources.BGPPeer{ObjectMeta: meta("rt-peer-sel"), Spec: resources.BGPPeerSpec{NodeSelector: "rack == 'a'", PeerSelector: "route-reflector == 'true'",
			Password: &resources.BGPPassword{SecretKeyRef: &resources.SecretKeyRef{Name: "bgp", Key: "rr"}}}},
		&resources.Node{ObjectMeta: meta("rt-node"), Spec: resources.NodeSpec{
			Addresses: []resources.NodeAddress{{Address: "192.0.2.10/24", Type: "InternalIP"}, {Address: "2001:db8::10"}},
			BGP: &resources.NodeBGPSpec{IPv4Address: "192.0.2.10/24", IPv6Address: "2001:db8::10/64", IPv4IPIPTunnelAddr: "10.66.0.1",
				ASNumber: 65011, RouteReflectorClusterID: "224.0.0.1"},
			IPv4VXLANTunnelAddr: "10.66.0.2", VXLANTunnelMACAddr: "66:aa:bb:cc:dd:ee",
			IPv6VXLANTunnelAddr: "fd00:66::2", VXLANTunnelMACAddrV6: "66:aa:bb:cc:dd:ef"}},
		&resources.HostEndpoint{ObjectMeta: meta("rt-hep"), Spec: resources.HostEndpointSpec{Node: "rt-node", InterfaceName: "eth0",
			ExpectedIPs: []string{"192.0.2.10"}, Profiles: []string{"edge"}, Ports: []resources.EndpointPort{{Name: "ssh", Protocol: "TCP", Port: 22}}}},
		&resources.IPAMBlock{ObjectMeta: resources.ObjectMeta{Name: resources.BlockName(block)}, Spec: resources.IPAMBlockSpec{
			CIDR: block.String(), Affinity: "host:rt-node", Allocations: []int32{0, -1, 1, -1}, Unallocated: []int32{3, 1},
			Attributes: []resources.AllocationAttribute{{HandleID: "Handle_1", Secondary: map[string]string{"pod": "p1", "namespace": "default"}}, {HandleID: "h2"}}}},
		&resources.BlockAffinity{ObjectMeta: resources.ObjectMeta{Name: resources.AffinityName("rt-node", block)},
			Spec: resources.BlockAffinitySpec{State: resources.AffinityConfirmed, Node: "rt-node", CIDR: block.String()}},
		&resources.IPAMHandle{Spec: resources.IPAMHandleSpec{HandleID: "Handle_1", Block: map[string]int{block.String(): 1}}},
	}
}

// agentSamples set every field of every agent kind at least once.
func agentSamples() []agent.Object {
	tm := func(k string) resources.TypeMeta {
		return resources.TypeMeta{APIVersion: resources.APIVersion, Kind: k}
	}
	rule := func(action string) agent.Rule {
		side := agent.EntityRule{Nets: []string{"10.0.0.0/8"}, NotNets: []string{"10.1.0.0/16"}, Selector: "app == 'web'",
			NotSelector: "role == 'db'", NamespaceSelector: "team == 'a'", Ports: []agent.Port{"80", "8000:8080", "http"}, NotPorts: []agent.Port{"81"}}
		return agent.Rule{Action: action, IPVersion: 4, Protocol: ptr(agent.Protocol("TCP")), NotProtocol: ptr(agent.Protocol("17")),
			ICMP: &agent.ICMPMatch{Type: ptr(8), Code: ptr(0)}, NotICMP: &agent.ICMPMatch{Type: ptr(3), Code: ptr(1)}, Source: side, Destination: side}
	}
	spec := agent.PolicySpec{Tier: "rt-tier", Order: ptr(10.5), Selector: "app == 'web'", NamespaceSelector: "team == 'a'",
		Types: []string{"Ingress", "Egress"}, Ingress: []agent.Rule{rule("Allow"), rule("Log")}, Egress: []agent.Rule{rule("Deny"), rule("Pass")}}
	// (Tabby refuses a NetworkPolicy's namespaceSelector, but its CRD
	// shares the schema.)
	np := &agent.NetworkPolicy{TypeMeta: tm("NetworkPolicy"), ObjectMeta: resources.ObjectMeta{Name: "rt-np", Namespace: "default"}, Spec: spec}
	return []agent.Object{
		&agent.AgentConfiguration{TypeMeta: tm("AgentConfiguration"), ObjectMeta: resources.ObjectMeta{Name: "default"}, Spec: agent.AgentConfigurationSpec{
			Dataplane: "afxdp", Interfaces: []string{"eth0"}, XDPMode: "native", PollMode: "busy", MaxPods: 200, PodRingSize: 512, BurstRingSize: 8192, PodChecksumOffload: "off", NodeAddress: "192.0.2.10",
			IPv4PoolCIDR: "10.66.0.0/16", IPv4PoolBlockSize: 26, IPv4PoolIPIP: "Always", IPv4PoolVXLAN: "Never", IPv4PoolNATOutgoing: ptr(true),
			IPv6PoolCIDR: "fd00:66::/48", IPv6PoolBlockSize: 122, HealthListen: ":9099", MetricsListen: ":9091", CNISocket: "/run/tabby/cni.sock",
			LogLevel: "debug", LogFormat: "json", BGPEnabled: ptr(false), Debounce: "50ms",
			IPAMGCInterval: "5m", IPAMGCGracePeriod: "10m"}},
		&agent.Tier{TypeMeta: tm("Tier"), ObjectMeta: resources.ObjectMeta{Name: "rt-tier"}, Spec: agent.TierSpec{Order: ptr(100.0), DefaultAction: "Pass"}},
		np,
		&agent.GlobalNetworkPolicy{TypeMeta: tm("GlobalNetworkPolicy"), ObjectMeta: resources.ObjectMeta{Name: "rt-gnp"}, Spec: spec},
		&agent.WorkloadEndpoint{TypeMeta: tm("WorkloadEndpoint"), ObjectMeta: resources.ObjectMeta{Name: "rt-wep", Namespace: "default"},
			Spec: agent.WorkloadEndpointSpec{Node: "rt-node", Orchestrator: "k8s", Pod: "web-0", ContainerID: "0123abcd", Endpoint: "eth0",
				InterfaceName: "tab0123abcd", MAC: "66:aa:bb:cc:dd:01", IPNetworks: []string{"10.66.0.5/32"},
				Ports: []resources.EndpointPort{{Name: "http", Protocol: "TCP", Port: 80}}, ServiceAccountName: "web"}},
	}
}

// TestRoundTrip: every field of every kind survives the apiserver (a
// field missing from a CRD's schema would be pruned silently).
func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, kubernetes.Config{})
	set := map[resources.Kind]map[string]bool{}
	for _, obj := range samples() {
		k := resources.KeyOf(obj)
		if k.Name == "" {
			obj.Default()
			k = resources.KeyOf(obj)
		}
		t.Run(k.String(), func(t *testing.T) {
			created, err := d.Create(ctx, obj)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.Get(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			for _, out := range []resources.Resource{created, got} {
				if g, w := specJSON(t, out), specJSON(t, obj); g != w {
					t.Errorf("spec changed by the apiserver\n got: %s\nwant: %s", g, w)
				}
				if !reflect.DeepEqual(out.Meta().Labels, obj.Meta().Labels) || !reflect.DeepEqual(out.Meta().Annotations, obj.Meta().Annotations) {
					t.Errorf("metadata changed: %+v", out.Meta())
				}
			}
		})
		if set[k.Kind] == nil {
			set[k.Kind] = map[string]bool{}
		}
		fieldsSet(reflect.ValueOf(obj).Elem().FieldByName("Spec"), "spec", set[k.Kind])
	}
	for _, info := range resources.Kinds() {
		checkCovered(t, info.Kind, reflect.TypeOf(info.New()).Elem(), set[info.Kind])
	}

	// The agent's kinds, through the dynamic client.
	dyn := dynamicClient(t)
	set = map[resources.Kind]map[string]bool{}
	for _, obj := range agentSamples() {
		info, _ := agent.LookupAgentKind(obj.ObjectKind())
		t.Run(string(info.Kind), func(t *testing.T) {
			js, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(js); err != nil {
				t.Fatal(err)
			}
			r := dyn.Resource(gvr(info.Plural))
			var c interface {
				Create(context.Context, *unstructured.Unstructured, metav1.CreateOptions, ...string) (*unstructured.Unstructured, error)
				Get(context.Context, string, metav1.GetOptions, ...string) (*unstructured.Unstructured, error)
				Delete(context.Context, string, metav1.DeleteOptions, ...string) error
			} = r
			if info.Namespaced {
				c = r.Namespace(obj.Meta().Namespace)
			}
			if _, err := c.Create(ctx, u, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			defer c.Delete(ctx, obj.Meta().Name, metav1.DeleteOptions{})
			got, err := c.Get(ctx, obj.Meta().Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(got.Object["spec"])
			if w := specJSON(t, obj); normalize(t, g) != w {
				t.Errorf("spec changed by the apiserver\n got: %s\nwant: %s", normalize(t, g), w)
			}
		})
		if set[info.Kind] == nil {
			set[info.Kind] = map[string]bool{}
		}
		fieldsSet(reflect.ValueOf(obj).Elem().FieldByName("Spec"), "spec", set[info.Kind])
	}
	for _, info := range agent.AgentKinds() {
		checkCovered(t, info.Kind, reflect.TypeOf(info.New()).Elem(), set[info.Kind])
	}
}

// TestSchemaValidation: the CRDs refuse what Tabby would refuse on their
// main fields, for objects written around Tabby (kubectl apply).
func TestSchemaValidation(t *testing.T) {
	ctx := context.Background()
	newDatastore(t, kubernetes.Config{})
	dyn := dynamicClient(t)
	tests := []struct {
		kind, plural, doc, field string
	}{
		{"IPPool", "ippools", `"metadata":{"name":"v1"},"spec":{"cidr":"10.0.0.0/16","ipipMode":"Sometimes"}`, "spec.ipipMode"},
		{"IPPool", "ippools", `"metadata":{"name":"v2"},"spec":{"cidr":"not-a-cidr"}`, "spec.cidr"},
		{"IPPool", "ippools", `"metadata":{"name":"v3"},"spec":{"cidr":"10.0.0.0/16","blockSize":8}`, "spec.blockSize"},
		{"IPPool", "ippools", `"metadata":{"name":"v4"},"spec":{"blockSize":26}`, "spec.cidr"},
		{"BGPConfiguration", "bgpconfigurations", `"metadata":{"name":"default"},"spec":{"listenPort":70000}`, "spec.listenPort"},
		{"HostEndpoint", "hostendpoints", `"metadata":{"name":"v5"},"spec":{"node":"n","ports":[{"name":"x","protocol":"ICMP","port":1}]}`, "spec.ports[0].protocol"},
		{"BlockAffinity", "blockaffinities", `"metadata":{"name":"v6"},"spec":{"node":"n","cidr":"10.0.0.0/26","state":"maybe"}`, "spec.state"},
		{"IPAMBlock", "ipamblocks", `"metadata":{"name":"v7"},"spec":{"cidr":"10.0.0.0/30","allocations":[-2,-1,-1,-1],"unallocated":[],"attributes":[]}`, "spec.allocations[0]"},
		{"NetworkPolicy", "networkpolicies", `"metadata":{"name":"v8","namespace":"default"},"spec":{"ingress":[{"action":"Maybe"}]}`, "spec.ingress[0].action"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			u := &unstructured.Unstructured{}
			doc := fmt.Sprintf(`{"apiVersion":%q,"kind":%q,%s}`, resources.APIVersion, tt.kind, tt.doc)
			if err := u.UnmarshalJSON([]byte(doc)); err != nil {
				t.Fatal(err)
			}
			r := dyn.Resource(gvr(tt.plural))
			var err error
			if u.GetNamespace() != "" {
				_, err = r.Namespace(u.GetNamespace()).Create(ctx, u, metav1.CreateOptions{})
			} else {
				_, err = r.Create(ctx, u, metav1.CreateOptions{})
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("want an Invalid error naming %s, got %v", tt.field, err)
			}
		})
	}
}

func specJSON(t *testing.T, obj any) string {
	t.Helper()
	b, err := json.Marshal(reflect.ValueOf(obj).Elem().FieldByName("Spec").Interface())
	if err != nil {
		t.Fatal(err)
	}
	return normalize(t, b)
}

// normalize re-encodes JSON with sorted keys and numbers as numbers.
func normalize(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// fieldsSet records the paths of the non-zero leaf fields of v.
func fieldsSet(v reflect.Value, path string, set map[string]bool) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			if e := v.Elem(); e.Kind() != reflect.Struct {
				set[path] = true // a pointer to a zero value is set
			} else {
				fieldsSet(e, path, set)
			}
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if f := v.Type().Field(i); f.IsExported() {
				fieldsSet(v.Field(i), path+"."+f.Name, set)
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			fieldsSet(v.Index(i), path+"[]", set)
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			fieldsSet(v.MapIndex(k), path+"{}", set)
		}
	default:
		if !v.IsZero() {
			set[path] = true
		}
	}
}

// leaves lists the paths of the leaf fields of t.
func leaves(t reflect.Type, path string, out *[]string) {
	switch t.Kind() {
	case reflect.Pointer:
		leaves(t.Elem(), path, out)
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			if f := t.Field(i); f.IsExported() {
				leaves(f.Type, path+"."+f.Name, out)
			}
		}
	case reflect.Slice:
		leaves(t.Elem(), path+"[]", out)
	case reflect.Map:
		leaves(t.Elem(), path+"{}", out)
	default:
		*out = append(*out, path)
	}
}

func checkCovered(t *testing.T, kind resources.Kind, typ reflect.Type, set map[string]bool) {
	t.Helper()
	f, _ := typ.FieldByName("Spec")
	var all, missing []string
	leaves(f.Type, "spec", &all)
	for _, p := range all {
		if !set[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s: the samples leave %s unset: add them to samples() so the round trip covers them", kind, strings.Join(missing, ", "))
	}
}
