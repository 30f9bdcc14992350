// Package lab is `tabby lab`: a multi-node Tabby cluster on one machine,
// made of network namespaces (bench/topo), and the end-to-end checks run
// against it (the demo and CI's e2e suite).
//
//	              router namespace "rt" (forwards between subnets; etcd;
//	              BIRD 2 as the subnets' BGP peer with --encap none)
//	     br1 192.168.101.1/24            br2 192.168.102.1/24
//	      |            |                   |
//	n1 eth0 .11   n3 eth0 .13         n2 eth0 .12      (nodes, round robin
//	  |   |         |   |               |   |           over the subnets)
//	n1p1 n1p2     n3p1 n3p2           n2p1 n2p2        (pods, via CNI)
//
// One shared embedded etcd runs in the router namespace (a `tabby lab
// etcd` process: etcd on its loopback plus a TCP relay on every address,
// port 2379, and a relay on the unix socket <lab dir>/etcd/etcd.sock, which
// is how `tabby lab` itself and `tabby apply` on the host reach it), so
// each node reaches it through its gateway. Each node runs one `tabby
// agent` process (`ip netns exec <node> tabby agent`, configured through
// TABBY_* variables) with its own dataplane: --dataplane takes one value
// (kernel, afxdp) or a comma-separated list assigned to the nodes in turn
// (kernel,afxdp: n1 kernel, n2 afxdp, n3 kernel, ...), which gives the
// interop case (a kernel VXLAN device as the peer of Tabby's encap) and a
// same-run comparison of the two dataplanes. Pods are namespaces whose eth0
// is set up by Tabby's CNI plugin, driven through libcni inside the node
// namespace as a container runtime does; they are spread over two
// Kubernetes namespaces (lab-a for odd pod numbers, lab-b for even) and,
// as an orchestrator does in etcd mode, labelled on their
// WorkloadEndpoint: app=lab and role=web or role=db (alternating over
// node and pod number), so policy can select them.
//
// With --encap none and two subnets the router must route the pod blocks:
// BIRD 2 runs in the router namespace as the subnets' top-of-rack peer
// (iBGP, AS 64512, graceful restart, routes exported into its kernel
// table); the lab labels each Node lab.tabby.dev/subnet=<n> and creates
// one BGPPeer per subnet (nodeSelector on that label, peerIP the subnet's
// gateway). IP-in-IP with the kernel dataplane needs the kernel's ipip
// module: without it `lab up` refuses (afxdp nodes encapsulate
// themselves).
//
// The lab is owned by a supervisor process (`tabby lab up` starts `tabby
// lab supervise` detached and waits until it reports ready): it owns the
// topology, so the agents, etcd and BIRD (started with topo's Start,
// killed when their parent dies) live as long as it does. It serves a
// control socket (<lab dir>/control.sock) through which `tabby lab
// restart-agent` kills an agent with a chosen signal and starts it again.
// `tabby lab down` signals it; after a crash, topo.Cleanup removes what is
// left. The lab's state (names, PIDs, addresses) is in
// StateDir/<name>/state.json.
//
// The checks (Check): the pod-to-pod matrix (ICMP, TCP, UDP; same node,
// other node, other subnet); policy (default deny, allow by label,
// namespace isolation, egress deny: applied as real resources through the
// datastore, verified with probes, removed, full matrix again); MTU (DF
// set, pod-MTU-sized packets pass, one byte more is refused, never lost
// silently); iperf3 throughput per path and dataplane pair; and agent
// restart during a TCP stream (Restart). Cycle runs pod add/delete
// cycles and reports CNI ADD/DEL latency and ADD-to-first-packet, then
// checks that nothing leaked (IPAM, veths, routes, nftables, conntrack,
// agent endpoints).
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// StateDir holds one directory per lab.
var StateDir = "/run/tabby/lab"

// Config is what `tabby lab up` builds.
type Config struct {
	Name        string `json:"name"`
	Nodes       int    `json:"nodes"`
	Subnets     int    `json:"subnets"`
	PodsPerNode int    `json:"podsPerNode"`
	// Dataplane is kernel or afxdp, or a comma-separated list of them
	// assigned to the nodes in turn (NodeDataplane).
	Dataplane string `json:"dataplane"`
	// Encap is none, ipip, vxlan, ipip-crosssubnet or vxlan-crosssubnet.
	Encap    string `json:"encap"`
	PoolCIDR string `json:"poolCIDR"`
	// Self is the tabby binary run for the agents, etcd and the
	// supervisor; CNIBin the directory holding the CNI plugin as "tabby".
	Self   string `json:"self"`
	CNIBin string `json:"cniBin"`
	// Env is added to every process the lab starts (tests).
	Env []string `json:"env,omitempty"`
}

// Validate checks the configuration and fills defaults. It does not look
// at the machine; Preflight does.
func (c *Config) Validate() error {
	if c.Name == "" {
		c.Name = "lab"
	}
	for _, r := range c.Name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') || len(c.Name) > 20 {
			return fmt.Errorf("name %q: lower-case letters, digits and '-', at most 20", c.Name)
		}
	}
	if c.Nodes < 1 || c.Nodes > 50 {
		return fmt.Errorf("nodes %d: must be 1..50", c.Nodes)
	}
	if c.Subnets < 1 || c.Subnets > 4 {
		return fmt.Errorf("subnets %d: must be 1..4", c.Subnets)
	}
	if c.PodsPerNode < 0 || c.PodsPerNode > 50 {
		return fmt.Errorf("pods-per-node %d: must be 0..50", c.PodsPerNode)
	}
	if c.Dataplane == "" {
		c.Dataplane = "kernel"
	}
	dps := strings.Split(c.Dataplane, ",")
	if len(dps) > c.Nodes {
		return fmt.Errorf("dataplane %q: %d values for %d nodes", c.Dataplane, len(dps), c.Nodes)
	}
	for i, d := range dps {
		switch d {
		case "kernel", "afxdp":
		default:
			return fmt.Errorf("dataplane %q: value %d is %q; each must be kernel or afxdp", c.Dataplane, i+1, d)
		}
	}
	switch c.Encap {
	case "":
		c.Encap = "vxlan"
	case "none", "ipip", "vxlan", "ipip-crosssubnet", "vxlan-crosssubnet":
	default:
		return fmt.Errorf("encap %q: must be none, ipip, vxlan, ipip-crosssubnet or vxlan-crosssubnet", c.Encap)
	}
	if c.PoolCIDR == "" {
		c.PoolCIDR = "10.244.0.0/16"
	}
	if p, err := netip.ParsePrefix(c.PoolCIDR); err != nil {
		return fmt.Errorf("pool %q: %w", c.PoolCIDR, err)
	} else if !p.Addr().Is4() || p.Bits() > 24 {
		return fmt.Errorf("pool %q: must be an IPv4 prefix of /24 or shorter", c.PoolCIDR)
	}
	return nil
}

// NodeDataplane returns the dataplane of node i (0-based): the values of
// Dataplane taken in turn.
func (c *Config) NodeDataplane(i int) string {
	dps := strings.Split(c.Dataplane, ",")
	return dps[i%len(dps)]
}

// Mixed reports whether the lab has both kernel and afxdp nodes.
func (c *Config) Mixed() bool {
	return strings.Contains(c.Dataplane, "kernel") && strings.Contains(c.Dataplane, "afxdp")
}

// kernelIPIP reports whether a kernel-dataplane node would need the
// kernel's IP-in-IP device.
func (c *Config) kernelIPIP() bool {
	if c.Encap != "ipip" && c.Encap != "ipip-crosssubnet" {
		return false
	}
	if c.Encap == "ipip-crosssubnet" && c.Subnets < 2 {
		return false
	}
	for i := 0; i < c.Nodes; i++ {
		if c.NodeDataplane(i) == "kernel" {
			return true
		}
	}
	return false
}

// NeedsBIRD reports whether the router needs BIRD: native routing (no
// encapsulation) between subnets.
func (c *Config) NeedsBIRD() bool { return c.Encap == "none" && c.Subnets > 1 }

// Preflight checks what the configuration needs from this machine: the
// kernel's ipip module for IP-in-IP on kernel-dataplane nodes, BIRD 2 for
// --encap none across subnets, iproute2.
func (c *Config) Preflight() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("needs iproute2 (ip): install it (scripts/deps.sh)")
	}
	if c.kernelIPIP() {
		if err := IPIPSupported(); err != nil {
			return fmt.Errorf("encap %s with the kernel dataplane needs the kernel's IP-in-IP device, which this "+
				"kernel cannot create (%v: no ipip module); use --encap vxlan, vxlan-crosssubnet or none, or "+
				"--dataplane afxdp (which encapsulates IP-in-IP itself)", c.Encap, err)
		}
	}
	if c.NeedsBIRD() {
		if _, err := exec.LookPath(birdBinary); err != nil {
			return fmt.Errorf("encap none across %d subnets needs BIRD 2 (%s) on the lab router to route the pod "+
				"blocks: install bird2 (scripts/deps.sh)", c.Subnets, birdBinary)
		}
	}
	return nil
}

// IPIPSupported tries to create an IP-in-IP device in a scratch network
// namespace (which disappears with its last reference).
func IPIPSupported() error {
	errc := make(chan error, 1)
	go func() {
		// This thread's namespace changes and is not restored: the
		// thread exits with the goroutine (LockOSThread without Unlock).
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		la := netlink.NewLinkAttrs()
		la.Name = "tabbyprobe0"
		errc <- netlink.LinkAdd(&netlink.Iptun{LinkAttrs: la})
	}()
	return <-errc
}

// BGP reports whether the agents run BGP (no VXLAN).
func (c *Config) BGP() bool {
	return c.Encap == "none" || c.Encap == "ipip" || c.Encap == "ipip-crosssubnet"
}

// MTU is the pods' MTU for the encapsulation.
func (c *Config) MTU() int {
	switch c.Encap {
	case "vxlan", "vxlan-crosssubnet":
		return 1450
	case "ipip", "ipip-crosssubnet":
		return 1480
	}
	return 1500
}

// Dir is the lab's directory.
func Dir(name string) string { return filepath.Join(StateDir, name) }

// Node is one node of a running lab.
type Node struct {
	Name      string `json:"name"`
	Netns     string `json:"netns"`
	Subnet    int    `json:"subnet"`
	Address   string `json:"address"` // with prefix length
	Gateway   string `json:"gateway"`
	Socket    string `json:"socket"` // the agent's endpoint API
	PID       int    `json:"pid"`
	Log       string `json:"log"`
	HealthURL string `json:"healthURL"` // inside the node namespace
	// Dataplane is the node's agent's dataplane (kernel or afxdp).
	Dataplane string `json:"dataplane"`
}

// Pod is one pod of a running lab.
type Pod struct {
	Name        string `json:"name"`
	Node        string `json:"node"`
	Netns       string `json:"netns"`
	ContainerID string `json:"containerID"`
	IP          string `json:"ip"`
	// Namespace is the pod's Kubernetes namespace (K8S_POD_NAMESPACE),
	// Labels the labels the lab set on its WorkloadEndpoint.
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

// State is the lab's state file.
type State struct {
	Config Config `json:"config"`
	// Status is starting, ready or failed (Error says why).
	Status   string    `json:"status"`
	Error    string    `json:"error,omitempty"`
	Topology string    `json:"topology"`
	PID      int       `json:"pid"` // the supervisor
	Started  time.Time `json:"started"`
	Router   string    `json:"router"`
	Etcd     string    `json:"etcd"` // client URL as nodes see it (first subnet)
	EtcdPID  int       `json:"etcdPID"`
	// EtcdSocket is the etcd relay's unix socket (reachable from the
	// host namespace: unix://<EtcdSocket> as an endpoint).
	EtcdSocket string `json:"etcdSocket"`
	// Control is the supervisor's control socket.
	Control string `json:"control"`
	// BIRD is the router's BGP daemon (with --encap none across subnets).
	BIRD  *BIRD  `json:"bird,omitempty"`
	Nodes []Node `json:"nodes"`
	Pods  []Pod  `json:"pods"`
}

func statePath(name string) string { return filepath.Join(Dir(name), "state.json") }

// LoadState reads a lab's state file.
func LoadState(name string) (*State, error) {
	b, err := os.ReadFile(statePath(name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no lab %q (no %s)", name, statePath(name))
		}
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(name), err)
	}
	return &st, nil
}

func (st *State) save() error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	p := statePath(st.Config.Name)
	if err := os.WriteFile(p+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// Alive reports whether the lab's supervisor runs.
func (st *State) Alive() bool { return st.PID > 0 && syscall.Kill(st.PID, 0) == nil && !zombie(st.PID) }

// Labs lists the names of labs with a directory.
func Labs() []string {
	es, _ := os.ReadDir(StateDir)
	var out []string
	for _, e := range es {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}
