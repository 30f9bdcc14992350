package resources

import (
	"fmt"
	"net"
)

// Node is one node of the cluster as the control plane sees it: its
// addresses, BGP identity and VXLAN tunnel endpoint. Its labels are what
// IPPool.nodeSelector and BGPPeer selectors match.
type Node struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NodeSpec `json:"spec"`
}

// NodeSpec is Node's desired state.
type NodeSpec struct {
	// Addresses are the node's addresses ("192.0.2.10" or "192.0.2.10/24").
	Addresses []NodeAddress `json:"addresses,omitempty"`
	// BGP is the node's BGP identity; nil when the node runs no BGP.
	BGP *NodeBGPSpec `json:"bgp,omitempty"`
	// IPv4VXLANTunnelAddr is the node's IPv4 VXLAN tunnel device address.
	IPv4VXLANTunnelAddr string `json:"ipv4VXLANTunnelAddr,omitempty"`
	// VXLANTunnelMACAddr is the MAC of the IPv4 VXLAN tunnel device (VTEP).
	VXLANTunnelMACAddr string `json:"vxlanTunnelMACAddr,omitempty"`
	// IPv6VXLANTunnelAddr is the node's IPv6 VXLAN tunnel device address.
	IPv6VXLANTunnelAddr string `json:"ipv6VXLANTunnelAddr,omitempty"`
	// VXLANTunnelMACAddrV6 is the MAC of the IPv6 VXLAN tunnel device.
	VXLANTunnelMACAddrV6 string `json:"vxlanTunnelMACAddrV6,omitempty"`
}

// NodeAddress is one address of a node.
type NodeAddress struct {
	Address string `json:"address"`
	// Type is CalicoNodeIP, InternalIP or ExternalIP (empty: unspecified).
	Type string `json:"type,omitempty"`
}

// NodeBGPSpec is a node's BGP identity.
type NodeBGPSpec struct {
	// IPv4Address is the node's IPv4 address with prefix length
	// (192.0.2.10/24); the prefix decides CrossSubnet.
	IPv4Address string `json:"ipv4Address,omitempty"`
	// IPv6Address likewise for IPv6.
	IPv6Address string `json:"ipv6Address,omitempty"`
	// IPv4IPIPTunnelAddr is the address of the node's IP-in-IP device.
	IPv4IPIPTunnelAddr string `json:"ipv4IPIPTunnelAddr,omitempty"`
	// ASNumber overrides the cluster's AS for this node.
	ASNumber ASNumber `json:"asNumber,omitempty"`
	// RouteReflectorClusterID makes the node a route reflector.
	RouteReflectorClusterID string `json:"routeReflectorClusterID,omitempty"`
}

// ResourceKind returns KindNode.
func (*Node) ResourceKind() Kind    { return KindNode }
func (n *Node) typeMeta() *TypeMeta { return &n.TypeMeta }

// Default does nothing: a node has no defaults.
func (n *Node) Default() {}

// Validate checks the node.
func (n *Node) Validate() error {
	var fe fieldErrors
	fe.validateMeta(n)
	s := &n.Spec
	for i, a := range s.Addresses {
		fe.addrOrPrefix(fmt.Sprintf("spec.addresses[%d].address", i), a.Address)
		switch a.Type {
		case "", "CalicoNodeIP", "InternalIP", "ExternalIP":
		default:
			fe.add(fmt.Sprintf("spec.addresses[%d].type", i), "%q is not one of CalicoNodeIP, InternalIP, ExternalIP", a.Type)
		}
	}
	if b := s.BGP; b != nil {
		if b.IPv4Address != "" {
			if a, ok := fe.addrOrPrefix("spec.bgp.ipv4Address", b.IPv4Address); ok && !a.Is4() {
				fe.add("spec.bgp.ipv4Address", "%q is not an IPv4 address", b.IPv4Address)
			}
		}
		if b.IPv6Address != "" {
			if a, ok := fe.addrOrPrefix("spec.bgp.ipv6Address", b.IPv6Address); ok && !a.Is6() {
				fe.add("spec.bgp.ipv6Address", "%q is not an IPv6 address", b.IPv6Address)
			}
		}
		if b.IPv4IPIPTunnelAddr != "" {
			if a, ok := fe.addr("spec.bgp.ipv4IPIPTunnelAddr", b.IPv4IPIPTunnelAddr); ok && !a.Is4() {
				fe.add("spec.bgp.ipv4IPIPTunnelAddr", "%q is not an IPv4 address", b.IPv4IPIPTunnelAddr)
			}
		}
		if id := b.RouteReflectorClusterID; id != "" {
			if a, ok := fe.addr("spec.bgp.routeReflectorClusterID", id); ok && !a.Is4() {
				fe.add("spec.bgp.routeReflectorClusterID", "%q is not a dotted-quad cluster ID", id)
			}
		}
	}
	fe.tunnel("spec.ipv4VXLANTunnelAddr", s.IPv4VXLANTunnelAddr, true)
	fe.tunnel("spec.ipv6VXLANTunnelAddr", s.IPv6VXLANTunnelAddr, false)
	fe.mac("spec.vxlanTunnelMACAddr", s.VXLANTunnelMACAddr)
	fe.mac("spec.vxlanTunnelMACAddrV6", s.VXLANTunnelMACAddrV6)
	return fe.result(n)
}

func (fe *fieldErrors) tunnel(field, s string, v4 bool) {
	if s == "" {
		return
	}
	if a, ok := fe.addr(field, s); ok && a.Is4() != v4 {
		fam := "IPv6"
		if v4 {
			fam = "IPv4"
		}
		fe.add(field, "%q is not an %s address", s, fam)
	}
}

func (fe *fieldErrors) mac(field, s string) {
	if s == "" {
		return
	}
	if hw, err := net.ParseMAC(s); err != nil || len(hw) != 6 {
		fe.add(field, "%q is not a 48-bit MAC address", s)
	}
}

// HostEndpoint is one of a node's own interfaces, for host policy.
type HostEndpoint struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       HostEndpointSpec `json:"spec"`
}

// HostEndpointSpec is HostEndpoint's desired state.
type HostEndpointSpec struct {
	// Node is the node the interface is on.
	Node string `json:"node"`
	// InterfaceName is the interface ("*" for all of the node's
	// interfaces); when empty, ExpectedIPs identify it.
	InterfaceName string `json:"interfaceName,omitempty"`
	// ExpectedIPs are the interface's addresses, used by policy selectors.
	ExpectedIPs []string `json:"expectedIPs,omitempty"`
	// Profiles are applied to the endpoint.
	Profiles []string `json:"profiles,omitempty"`
	// Ports are named ports for policy.
	Ports []EndpointPort `json:"ports,omitempty"`
}

// EndpointPort is a named port.
type EndpointPort struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port"`
}

// ResourceKind returns KindHostEndpoint.
func (*HostEndpoint) ResourceKind() Kind    { return KindHostEndpoint }
func (h *HostEndpoint) typeMeta() *TypeMeta { return &h.TypeMeta }

// Default does nothing: a host endpoint has no defaults.
func (h *HostEndpoint) Default() {}

// Validate checks the host endpoint.
func (h *HostEndpoint) Validate() error {
	var fe fieldErrors
	fe.validateMeta(h)
	s := &h.Spec
	fe.name("spec.node", s.Node)
	if s.InterfaceName == "" && len(s.ExpectedIPs) == 0 {
		fe.add("spec", "one of interfaceName and expectedIPs is required")
	}
	if n := s.InterfaceName; n != "" && n != "*" && !validIfName(n) {
		fe.add("spec.interfaceName", "%q is not a valid interface name (1..15 bytes, no '/', ':' or whitespace)", n)
	}
	for i, ip := range s.ExpectedIPs {
		fe.addr(fmt.Sprintf("spec.expectedIPs[%d]", i), ip)
	}
	for i, p := range s.Profiles {
		fe.name(fmt.Sprintf("spec.profiles[%d]", i), p)
	}
	names := map[string]bool{}
	for i, p := range s.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if p.Name == "" || len(p.Name) > 15 || !validLabelValue(p.Name) {
			fe.add(f+".name", "%q is not a valid port name", p.Name)
		} else if names[p.Name] {
			fe.add(f+".name", "%q is used twice", p.Name)
		}
		names[p.Name] = true
		switch p.Protocol {
		case "TCP", "UDP", "SCTP":
		default:
			fe.add(f+".protocol", "%q is not one of TCP, UDP, SCTP", p.Protocol)
		}
		if p.Port == 0 {
			fe.add(f+".port", "is required (1..65535)")
		}
	}
	return fe.result(h)
}

func validIfName(n string) bool {
	if len(n) == 0 || len(n) > 15 || n == "." || n == ".." {
		return false
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
