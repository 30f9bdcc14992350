package agent

import (
	"time"
)

// Status is the agent's state as GET /v1/status reports it (and `tabby
// status` prints it).
type Status struct {
	Node      string    `json:"node"`
	Dataplane string    `json:"dataplane"`
	Time      time.Time `json:"time"`
	// Ready and NotReady: what /readyz says, and why not.
	Ready    bool     `json:"ready"`
	NotReady []string `json:"notReady,omitempty"`
	// Reconciles counts the reconciler's publish rounds.
	Reconciles uint64          `json:"reconciles"`
	Datastore  DatastoreStatus `json:"datastore"`
	// Blocks are the IPAM blocks affine to this node.
	Blocks    []BlockStatus   `json:"blocks"`
	Endpoints EndpointsStatus `json:"endpoints"`
	Policy    PolicyStatus    `json:"policy"`
	Routes    RouteStatus     `json:"routes"`
	// BGP is nil when BGP is off.
	BGP      *BGPStatus `json:"bgp,omitempty"`
	BGPError string     `json:"bgpError,omitempty"`
	// Counters are the dataplane's (afxdp) packet counters and DropReasons
	// its drops per reason (non-zero ones).
	Counters map[string]uint64 `json:"counters,omitempty"`
	Drops    map[string]uint64 `json:"drops,omitempty"`
}

// DatastoreStatus is the state of the datastore watches.
type DatastoreStatus struct {
	Type string `json:"type"`
	// Synced: every watch is synced now.
	Synced bool         `json:"synced"`
	Kinds  []KindStatus `json:"kinds"`
}

// KindStatus is one watch.
type KindStatus struct {
	Kind   string `json:"kind"`
	Synced bool   `json:"synced"`
	Error  string `json:"error,omitempty"`
}

// BlockStatus is one IPAM block of this node.
type BlockStatus struct {
	CIDR     string `json:"cidr"`
	InUse    int    `json:"inUse"`
	Capacity int    `json:"capacity"`
}

// EndpointsStatus counts workload endpoints.
type EndpointsStatus struct {
	Local int `json:"local"`
	Total int `json:"total"`
	// List holds this node's endpoints (omitted from /v1/status).
	List []*WorkloadEndpoint `json:"-"`
}

// PolicyStatus is the compiled policy.
type PolicyStatus struct {
	Generation  uint64 `json:"generation"`
	Policies    int    `json:"policies"`
	Tiers       int    `json:"tiers"`
	CompileTime string `json:"compileTime"`
	// Pending: changes not yet published.
	Pending bool `json:"pending"`
	// Errors are objects rejected (their previous version stays in force).
	Errors []string `json:"errors,omitempty"`
}

// RouteStatus is the forwarding table.
type RouteStatus struct {
	IPv4 int `json:"ipv4"`
	IPv6 int `json:"ipv6"`
	// Pending routes wait for a neighbour or a tunnel device.
	Pending int    `json:"pending"`
	Learned int    `json:"learned"`
	Error   string `json:"error,omitempty"`
}

// BGPStatus is the speaker's state.
type BGPStatus struct {
	Running    bool         `json:"running"`
	ASN        uint32       `json:"asn"`
	RouterID   string       `json:"routerID,omitempty"`
	Peers      []PeerStatus `json:"peers"`
	Advertised int          `json:"advertised"`
	Learned    int          `json:"learned"`
}

// PeerStatus is one BGP session.
type PeerStatus struct {
	Address     string `json:"address"`
	ASN         uint32 `json:"asn"`
	Name        string `json:"name,omitempty"`
	Source      string `json:"source,omitempty"`
	State       string `json:"state"`
	Established bool   `json:"established"`
	Since       string `json:"since,omitempty"`
	Received    uint64 `json:"received"`
	Advertised  uint64 `json:"advertised"`
	LastError   string `json:"lastError,omitempty"`
}
