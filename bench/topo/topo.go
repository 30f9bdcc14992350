// Package topo builds network topologies out of Linux network namespaces and
// veth pairs for Tabby's end-to-end tests, benchmarks and lab, and tears them
// down completely.
//
// Every Topology has a unique name (a prefix and a random suffix); its
// namespaces are named "<topology>-<node>", so concurrent tests never collide.
// The topology records itself in a state file under StateDir before creating
// anything, so that Cleanup can remove what a crashed process left behind.
// Close kills every process the topology started and deletes its namespaces
// (which deletes the veths and routes inside them); it is safe to call more
// than once and is what tests register with t.Cleanup.
//
// All methods need root (CAP_NET_ADMIN and CAP_SYS_ADMIN). A Topology is safe
// for use by one goroutine at a time.
package topo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tabbynet/tabby/internal/nsutil"
)

// StateDir is where topologies record themselves for crash cleanup.
var StateDir = "/run/tabby/topo"

// state is what a topology writes to its state file.
type state struct {
	Name       string   `json:"name"`
	PID        int      `json:"pid"`
	Namespaces []string `json:"namespaces"`
	Processes  []int    `json:"processes"`
}

// Topology is a set of namespaces, the links between them, and the
// processes running in them.
type Topology struct {
	Name string

	mu     sync.Mutex
	st     state
	nss    []*Netns
	procs  []*exec.Cmd
	closed bool
}

// New creates an empty topology named prefix plus a random suffix. prefix
// should be short: namespace names are used in interface-free contexts only,
// but keep "<name>-<node>" readable.
func New(prefix string) (*Topology, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	t := &Topology{Name: prefix + hex.EncodeToString(b[:])}
	t.st = state{Name: t.Name, PID: os.Getpid()}
	if err := t.save(); err != nil {
		return nil, fmt.Errorf("topology %s: %w", t.Name, err)
	}
	return t, nil
}

func (t *Topology) statePath() string { return filepath.Join(StateDir, t.Name+".json") }

func (t *Topology) save() error {
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	b, err := json.Marshal(t.st)
	if err != nil {
		return err
	}
	tmp := t.statePath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return os.Rename(tmp, t.statePath())
}

// Netns is one network namespace of a topology.
type Netns struct {
	// Name is the full namespace name (as `ip netns list` shows it).
	Name string
	// Node is the short name given to Topology.Namespace.
	Node   string
	handle netns.NsHandle
	nl     *netlink.Handle
}

// Namespace creates a namespace for node (a short name, unique in the
// topology) with its loopback up.
func (t *Topology) Namespace(node string) (*Netns, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("topology %s: closed", t.Name)
	}
	name := t.Name + "-" + node
	// Record first: a crash between creating and recording must not leak.
	t.st.Namespaces = append(t.st.Namespaces, name)
	if err := t.save(); err != nil {
		return nil, err
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	n := &Netns{Name: name, Node: node, handle: h, nl: nl}
	t.nss = append(t.nss, n)
	if err := n.SetUp("lo"); err != nil {
		return nil, err
	}
	return n, nil
}

// Netlink returns a netlink handle operating inside the namespace.
func (n *Netns) Netlink() *netlink.Handle { return n.nl }

// Handle returns the namespace's file handle (for netlink.NsFd and setns).
func (n *Netns) Handle() netns.NsHandle { return n.handle }

// Veth creates a veth pair: aIf in a and bIf in b, both up, with the given
// MTU (0: 1500). It returns the two link indexes.
func (t *Topology) Veth(a *Netns, aIf string, b *Netns, bIf string, mtu int) (aIdx, bIdx int, err error) {
	if mtu == 0 {
		mtu = 1500
	}
	// Create both ends in a, then move the peer: netlink's PeerNamespace
	// does the move in the same request.
	la := netlink.NewLinkAttrs()
	la.Name = aIf
	la.MTU = mtu
	v := &netlink.Veth{LinkAttrs: la, PeerName: bIf, PeerNamespace: netlink.NsFd(int(b.handle)), PeerMTU: uint32(mtu)}
	if err := a.nl.LinkAdd(v); err != nil {
		return 0, 0, fmt.Errorf("veth %s/%s - %s/%s: %w", a.Node, aIf, b.Node, bIf, err)
	}
	if err := a.SetUp(aIf); err != nil {
		return 0, 0, err
	}
	if err := b.SetUp(bIf); err != nil {
		return 0, 0, err
	}
	la2, err := a.nl.LinkByName(aIf)
	if err != nil {
		return 0, 0, err
	}
	lb, err := b.nl.LinkByName(bIf)
	if err != nil {
		return 0, 0, err
	}
	return la2.Attrs().Index, lb.Attrs().Index, nil
}

// SetUp sets a link up.
func (n *Netns) SetUp(ifname string) error {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("%s: link %s: %w", n.Node, ifname, err)
	}
	if err := n.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s: set %s up: %w", n.Node, ifname, err)
	}
	return nil
}

// Link returns a link by name.
func (n *Netns) Link(ifname string) (netlink.Link, error) {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("%s: link %s: %w", n.Node, ifname, err)
	}
	return l, nil
}

// MAC returns the hardware address of a link.
func (n *Netns) MAC(ifname string) (net.HardwareAddr, error) {
	l, err := n.Link(ifname)
	if err != nil {
		return nil, err
	}
	return l.Attrs().HardwareAddr, nil
}

// AddAddr adds an address (with prefix length) to a link.
func (n *Netns) AddAddr(ifname string, p netip.Prefix) error {
	l, err := n.Link(ifname)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = syscall.IFA_F_NODAD
	}
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("%s: add %v to %s: %w", n.Node, p, ifname, err)
	}
	return nil
}

// AddRoute adds a route to dst via gw (invalid: on-link) out of ifname.
func (n *Netns) AddRoute(dst netip.Prefix, gw netip.Addr, ifname string) error {
	l, err := n.Link(ifname)
	if err != nil {
		return err
	}
	r := &netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
	}
	if gw.IsValid() {
		r.Gw = gw.AsSlice()
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("%s: route %v via %v dev %s: %w", n.Node, dst, gw, ifname, err)
	}
	return nil
}

// AddNeigh adds a permanent neighbour entry (so no ARP is needed).
func (n *Netns) AddNeigh(ifname string, ip netip.Addr, mac net.HardwareAddr) error {
	l, err := n.Link(ifname)
	if err != nil {
		return err
	}
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	ne := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}
	if err := n.nl.NeighSet(ne); err != nil {
		return fmt.Errorf("%s: neigh %v lladdr %v dev %s: %w", n.Node, ip, mac, ifname, err)
	}
	return nil
}

// Sysctl writes a /proc/sys value inside the namespace (key in dotted form,
// e.g. "net.ipv4.ip_forward").
func (n *Netns) Sysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return n.Do(func() error {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("%s: sysctl %s=%s: %w", n.Node, key, value, err)
		}
		return nil
	})
}

// Do runs fn on a goroutine locked to an OS thread that has entered the
// namespace. Sockets fn opens belong to the namespace and stay there.
func (n *Netns) Do(fn func() error) error {
	if err := nsutil.Do(n.handle, fn); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	return nil
}

// Command returns a command that runs inside the namespace (via
// `ip netns exec`). Start it with Topology.Start to have it cleaned up.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output.
func (n *Netns) Run(name string, args ...string) (string, error) {
	out, err := n.Command(context.Background(), name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %v: %s", n.Node, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Start starts cmd and records it so Close kills it.
func (t *Topology) Start(cmd *exec.Cmd) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("topology %s: closed", t.Name)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	t.procs = append(t.procs, cmd)
	t.st.Processes = append(t.st.Processes, cmd.Process.Pid)
	return t.save()
}

// Close kills the topology's processes and deletes its namespaces and state
// file. It reports every failure but keeps going.
func (t *Topology) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	for _, c := range t.procs {
		if c.Process != nil {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	for _, n := range t.nss {
		n.nl.Close()
		n.handle.Close()
	}
	for _, name := range t.st.Namespaces {
		if err := deleteNamespace(name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(t.statePath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func deleteNamespace(name string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var out []byte
	var err error
	// A namespace with a process still exiting may be busy for a moment.
	for i := 0; i < 20; i++ {
		if out, err = exec.Command("ip", "netns", "delete", name).CombinedOutput(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("ip netns delete %s: %v: %s", name, err, strings.TrimSpace(string(out)))
}

// Cleanup removes what topologies whose process is gone left behind: it
// kills their recorded processes and deletes their namespaces. Topologies
// of live processes are left alone. It returns the names it cleaned.
func Cleanup() ([]string, error) {
	entries, err := os.ReadDir(StateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cleaned []string
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(StateDir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var st state
		if err := json.Unmarshal(b, &st); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		if st.PID > 0 && syscall.Kill(st.PID, 0) == nil {
			continue // owner alive
		}
		for _, pid := range st.Processes {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, ns := range st.Namespaces {
			if err := deleteNamespace(ns); err != nil {
				errs = append(errs, err)
			}
		}
		_ = os.Remove(path)
		cleaned = append(cleaned, st.Name)
	}
	return cleaned, errors.Join(errs...)
}
