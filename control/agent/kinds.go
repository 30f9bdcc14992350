package agent

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/tabbynet/tabby/control/resources"
)

// The agent kinds: resources of API group tabby.dev/v1 that package
// resources does not define (its Resource interface is sealed, so a kind
// defined elsewhere cannot be stored through datastore.Datastore). They are
// stored by an ObjectStore next to the datastore's objects, in the same etcd
// cluster and under the same prefix.
const (
	// KindAgentConfiguration is the agent's configuration in the
	// datastore: "default" for every node, "node.<name>" for one.
	KindAgentConfiguration resources.Kind = "AgentConfiguration"
	// KindTier orders policies (Calico's Tier).
	KindTier resources.Kind = "Tier"
	// KindNetworkPolicy is a namespaced policy (Calico's NetworkPolicy).
	KindNetworkPolicy resources.Kind = "NetworkPolicy"
	// KindGlobalNetworkPolicy is a cluster-wide policy.
	KindGlobalNetworkPolicy resources.Kind = "GlobalNetworkPolicy"
	// KindWorkloadEndpoint is a pod's interface, registered by the agent
	// when the CNI plugin adds it.
	KindWorkloadEndpoint resources.Kind = "WorkloadEndpoint"
)

// Object is one resource of any kind the agent and the CLI handle: an agent
// kind (AgentConfiguration, Tier, NetworkPolicy, GlobalNetworkPolicy,
// WorkloadEndpoint) or a resources.Resource wrapped by Wrap.
type Object interface {
	// ObjectKind is the kind; it may be called on a nil pointer.
	ObjectKind() resources.Kind
	// Meta returns the object's metadata for reading and writing.
	Meta() *resources.ObjectMeta
	// Default fills in unset fields with their defaults.
	Default()
	// Validate checks the object alone; it returns nil or a
	// *resources.ValidationError naming the object and each bad field.
	Validate() error
}

// KeyOfObject returns the key of obj.
func KeyOfObject(obj Object) resources.Key {
	m := obj.Meta()
	return resources.Key{Kind: obj.ObjectKind(), Namespace: m.Namespace, Name: m.Name}
}

// ResourceObject is a resources.Resource seen as an Object.
type ResourceObject struct{ resources.Resource }

// Wrap returns r as an Object.
func Wrap(r resources.Resource) Object { return ResourceObject{r} }

// ObjectKind returns the resource's kind.
func (r ResourceObject) ObjectKind() resources.Kind { return r.Resource.ResourceKind() }

// Unwrap returns the resource of an Object made by Wrap, or nil.
func Unwrap(obj Object) resources.Resource {
	if r, ok := obj.(ResourceObject); ok {
		return r.Resource
	}
	return nil
}

// KindInfo describes an agent kind.
type KindInfo struct {
	Kind resources.Kind
	// Plural is the lowercase plural used in datastore keys.
	Plural string
	// Namespaced kinds carry metadata.namespace.
	Namespaced bool
	// New returns a new empty object of the kind.
	New func() Object
}

var agentKinds = map[resources.Kind]KindInfo{
	KindAgentConfiguration:  {KindAgentConfiguration, "agentconfigurations", false, func() Object { return new(AgentConfiguration) }},
	KindTier:                {KindTier, "tiers", false, func() Object { return new(Tier) }},
	KindNetworkPolicy:       {KindNetworkPolicy, "networkpolicies", true, func() Object { return new(NetworkPolicy) }},
	KindGlobalNetworkPolicy: {KindGlobalNetworkPolicy, "globalnetworkpolicies", false, func() Object { return new(GlobalNetworkPolicy) }},
	KindWorkloadEndpoint:    {KindWorkloadEndpoint, "workloadendpoints", true, func() Object { return new(WorkloadEndpoint) }},
}

// LookupAgentKind returns what is known about agent kind k.
func LookupAgentKind(k resources.Kind) (KindInfo, bool) {
	info, ok := agentKinds[k]
	return info, ok
}

// AgentKinds returns the agent kinds sorted by name.
func AgentKinds() []KindInfo {
	out := make([]KindInfo, 0, len(agentKinds))
	for _, k := range agentKinds {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out
}

// NewObject returns a new empty object of any known kind (agent kinds and
// the kinds of package resources), or nil.
func NewObject(k resources.Kind) Object {
	if info, ok := agentKinds[k]; ok {
		return info.New()
	}
	if r := resources.New(k); r != nil {
		return Wrap(r)
	}
	return nil
}

// KindNames maps what a user may type for a kind (kind, lowercase kind,
// plural, Calico's short names) to the kind.
func KindNames() map[string]resources.Kind {
	m := map[string]resources.Kind{}
	add := func(k resources.Kind, plural string) {
		m[string(k)] = k
		m[strings.ToLower(string(k))] = k
		m[plural] = k
	}
	for _, info := range resources.Kinds() {
		add(info.Kind, info.Plural)
	}
	for _, info := range agentKinds {
		add(info.Kind, info.Plural)
	}
	for short, k := range map[string]resources.Kind{
		"pool": resources.KindIPPool, "pools": resources.KindIPPool, "ippool": resources.KindIPPool,
		"bgpconfig": resources.KindBGPConfiguration, "bgppeer": resources.KindBGPPeer, "peer": resources.KindBGPPeer,
		"peers": resources.KindBGPPeer, "node": resources.KindNode, "hep": resources.KindHostEndpoint,
		"heps": resources.KindHostEndpoint, "block": resources.KindIPAMBlock, "blocks": resources.KindIPAMBlock,
		"affinity": resources.KindBlockAffinity, "handle": resources.KindIPAMHandle,
		"agentconfig": KindAgentConfiguration, "netpol": KindNetworkPolicy, "policy": KindNetworkPolicy,
		"policies": KindNetworkPolicy, "np": KindNetworkPolicy, "gnp": KindGlobalNetworkPolicy,
		"globalpolicy": KindGlobalNetworkPolicy, "wep": KindWorkloadEndpoint, "weps": KindWorkloadEndpoint,
		"endpoint": KindWorkloadEndpoint, "endpoints": KindWorkloadEndpoint,
	} {
		m[short] = k
	}
	return m
}

// fieldErrors collects the field errors of one object.
type fieldErrors []*resources.FieldError

func (fe *fieldErrors) add(field, format string, args ...any) {
	*fe = append(*fe, &resources.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (fe fieldErrors) result(obj Object) error {
	if len(fe) == 0 {
		return nil
	}
	return &resources.ValidationError{Key: KeyOfObject(obj), Fields: fe}
}

// meta checks the metadata: a DNS-1123 name, a namespace exactly when the
// kind is namespaced, and label keys and values.
func (fe *fieldErrors) meta(obj Object) {
	m := obj.Meta()
	fe.name("metadata.name", m.Name)
	info, _ := LookupAgentKind(obj.ObjectKind())
	switch {
	case info.Namespaced && m.Namespace == "":
		fe.add("metadata.namespace", "is required for %s", obj.ObjectKind())
	case info.Namespaced && !resources.ValidDNSLabel(m.Namespace):
		fe.add("metadata.namespace", "%q is not a valid namespace name", m.Namespace)
	case !info.Namespaced && m.Namespace != "":
		fe.add("metadata.namespace", "%s is cluster-scoped; namespace must be empty, not %q", obj.ObjectKind(), m.Namespace)
	}
	keys := make([]string, 0, len(m.Labels))
	for k := range m.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !resources.ValidLabelKey(k) {
			fe.add("metadata.labels", "key %q is not a valid label key", k)
		}
		if v := m.Labels[k]; !resources.ValidLabelValue(v) {
			fe.add("metadata.labels", "value %q of label %q is not a valid label value", v, k)
		}
	}
}

func (fe *fieldErrors) name(field, s string) {
	if s == "" {
		fe.add(field, "is required")
		return
	}
	if !resources.ValidDNSSubdomain(s) {
		fe.add(field, "%q is not a valid name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters", s)
	}
}

// errNotAgentKind is returned by the object store for kinds it does not
// hold.
var errNotAgentKind = errors.New("not an agent kind")
