package resources

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ASNumber is a BGP autonomous system number. In JSON it is a number
// (64512) or an asdot string ("1.10" = 65546).
type ASNumber uint32

// DefaultASNumber is the AS of nodes without one of their own (Calico's).
const DefaultASNumber ASNumber = 64512

// UnmarshalJSON accepts a number or an asplain/asdot string.
func (a *ASNumber) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := ParseASNumber(s)
		if err != nil {
			return err
		}
		*a = v
		return nil
	}
	v, err := strconv.ParseUint(string(b), 10, 32)
	if err != nil {
		return fmt.Errorf("AS number %s is not an integer in 0..4294967295", b)
	}
	*a = ASNumber(v)
	return nil
}

// ParseASNumber parses "64512" (asplain) or "1.10" (asdot).
func ParseASNumber(s string) (ASNumber, error) {
	if hi, lo, ok := strings.Cut(s, "."); ok {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("AS number %q is not asdot (two integers 0..65535)", s)
		}
		return ASNumber(h<<16 | l), nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("AS number %q is not an integer in 0..4294967295", s)
	}
	return ASNumber(v), nil
}

// BGPConfiguration is the cluster-wide BGP configuration (name "default")
// or one node's override (name "node.<node name>").
type BGPConfiguration struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       BGPConfigurationSpec `json:"spec"`
}

// BGPConfigurationSpec is BGPConfiguration's desired state.
type BGPConfigurationSpec struct {
	// ASNumber is the AS of nodes that have none of their own (default 64512).
	ASNumber ASNumber `json:"asNumber,omitempty"`
	// NodeToNodeMeshEnabled peers every node with every other (default true).
	NodeToNodeMeshEnabled *bool `json:"nodeToNodeMeshEnabled,omitempty"`
	// ListenPort is the BGP port (default 179).
	ListenPort uint16 `json:"listenPort,omitempty"`
	// LogSeverityScreen is the BGP log level: Debug, Info, Warning, Error,
	// Fatal (default Info).
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
	// ServiceClusterIPs are advertised from every node.
	ServiceClusterIPs []ServiceIPBlock `json:"serviceClusterIPs,omitempty"`
	// ServiceExternalIPs are advertised from every node.
	ServiceExternalIPs []ServiceIPBlock `json:"serviceExternalIPs,omitempty"`
}

// ServiceIPBlock is one advertised service range.
type ServiceIPBlock struct {
	CIDR string `json:"cidr"`
}

// ResourceKind returns KindBGPConfiguration.
func (*BGPConfiguration) ResourceKind() Kind    { return KindBGPConfiguration }
func (c *BGPConfiguration) typeMeta() *TypeMeta { return &c.TypeMeta }

// Default fills in the AS number, mesh, port and log level for "default";
// per-node configurations inherit unset fields from it instead.
func (c *BGPConfiguration) Default() {
	if c.Name != "default" {
		return
	}
	if c.Spec.ASNumber == 0 {
		c.Spec.ASNumber = DefaultASNumber
	}
	if c.Spec.NodeToNodeMeshEnabled == nil {
		t := true
		c.Spec.NodeToNodeMeshEnabled = &t
	}
	if c.Spec.ListenPort == 0 {
		c.Spec.ListenPort = 179
	}
	if c.Spec.LogSeverityScreen == "" {
		c.Spec.LogSeverityScreen = "Info"
	}
}

// Validate checks the configuration.
func (c *BGPConfiguration) Validate() error {
	var fe fieldErrors
	fe.validateMeta(c)
	if c.Name != "" && c.Name != "default" && !strings.HasPrefix(c.Name, "node.") {
		fe.add("metadata.name", "%q must be \"default\" or \"node.<node name>\"", c.Name)
	}
	switch c.Spec.LogSeverityScreen {
	case "", "Debug", "Info", "Warning", "Error", "Fatal":
	default:
		fe.add("spec.logSeverityScreen", "%q is not one of Debug, Info, Warning, Error, Fatal", c.Spec.LogSeverityScreen)
	}
	for i, b := range c.Spec.ServiceClusterIPs {
		fe.prefix(fmt.Sprintf("spec.serviceClusterIPs[%d].cidr", i), b.CIDR)
	}
	for i, b := range c.Spec.ServiceExternalIPs {
		fe.prefix(fmt.Sprintf("spec.serviceExternalIPs[%d].cidr", i), b.CIDR)
	}
	return fe.result(c)
}

// BGPPeer is a BGP session to configure: to an explicit peer (a ToR switch,
// a route reflector by address) or to the nodes a peerSelector selects,
// from the nodes that node or nodeSelector names (all nodes if neither).
type BGPPeer struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec is BGPPeer's desired state.
type BGPPeerSpec struct {
	// Node limits the peering to one node.
	Node string `json:"node,omitempty"`
	// NodeSelector limits the peering to the nodes it selects.
	NodeSelector string `json:"nodeSelector,omitempty"`
	// PeerIP is the peer's address, optionally with a port: 192.0.2.1,
	// 192.0.2.1:1179, [2001:db8::1]:1179.
	PeerIP string `json:"peerIP,omitempty"`
	// ASNumber is the peer's AS (required with peerIP).
	ASNumber ASNumber `json:"asNumber,omitempty"`
	// PeerSelector peers with the nodes it selects (route reflectors).
	PeerSelector string `json:"peerSelector,omitempty"`
	// Password enables TCP-MD5 authentication.
	Password *BGPPassword `json:"password,omitempty"`
	// KeepOriginalNextHop leaves the next hop of advertised routes as it is.
	KeepOriginalNextHop bool `json:"keepOriginalNextHop,omitempty"`
	// MaxRestartTime is the graceful-restart time to advertise ("120s").
	MaxRestartTime string `json:"maxRestartTime,omitempty"`
}

// BGPPassword is a TCP-MD5 password: a secret's key (Kubernetes datastore)
// or the value itself (etcd datastore).
type BGPPassword struct {
	SecretKeyRef *SecretKeyRef `json:"secretKeyRef,omitempty"`
	Value        string        `json:"value,omitempty"`
}

// SecretKeyRef names one key of a Secret in the agent's namespace.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// ResourceKind returns KindBGPPeer.
func (*BGPPeer) ResourceKind() Kind    { return KindBGPPeer }
func (p *BGPPeer) typeMeta() *TypeMeta { return &p.TypeMeta }

// Default does nothing: a peer has no defaults.
func (p *BGPPeer) Default() {}

// PeerAddrPort returns the peer address and port (179 when not given).
func (p *BGPPeer) PeerAddrPort() (netip.AddrPort, error) {
	s := p.Spec.PeerIP
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 179), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address or address:port", s)
	}
	return ap, nil
}

// Validate checks the peer.
func (p *BGPPeer) Validate() error {
	var fe fieldErrors
	fe.validateMeta(p)
	s := &p.Spec
	if s.Node != "" {
		fe.name("spec.node", s.Node)
		if s.NodeSelector != "" {
			fe.add("spec", "node and nodeSelector cannot both be set")
		}
	}
	fe.selector("spec.nodeSelector", s.NodeSelector)
	fe.selector("spec.peerSelector", s.PeerSelector)
	switch {
	case s.PeerIP != "" && s.PeerSelector != "":
		fe.add("spec", "peerIP and peerSelector cannot both be set")
	case s.PeerIP == "" && s.PeerSelector == "":
		fe.add("spec", "one of peerIP and peerSelector is required")
	case s.PeerIP != "":
		ap, err := p.PeerAddrPort()
		switch {
		case err != nil:
			fe.add("spec.peerIP", "%v", err)
		case ap.Addr().Zone() != "" || ap.Addr().Is4In6() || ap.Port() == 0:
			fe.add("spec.peerIP", "%q is not an IP address or address:port", s.PeerIP)
		}
		if s.ASNumber == 0 {
			fe.add("spec.asNumber", "is required with peerIP")
		}
	}
	if pw := s.Password; pw != nil {
		switch {
		case (pw.SecretKeyRef != nil) == (pw.Value != ""):
			fe.add("spec.password", "exactly one of secretKeyRef and value is required")
		case pw.SecretKeyRef != nil:
			fe.name("spec.password.secretKeyRef.name", pw.SecretKeyRef.Name)
			if pw.SecretKeyRef.Key == "" {
				fe.add("spec.password.secretKeyRef.key", "is required")
			}
		case len(pw.Value) > 80:
			fe.add("spec.password.value", "is %d bytes long; TCP-MD5 keys are at most 80", len(pw.Value))
		}
	}
	if s.MaxRestartTime != "" {
		if d, err := time.ParseDuration(s.MaxRestartTime); err != nil || d < 0 || d > 4095*time.Second {
			fe.add("spec.maxRestartTime", "%q is not a duration in 0s..4095s", s.MaxRestartTime)
		}
	}
	return fe.result(p)
}
