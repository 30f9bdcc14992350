package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
	"github.com/tabbynet/tabby/lpm"
)

// PortID indexes a worker's ports.
type PortID uint16

// NoPort means "no port configured".
const NoPort PortID = 0xffff

// NextHopKind says what a route leads to.
type NextHopKind uint8

// Next-hop kinds.
const (
	// NextHopBlackhole drops silently (counted as DropBlackhole).
	NextHopBlackhole NextHopKind = iota
	// NextHopLocal delivers to an endpoint (pod) on this node.
	NextHopLocal
	// NextHopRemote forwards towards another node or router, encapsulated
	// or not according to Encap.
	NextHopRemote
	// NextHopHost hands the packet to the host's own stack.
	NextHopHost
	// NextHopUnreachable drops and counts DropNoRoute (an explicit
	// "unreachable" route, as for a released block).
	NextHopUnreachable
)

func (k NextHopKind) String() string {
	switch k {
	case NextHopBlackhole:
		return "blackhole"
	case NextHopLocal:
		return "local"
	case NextHopRemote:
		return "remote"
	case NextHopHost:
		return "host"
	case NextHopUnreachable:
		return "unreachable"
	}
	return "unknown"
}

// EncapMode is how a remote next hop is reached.
type EncapMode uint8

// Encapsulation modes.
const (
	EncapNone EncapMode = iota
	EncapIPIP
	EncapVXLAN
)

func (m EncapMode) String() string {
	switch m {
	case EncapNone:
		return "none"
	case EncapIPIP:
		return "ipip"
	case EncapVXLAN:
		return "vxlan"
	}
	return "unknown"
}

// NextHop is where a route sends packets and how they are rewritten.
type NextHop struct {
	Kind NextHopKind
	// Port is the egress port (for NextHopHost, the host port is taken
	// from Node.HostPort when Port is NoPort).
	Port PortID
	// SrcMAC and DstMAC are written into the Ethernet header of a frame
	// that leaves unencapsulated (for an encapsulated frame, Tunnel holds
	// the outer MACs and the inner VXLAN MACs).
	SrcMAC, DstMAC header.MAC
	// MTU is the largest IP packet (header included) the next hop takes,
	// before encapsulation; 0 means the port's default (1500).
	MTU uint16
	// Encap is the encapsulation towards a NextHopRemote.
	Encap EncapMode
	// Tunnel holds the encapsulation parameters when Encap != EncapNone
	// (built by encap.NewTunnel; shared by every worker).
	Tunnel *encap.Tunnel
}

// NodeConfig is this node's identity in the dataplane.
type NodeConfig struct {
	// TunnelIPv4 is the underlay address tunnels to this node are sent to
	// (the node IP; IP-in-IP and VXLAN to it are decapsulated).
	TunnelIPv4 netip.Addr
	// VNI and VXLANPort identify VXLAN traffic for this node
	// (defaults 4096 and 4789, Calico's).
	VNI       uint32
	VXLANPort uint16
	// RouterIPv4 and RouterIPv6 are the sources of ICMP errors the
	// dataplane generates (invalid: TunnelIPv4 / no ICMPv6 errors).
	RouterIPv4, RouterIPv6 netip.Addr
	// HostPort is where NextHopHost traffic and non-IP frames go
	// (NoPort: dropped and counted).
	HostPort PortID
	// DecapIPIP and DecapVXLAN enable decapsulation.
	DecapIPIP, DecapVXLAN bool
	// VerifyVXLANChecksum drops VXLAN packets whose non-zero outer UDP
	// checksum is wrong. Off by default: RFC 7348 leaves the check to the
	// receiver, and over veth or virtio uplinks senders hand frames over
	// with the checksum left for offload, which AF_XDP cannot see (see
	// encap.VXLANDecapNoChecksum). Turn it on for NIC uplinks only.
	VerifyVXLANChecksum bool
	// EnforcePolicy turns the policy stage on. With it on, a snapshot
	// without a compiled policy denies every forwarded packet (fail
	// closed); with it off, the stage is skipped (routing only, as in
	// benchmarks of the routing path).
	EnforcePolicy bool
}

// Snapshot is the forwarding state a worker uses for one batch. Everything
// but the LPM tables is immutable once published.
type Snapshot struct {
	// Generation increases with every published snapshot.
	Generation uint64
	Node       NodeConfig
	// nodeTunnel4 and routerIP4 are Node's addresses as integers.
	nodeTunnel4 uint32
	routerIP4   [4]byte
	routerIP6   [16]byte
	hasRouter6  bool
	// Routes4 and Routes6 map destinations to indexes into NextHops.
	Routes4  *lpm.Table4
	Routes6  *lpm.Table6
	NextHops []NextHop
	// Policy is the compiled network policy (nil: none compiled yet).
	Policy *acl.Compiled
}

// Tables owns the forwarding state and publishes Snapshots. Its methods are
// for the control plane: they serialise on a mutex and may allocate. Readers
// (workers) call Load, which never blocks.
type Tables struct {
	mu     sync.Mutex
	cur    atomic.Pointer[Snapshot]
	r4     *lpm.Table4
	r6     *lpm.Table6
	refs   []int // routes referencing each next hop
	routes map[netip.Prefix]uint32
}

// NewTables returns tables with no routes and publishes the first snapshot.
func NewTables(node NodeConfig) (*Tables, error) {
	t := &Tables{r4: lpm.NewTable4(), r6: lpm.NewTable6(), routes: map[netip.Prefix]uint32{}}
	if err := t.publish(node, nil); err != nil {
		return nil, err
	}
	return t, nil
}

// Load returns the current snapshot. It never blocks and never returns nil
// for Tables made by NewTables.
func (t *Tables) Load() *Snapshot { return t.cur.Load() }

// ErrNextHopInUse is returned when removing a next hop that routes still use.
var ErrNextHopInUse = errors.New("next hop in use")

func validateNode(n *NodeConfig) error {
	if n.TunnelIPv4.IsValid() && !n.TunnelIPv4.Is4() {
		return fmt.Errorf("node: tunnelIPv4 %v is not an IPv4 address", n.TunnelIPv4)
	}
	if n.RouterIPv4.IsValid() && !n.RouterIPv4.Is4() {
		return fmt.Errorf("node: routerIPv4 %v is not an IPv4 address", n.RouterIPv4)
	}
	if n.RouterIPv6.IsValid() && (!n.RouterIPv6.Is6() || n.RouterIPv6.Is4In6()) {
		return fmt.Errorf("node: routerIPv6 %v is not an IPv6 address", n.RouterIPv6)
	}
	if n.VNI > 1<<24-1 {
		return fmt.Errorf("node: vni %d exceeds 24 bits", n.VNI)
	}
	return nil
}

// publish stores a new snapshot with node and next hops (nil: unchanged).
func (t *Tables) publish(node NodeConfig, nhs []NextHop) error {
	if node.VNI == 0 {
		node.VNI = 4096
	}
	if node.VXLANPort == 0 {
		node.VXLANPort = header.VXLANPort
	}
	if !node.RouterIPv4.IsValid() {
		node.RouterIPv4 = node.TunnelIPv4
	}
	if err := validateNode(&node); err != nil {
		return err
	}
	old := t.cur.Load()
	if nhs == nil && old != nil {
		nhs = old.NextHops
	}
	s := &Snapshot{Node: node, Routes4: t.r4, Routes6: t.r6, NextHops: nhs}
	if old != nil {
		s.Generation = old.Generation + 1
		s.Policy = old.Policy
	}
	if node.TunnelIPv4.IsValid() {
		a := node.TunnelIPv4.As4()
		s.nodeTunnel4 = uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	}
	if node.RouterIPv4.IsValid() {
		s.routerIP4 = node.RouterIPv4.As4()
	}
	if node.RouterIPv6.IsValid() {
		s.routerIP6, s.hasRouter6 = node.RouterIPv6.As16(), true
	}
	t.cur.Store(s)
	return nil
}

// SetNode replaces the node configuration.
func (t *Tables) SetNode(node NodeConfig) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.publish(node, nil)
}

// SetNextHop adds or replaces next hop id. A new snapshot with the new
// next-hop array is published before SetNextHop returns, so routes added
// afterwards may name id.
func (t *Tables) SetNextHop(id uint32, nh NextHop) error {
	if id > lpm.MaxNextHop {
		return fmt.Errorf("next hop %d: id exceeds %d", id, lpm.MaxNextHop)
	}
	if nh.Kind > NextHopUnreachable {
		return fmt.Errorf("next hop %d: unknown kind %d", id, nh.Kind)
	}
	if nh.Kind == NextHopRemote && nh.Encap > EncapVXLAN {
		return fmt.Errorf("next hop %d: unknown encap mode %d", id, nh.Encap)
	}
	if nh.Kind == NextHopRemote && nh.Encap != EncapNone && nh.Tunnel == nil {
		return fmt.Errorf("next hop %d: %s encapsulation needs a tunnel", id, nh.Encap)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	n := max(len(old.NextHops), int(id)+1)
	nhs := make([]NextHop, n)
	copy(nhs, old.NextHops)
	nhs[id] = nh
	for len(t.refs) < n {
		t.refs = append(t.refs, 0)
	}
	return t.publish(old.Node, nhs)
}

// AddRoute points prefix at next hop id (replacing an existing route for the
// same prefix). The next hop must have been set.
func (t *Tables) AddRoute(p netip.Prefix, id uint32) error {
	if !p.IsValid() {
		return fmt.Errorf("route %v: invalid prefix", p)
	}
	p = p.Masked()
	t.mu.Lock()
	defer t.mu.Unlock()
	if int(id) >= len(t.cur.Load().NextHops) {
		return fmt.Errorf("route %v: next hop %d is not set", p, id)
	}
	var err error
	if p.Addr().Is4() {
		err = t.r4.Insert(p, id)
	} else {
		err = t.r6.Insert(p, id)
	}
	if err != nil {
		return fmt.Errorf("route %v: %w", p, err)
	}
	if old, ok := t.routes[p]; ok {
		t.refs[old]--
	}
	t.routes[p] = id
	t.refs[id]++
	return nil
}

// DeleteRoute removes the route for prefix; removing an absent route is not
// an error.
func (t *Tables) DeleteRoute(p netip.Prefix) error {
	p = p.Masked()
	t.mu.Lock()
	defer t.mu.Unlock()
	id, ok := t.routes[p]
	if !ok {
		return nil
	}
	var err error
	if p.Addr().Is4() {
		_, err = t.r4.Delete(p)
	} else {
		_, err = t.r6.Delete(p)
	}
	if err != nil {
		return fmt.Errorf("route %v: %w", p, err)
	}
	delete(t.routes, p)
	t.refs[id]--
	return nil
}

// RemoveNextHop turns next hop id into an unreachable entry. It fails with
// ErrNextHopInUse while routes name it.
func (t *Tables) RemoveNextHop(id uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	if int(id) >= len(old.NextHops) {
		return nil
	}
	if t.refs[id] > 0 {
		return fmt.Errorf("next hop %d: %w by %d routes", id, ErrNextHopInUse, t.refs[id])
	}
	nhs := make([]NextHop, len(old.NextHops))
	copy(nhs, old.NextHops)
	nhs[id] = NextHop{Kind: NextHopUnreachable}
	return t.publish(old.Node, nhs)
}

// SetPolicy publishes a newly compiled policy. Workers apply it from their
// next batch; conntrack revalidates existing flows against it (package acl).
func (t *Tables) SetPolicy(p *acl.Compiled) error {
	if p == nil {
		return fmt.Errorf("set policy: nil policy")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	s := *old
	s.Generation = old.Generation + 1
	s.Policy = p
	t.cur.Store(&s)
	return nil
}

// PortInUse reports whether the published snapshot still sends traffic to
// port: a local, remote or host next hop names it, or it is the node's host
// port. A worker's port slot may be given to another port only when it is
// not in use (see Worker).
func (t *Tables) PortInUse(port PortID) bool {
	s := t.cur.Load()
	if s == nil {
		return false
	}
	if s.Node.HostPort == port {
		return true
	}
	for i := range s.NextHops {
		switch nh := &s.NextHops[i]; nh.Kind {
		case NextHopLocal, NextHopRemote, NextHopHost:
			if nh.Port == port {
				return true
			}
		}
	}
	return false
}

// Routes returns the number of IPv4 and IPv6 routes.
func (t *Tables) Routes() (v4, v6 int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.r4.Len(), t.r6.Len()
}
