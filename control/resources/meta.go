// Package resources defines Tabby's datastore resources, API group
// tabby.dev/v1: the user-facing configuration (IPPool, BGPConfiguration,
// BGPPeer, Node, HostEndpoint) and the IPAM records (IPAMBlock,
// BlockAffinity, IPAMHandle). Field names follow Calico's v3 API so that
// manifests translate one to one.
//
// Every resource is written as calicoctl writes Calico's:
//
//	apiVersion: tabby.dev/v1
//	kind: IPPool
//	metadata:
//	  name: pool-a
//	spec:
//	  cidr: 10.65.0.0/16
//
// Resources are plain data. Default fills in the defaults the datastore
// stores; Validate checks one object and returns a *ValidationError naming
// the object and each bad field; CheckPoolOverlaps checks a set of pools.
// Nothing in this package does I/O, and nothing here is safe for concurrent
// mutation: a Resource belongs to whoever holds it.
package resources

import (
	"fmt"
	"sort"
)

// APIVersion is the apiVersion of every Tabby resource.
const APIVersion = Group + "/" + Version

// Group and Version make up APIVersion.
const (
	Group   = "tabby.dev"
	Version = "v1"
)

// Kind names a resource type, as written in the kind field.
type Kind string

// The resource kinds.
const (
	KindIPPool           Kind = "IPPool"
	KindBGPConfiguration Kind = "BGPConfiguration"
	KindBGPPeer          Kind = "BGPPeer"
	KindNode             Kind = "Node"
	KindHostEndpoint     Kind = "HostEndpoint"
	KindIPAMBlock        Kind = "IPAMBlock"
	KindBlockAffinity    Kind = "BlockAffinity"
	KindIPAMHandle       Kind = "IPAMHandle"
)

// TypeMeta is the apiVersion and kind of a serialized resource.
type TypeMeta struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
}

// ObjectMeta is the metadata every resource carries.
type ObjectMeta struct {
	// Name identifies the object within its kind (and namespace). It is a
	// DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253
	// characters.
	Name string `json:"name"`
	// Namespace is empty for the cluster-scoped kinds (all kinds so far).
	Namespace string `json:"namespace,omitempty"`
	// ResourceVersion is the datastore's opaque version of the object, set
	// on every object a datastore returns and checked on Update and Delete
	// (optimistic concurrency). It is never stored inside the object.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// UID is set by the datastore on Create.
	UID string `json:"uid,omitempty"`
	// CreationTimestamp is set by the datastore on Create (RFC 3339).
	CreationTimestamp string `json:"creationTimestamp,omitempty"`
	// Labels are matched by selectors (nodeSelector, peerSelector, ...).
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are free-form.
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Meta returns the object's metadata; it lets every resource satisfy
// Resource through its embedded ObjectMeta.
func (m *ObjectMeta) Meta() *ObjectMeta { return m }

// Resource is one Tabby resource: a pointer to IPPool, BGPConfiguration,
// BGPPeer, Node, HostEndpoint, IPAMBlock, BlockAffinity or IPAMHandle.
type Resource interface {
	// ResourceKind is the kind of the Go type; it may be called on a nil
	// pointer.
	ResourceKind() Kind
	// Meta returns the object's metadata for reading and writing.
	Meta() *ObjectMeta
	// Default fills in unset fields with their defaults.
	Default()
	// Validate checks the object alone and returns nil or a
	// *ValidationError. Unset fields that Default fills in are valid.
	Validate() error
	// typeMeta seals the interface: only this package's types are resources.
	typeMeta() *TypeMeta
}

// Key identifies one object.
type Key struct {
	Kind      Kind
	Namespace string
	Name      string
}

// KeyOf returns the key of obj.
func KeyOf(obj Resource) Key {
	m := obj.Meta()
	return Key{Kind: obj.ResourceKind(), Namespace: m.Namespace, Name: m.Name}
}

// String formats the key as it appears in errors: IPPool "pool-a", or with a
// namespace, NetworkPolicy "ns/name".
func (k Key) String() string {
	if k.Namespace != "" {
		return fmt.Sprintf("%s %q", k.Kind, k.Namespace+"/"+k.Name)
	}
	return fmt.Sprintf("%s %q", k.Kind, k.Name)
}

// KindInfo describes a kind.
type KindInfo struct {
	Kind Kind
	// Plural is the lowercase plural used in datastore keys and CRD names.
	Plural string
	// Namespaced kinds carry metadata.namespace.
	Namespaced bool
	// New returns a new empty object of the kind.
	New func() Resource
}

var kinds = map[Kind]KindInfo{}

func register(info KindInfo) {
	if _, dup := kinds[info.Kind]; dup {
		panic("resources: kind registered twice: " + string(info.Kind))
	}
	kinds[info.Kind] = info
}

func init() {
	register(KindInfo{Kind: KindIPPool, Plural: "ippools", New: func() Resource { return new(IPPool) }})
	register(KindInfo{Kind: KindBGPConfiguration, Plural: "bgpconfigurations", New: func() Resource { return new(BGPConfiguration) }})
	register(KindInfo{Kind: KindBGPPeer, Plural: "bgppeers", New: func() Resource { return new(BGPPeer) }})
	register(KindInfo{Kind: KindNode, Plural: "nodes", New: func() Resource { return new(Node) }})
	register(KindInfo{Kind: KindHostEndpoint, Plural: "hostendpoints", New: func() Resource { return new(HostEndpoint) }})
	register(KindInfo{Kind: KindIPAMBlock, Plural: "ipamblocks", New: func() Resource { return new(IPAMBlock) }})
	register(KindInfo{Kind: KindBlockAffinity, Plural: "blockaffinities", New: func() Resource { return new(BlockAffinity) }})
	register(KindInfo{Kind: KindIPAMHandle, Plural: "ipamhandles", New: func() Resource { return new(IPAMHandle) }})
}

// LookupKind returns what is known about kind k.
func LookupKind(k Kind) (KindInfo, bool) {
	info, ok := kinds[k]
	return info, ok
}

// Kinds returns every kind, sorted by name.
func Kinds() []KindInfo {
	out := make([]KindInfo, 0, len(kinds))
	for _, info := range kinds {
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out
}

// New returns a new empty object of kind k, or nil for an unknown kind.
func New(k Kind) Resource {
	info, ok := kinds[k]
	if !ok {
		return nil
	}
	return info.New()
}

// setTypeMeta fills in apiVersion and kind for serialization.
func setTypeMeta(obj Resource) {
	tm := obj.typeMeta()
	tm.APIVersion = APIVersion
	tm.Kind = string(obj.ResourceKind())
}
