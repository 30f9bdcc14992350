package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/control/resources"
)

// WorkloadEndpoint is one pod interface on one node: its addresses (assigned
// by IPAM to the handle ContainerID), its labels (metadata.labels, the pod's)
// and its named ports. The agent of the node writes it when the CNI plugin
// adds the interface and deletes it when the plugin deletes it; every agent
// watches all of them, because policy selectors resolve to the addresses of
// endpoints on every node.
type WorkloadEndpoint struct {
	resources.TypeMeta   `json:",inline"`
	resources.ObjectMeta `json:"metadata"`
	Spec                 WorkloadEndpointSpec `json:"spec"`
}

// WorkloadEndpointSpec is a WorkloadEndpoint's state.
type WorkloadEndpointSpec struct {
	// Node is the node the workload runs on.
	Node string `json:"node"`
	// Orchestrator is "k8s" for Kubernetes pods, "cni" otherwise.
	Orchestrator string `json:"orchestrator,omitempty"`
	// Pod is the pod's name (Kubernetes).
	Pod string `json:"pod,omitempty"`
	// ContainerID is the CNI container ID: the IPAM handle of the
	// addresses, and what DELETE /v1/endpoints/{containerID} names.
	ContainerID string `json:"containerID"`
	// Endpoint is the interface name inside the pod (eth0).
	Endpoint string `json:"endpoint,omitempty"`
	// InterfaceName is the host side of the pod's veth.
	InterfaceName string `json:"interfaceName,omitempty"`
	// MAC is the pod interface's MAC address.
	MAC string `json:"mac,omitempty"`
	// IPNetworks are the pod's addresses, /32 or /128.
	IPNetworks []string `json:"ipNetworks"`
	// Ports are named ports for policy.
	Ports []resources.EndpointPort `json:"ports,omitempty"`
	// ServiceAccountName is the pod's service account.
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
}

// ObjectKind returns KindWorkloadEndpoint.
func (*WorkloadEndpoint) ObjectKind() resources.Kind { return KindWorkloadEndpoint }

// Default sets the orchestrator and the interface name.
func (w *WorkloadEndpoint) Default() {
	if w.Spec.Orchestrator == "" {
		w.Spec.Orchestrator = "cni"
		if w.Spec.Pod != "" {
			w.Spec.Orchestrator = "k8s"
		}
	}
	if w.Spec.Endpoint == "" {
		w.Spec.Endpoint = "eth0"
	}
}

// Validate checks the endpoint.
func (w *WorkloadEndpoint) Validate() error {
	var fe fieldErrors
	fe.meta(w)
	s := &w.Spec
	fe.name("spec.node", s.Node)
	if !resources.ValidHandle(s.ContainerID) {
		fe.add("spec.containerID", "%q is not a valid container ID (1..253 letters, digits, '-', '_', '.')", s.ContainerID)
	}
	if s.MAC != "" {
		if hw, err := net.ParseMAC(s.MAC); err != nil || len(hw) != 6 {
			fe.add("spec.mac", "%q is not a 48-bit MAC address", s.MAC)
		}
	}
	for _, f := range []struct{ field, v string }{{"spec.interfaceName", s.InterfaceName}, {"spec.endpoint", s.Endpoint}} {
		if f.v != "" && (len(f.v) > 15 || strings.ContainsAny(f.v, "/: \t\n")) {
			fe.add(f.field, "%q is not a valid interface name", f.v)
		}
	}
	if len(s.IPNetworks) == 0 {
		fe.add("spec.ipNetworks", "at least one address is required")
	}
	for i, n := range s.IPNetworks {
		if _, err := parseHostPrefix(n); err != nil {
			fe.add(fmt.Sprintf("spec.ipNetworks[%d]", i), "%v", err)
		}
	}
	for i, p := range s.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if _, err := acl.ParseProtocol(p.Protocol); err != nil {
			fe.add(f+".protocol", "%q is not one of TCP, UDP, SCTP", p.Protocol)
		}
		if ap, err := acl.ParsePort(p.Name); err != nil || ap.Name == "" {
			fe.add(f+".name", "%q is not a valid port name", p.Name)
		}
		if p.Port == 0 {
			fe.add(f+".port", "is required (1..65535)")
		}
	}
	return fe.result(w)
}

// parseHostPrefix parses "10.0.0.1/32", "fd00::1/128" or a bare address.
func parseHostPrefix(s string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" && !a.Is4In6() {
		return a, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return netip.Addr{}, fmt.Errorf("%q is not an address or a host prefix", s)
	}
	if p.Bits() != p.Addr().BitLen() {
		return netip.Addr{}, fmt.Errorf("%q is not a host prefix (/%d)", s, p.Addr().BitLen())
	}
	return p.Addr(), nil
}

// Addrs returns the endpoint's addresses (invalid entries skipped).
func (w *WorkloadEndpoint) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, n := range w.Spec.IPNetworks {
		if a, err := parseHostPrefix(n); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// ToACL returns the endpoint in the policy model.
func (w *WorkloadEndpoint) ToACL() acl.Endpoint {
	e := acl.Endpoint{Name: w.Name, Namespace: w.Namespace, Node: w.Spec.Node, Labels: w.Labels, IPs: w.Addrs()}
	for _, p := range w.Spec.Ports {
		proto, err := acl.ParseProtocol(p.Protocol)
		if err != nil {
			continue
		}
		e.Ports = append(e.Ports, acl.NamedPort{Name: p.Name, Protocol: proto, Port: p.Port})
	}
	return e
}

// hostEndpointACL returns a HostEndpoint in the policy model.
func hostEndpointACL(h *resources.HostEndpoint) acl.Endpoint {
	e := acl.Endpoint{Name: h.Name, Host: true, Node: h.Spec.Node, Labels: h.Labels}
	for _, s := range h.Spec.ExpectedIPs {
		if a, err := netip.ParseAddr(s); err == nil {
			e.IPs = append(e.IPs, a)
		}
	}
	for _, p := range h.Spec.Ports {
		if proto, err := acl.ParseProtocol(p.Protocol); err == nil {
			e.Ports = append(e.Ports, acl.NamedPort{Name: p.Name, Protocol: proto, Port: p.Port})
		}
	}
	return e
}

// WorkloadEndpointName returns the name of the endpoint of a container on a
// node: "<node>-k8s-<pod>-<endpoint>" like Calico's for pods (dots and
// other characters outside [a-z0-9-] become '-'), "<node>-cni-<hash>"
// otherwise, and a hash when that would not be a valid name.
func WorkloadEndpointName(node, pod, endpoint, containerID string) string {
	if endpoint == "" {
		endpoint = "eth0"
	}
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
				return r
			}
			if r >= 'A' && r <= 'Z' {
				return r + 'a' - 'A'
			}
			return '-'
		}, s)
	}
	sum := sha256.Sum256([]byte(node + "\x00" + containerID + "\x00" + endpoint))
	h := hex.EncodeToString(sum[:8])
	name := clean(node) + "-cni-" + h
	if pod != "" {
		name = clean(node) + "-k8s-" + clean(pod) + "-" + clean(endpoint)
	}
	if !resources.ValidDNSSubdomain(name) || len(name) > 63 {
		name = "wep-" + h
	}
	return name
}
