package agent

import (
	"strings"

	"github.com/tabbynet/tabby/control/resources"
)

// AgentConfiguration is the agent's configuration in the datastore:
// "default" applies to every node, "node.<name>" to one node and takes
// precedence over "default"; environment variables, flags and the
// configuration file take precedence over both. Keys that say how to reach
// the datastore cannot be set here.
type AgentConfiguration struct {
	resources.TypeMeta   `json:",inline"`
	resources.ObjectMeta `json:"metadata"`
	Spec                 AgentConfigurationSpec `json:"spec"`
}

// AgentConfigurationSpec holds the keys the datastore may set; unset fields
// leave the key to the layers below.
type AgentConfigurationSpec struct {
	Dataplane           string   `json:"dataplane,omitempty"`
	Interfaces          []string `json:"interfaces,omitempty"`
	XDPMode             string   `json:"xdpMode,omitempty"`
	PollMode            string   `json:"pollMode,omitempty"`
	MaxPods             int      `json:"maxPods,omitempty"`
	PodRingSize         int      `json:"podRingSize,omitempty"`
	BurstRingSize       int      `json:"burstRingSize,omitempty"`
	PodChecksumOffload  string   `json:"podChecksumOffload,omitempty"`
	NodeAddress         string   `json:"nodeAddress,omitempty"`
	IPv4PoolCIDR        string   `json:"ipv4PoolCIDR,omitempty"`
	IPv4PoolBlockSize   int      `json:"ipv4PoolBlockSize,omitempty"`
	IPv4PoolIPIP        string   `json:"ipv4PoolIPIP,omitempty"`
	IPv4PoolVXLAN       string   `json:"ipv4PoolVXLAN,omitempty"`
	IPv4PoolNATOutgoing *bool    `json:"ipv4PoolNATOutgoing,omitempty"`
	IPv6PoolCIDR        string   `json:"ipv6PoolCIDR,omitempty"`
	IPv6PoolBlockSize   int      `json:"ipv6PoolBlockSize,omitempty"`
	HealthListen        string   `json:"healthListen,omitempty"`
	MetricsListen       string   `json:"metricsListen,omitempty"`
	CNISocket           string   `json:"cniSocket,omitempty"`
	LogLevel            string   `json:"logLevel,omitempty"`
	LogFormat           string   `json:"logFormat,omitempty"`
	BGPEnabled          *bool    `json:"bgpEnabled,omitempty"`
	Debounce            string   `json:"debounce,omitempty"`
	IPAMGCInterval      string   `json:"ipamGCInterval,omitempty"`
	IPAMGCGracePeriod   string   `json:"ipamGCGracePeriod,omitempty"`
}

// ObjectKind returns KindAgentConfiguration.
func (*AgentConfiguration) ObjectKind() resources.Kind { return KindAgentConfiguration }

// Default does nothing: unset keys fall through to the next layer.
func (a *AgentConfiguration) Default() {}

// NodeConfigName returns the name of node's own AgentConfiguration.
func NodeConfigName(node string) string { return "node." + node }

// Validate checks the name ("default" or "node.<name>") and every key as
// the agent will parse it.
func (a *AgentConfiguration) Validate() error {
	var fe fieldErrors
	fe.meta(a)
	if a.Name != "" && a.Name != "default" && !strings.HasPrefix(a.Name, "node.") {
		fe.add("metadata.name", "%q must be \"default\" or \"node.<node name>\"", a.Name)
	}
	l, err := DatastoreLayer(a)
	if err != nil {
		fe.add("spec", "%v", err)
		return fe.result(a)
	}
	c := DefaultConfig()
	for i := range configKeys {
		k := &configKeys[i]
		if v, ok := l.Values[k.name]; ok {
			if err := k.set(&c, v); err != nil {
				fe.add("spec."+k.name, "%q: %v", v, err)
			}
		}
	}
	return fe.result(a)
}
