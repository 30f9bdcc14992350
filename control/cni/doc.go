// Package cni is Tabby's CNI plugin (installed as `tabby` in the CNI bin
// directory; the binary is cmd/tabby-cni). It implements CNI spec 1.1
// (ADD, DEL, CHECK, GC, STATUS, VERSION and the older versions
// github.com/containernetworking/cni supports) in Calico's model: one veth
// per pod (host side "tab" + a hash of the container ID, HostVethName;
// container side CNI_IFNAME), a /32 (and/or /128) address from the node
// agent's IPAM, a default route via the link-local gateway 169.254.1.1
// answered by proxy ARP on the host veth (fe80::1 on the host veth for
// IPv6), and a host route per address.
//
// Addresses and the endpoint registration come from the agent's endpoint
// API on its unix socket (control/agent, POST /v1/endpoints): its reply
// comes after the policy including the pod is published, so the pod is
// covered by policy before ADD returns; with the agent's afxdp dataplane it
// also comes after the host veth is a port of the engine with the pod's
// addresses routed to it, and asks the plugin to turn TX checksum offload
// off on the container interface (AF_XDP hands the engine frames without
// the kernel's checksum-offload state, so partial checksums would reach the
// receiver), which it does with the ETHTOOL_STXCSUM ioctl. A failed ADD
// undoes what it did: the veth is removed and the addresses released. DEL
// is idempotent; it deletes the veth before telling the agent, which copes
// with the engine port's interface being gone.
//
// Configuration (a plugin object of a conflist):
//
//	{"type": "tabby", "name": "k8s-pod-network", "cniVersion": "1.1.0",
//	 "mtu": 1500,                              // default 1500
//	 "log_level": "info",                      // debug, info, warning, error
//	 "log_file_path": "/var/log/tabby/cni.log", // optional, besides stderr
//	 "agent_socket": "/run/tabby/agent.sock",  // default
//	 "agent_timeout": 30,                      // seconds per agent call
//	 "ipam": {"type": "tabby-ipam", "assign_ipv4": "true", "assign_ipv6": "false",
//	          "ipv4_pools": ["default-ipv4-ippool"], "ipv6_pools": []},
//	 "kubernetes": {"kubeconfig": "...", "pod_namespace_default": "default"}}
//
// CNI_ARGS K8S_POD_NAME and K8S_POD_NAMESPACE name the pod for the agent.
//
// Errors are CNI error objects: 2 unsupported field (an IPAM type other
// than tabby-ipam), 3 the container's namespace does not exist (ADD,
// CHECK), 4 bad environment (CNI_IFNAME, CNI_ARGS, the interface exists
// already), 6 undecodable JSON, 7 invalid configuration (wrong types, out
// of range values, a chain where an earlier plugin created CNI_IFNAME), 8
// CNI_NETNS is not a namespace, 11 the agent is down, not ready or cannot
// reach its datastore (try again), 50 STATUS: the agent cannot serve ADD,
// 100 no free address (ErrIPAMExhausted), 101 the agent rejected the
// request (ErrAgentRejected), 999 anything else.
//
// Chaining: as the first plugin, the result lists the host veth, the
// container interface, the addresses and default routes, which portmap,
// bandwidth and tuning consume. After another plugin, the previous
// result's interfaces, addresses and routes are kept first and tabby's are
// appended.
package cni
