// Package lab is `tabby lab`: a multi-node Tabby cluster on one machine,
// made of network namespaces (bench/topo).
//
//	              router namespace "rt" (forwards between subnets; etcd)
//	     br1 192.168.101.1/24            br2 192.168.102.1/24
//	      |            |                   |
//	n1 eth0 .11   n3 eth0 .13         n2 eth0 .12      (nodes, round robin
//	  |   |         |   |               |   |           over the subnets)
//	n1p1 n1p2     n3p1 n3p2           n2p1 n2p2        (pods, via CNI)
//
// One shared embedded etcd runs in the router namespace (a `tabby lab
// etcd` process: etcd on its loopback plus a TCP relay on every address,
// port 2379), so each node reaches it through its gateway. Each node runs
// one `tabby agent` process (`ip netns exec <node> tabby agent`, configured
// through TABBY_* variables). Pods are namespaces whose eth0 is set up by
// Tabby's CNI plugin, driven through libcni inside the node namespace as a
// container runtime does.
//
// The lab is owned by a supervisor process (`tabby lab up` starts `tabby
// lab supervise` detached and waits until it reports ready): it owns the
// topology, so the agents and etcd (started with topo's Start, killed when
// their parent dies) live as long as it does. `tabby lab down` signals it;
// after a crash, topo.Cleanup removes what is left. The lab's state (names,
// PIDs, addresses) is in StateDir/<name>/state.json.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// StateDir holds one directory per lab.
var StateDir = "/run/tabby/lab"

// Config is what `tabby lab up` builds.
type Config struct {
	Name        string `json:"name"`
	Nodes       int    `json:"nodes"`
	Subnets     int    `json:"subnets"`
	PodsPerNode int    `json:"podsPerNode"`
	// Dataplane is kernel or afxdp.
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

// Validate checks the configuration and fills defaults.
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
	switch c.Dataplane {
	case "":
		c.Dataplane = "kernel"
	case "kernel", "afxdp":
	default:
		return fmt.Errorf("dataplane %q: must be kernel or afxdp", c.Dataplane)
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
	if _, err := netip.ParsePrefix(c.PoolCIDR); err != nil {
		return fmt.Errorf("pool %q: %w", c.PoolCIDR, err)
	}
	return nil
}

// BGP reports whether the agents run the BGP mesh (no VXLAN).
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
}

// Pod is one pod of a running lab.
type Pod struct {
	Name        string `json:"name"`
	Node        string `json:"node"`
	Netns       string `json:"netns"`
	ContainerID string `json:"containerID"`
	IP          string `json:"ip"`
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
	Nodes    []Node    `json:"nodes"`
	Pods     []Pod     `json:"pods"`
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
