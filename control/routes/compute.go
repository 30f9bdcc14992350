// Package routes computes a node's forwarding table for pod traffic (the
// FIB) from the cluster's resources and the routes BGP learned, and programs
// it into a dataplane: the userspace datapath.Tables (Userspace) or the Linux
// kernel through netlink (Kernel).
//
// Compute is a pure function. Each destination gets one Route whose Kind
// says how it is reached:
//
//   - LocalBlock: a block affine to this node. Its unassigned addresses are
//     dropped (a blackhole route, as Calico installs); the endpoint code adds
//     a /32 (/128) per pod, which wins by longest match.
//   - Direct: routed natively to the remote node's address (or a BGP next
//     hop), no encapsulation.
//   - IPIP: IP-in-IP to the remote node's address.
//   - VXLAN: VXLAN to the remote node's VTEP (its vxlan tunnel address and
//     MAC), outer destination its node address.
//
// Which one, for a block of pool P on node N (Calico's rules):
//
//	P.vxlanMode Always, or CrossSubnet and N in another subnet → VXLAN
//	P.ipipMode  Always, or CrossSubnet and N in another subnet → IPIP
//	otherwise                                                  → Direct
//
// "Same subnet" means N's address is inside this node's IPv4 address prefix
// (Node.spec.bgp.ipv4Address, e.g. 192.0.2.10/24).
//
// Where the routes come from:
//
//   - Pools with VXLAN enabled are routed from the datastore (blocks and
//     their affine nodes, node VTEPs) whether BGP runs or not, as Felix does;
//     BGP routes inside such pools are ignored.
//   - With BGP (Input.BGP), the other pools are routed from the learned
//     routes only: a block is reachable once its node advertises it. A
//     learned route whose next hop is a node's address is treated as that
//     node's; any other learned route (from a ToR, or for a prefix outside
//     every pool) is Direct via its next hop.
//   - Without BGP, the other pools are routed from the datastore too:
//     IPIP always, Direct only to nodes in this node's subnet (a native
//     route across subnets needs the underlay to know the pod ranges, which
//     is what BGP is for).
//
// This node's own blocks always win over learned routes for the same
// prefix.
package routes

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/tabbynet/tabby/control/resources"
)

// Kind is how a destination is reached.
type Kind uint8

// Route kinds.
const (
	LocalBlock Kind = iota + 1
	Direct
	IPIP
	VXLAN
)

func (k Kind) String() string {
	switch k {
	case LocalBlock:
		return "local-block"
	case Direct:
		return "direct"
	case IPIP:
		return "ipip"
	case VXLAN:
		return "vxlan"
	}
	return "unknown"
}

// MAC is an Ethernet address.
type MAC [6]byte

func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// Route is the desired route to one destination. Routes are comparable:
// two equal Routes program the same state.
type Route struct {
	Dst  netip.Prefix
	Kind Kind
	// Node is the remote node ("" for LocalBlock and for learned routes
	// whose next hop is not a node).
	Node string
	// Gateway is the remote underlay address: the node's address or the
	// BGP next hop (Direct, IPIP; for VXLAN the outer destination).
	Gateway netip.Addr
	// OnLink says Gateway is in this node's subnet (no router between).
	OnLink bool
	// VTEP and VTEPMAC are the remote node's VXLAN tunnel address and MAC.
	VTEP    netip.Addr
	VTEPMAC MAC
	// Pool is the pool the destination belongs to ("" if none).
	Pool string
}

// Block is an IPAM block and the node it is affine to.
type Block struct {
	CIDR netip.Prefix
	Node string
}

// Learned is a route learned through BGP.
type Learned struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
}

// Input is everything Compute reads. It is not modified.
type Input struct {
	// Node is this node's name.
	Node  string
	Pools []*resources.IPPool
	// Blocks are the cluster's blocks with their affine nodes.
	Blocks []Block
	Nodes  []*resources.Node
	// BGP says whether this node runs BGP (and Learned is its input).
	BGP     bool
	Learned []Learned
}

// Table is a computed FIB: one route per destination.
type Table map[netip.Prefix]Route

// Sorted returns the routes ordered by destination.
func (t Table) Sorted() []Route {
	out := make([]Route, 0, len(t))
	for _, r := range t {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	return out
}

// nodeInfo is what Compute needs of a node.
type nodeInfo struct {
	name    string
	ip      netip.Addr
	vtep    netip.Addr
	vtepMAC MAC
	hasMAC  bool
}

// calc is the part of an Input that decides routes, indexed.
type calc struct {
	node     string
	bgp      bool
	nodes    map[string]*nodeInfo
	byIP     map[netip.Addr]*nodeInfo
	mySubnet netip.Prefix
	pools    []*resources.IPPool // longest prefix first
}

func newCalc(in Input) *calc {
	c := &calc{node: in.Node, bgp: in.BGP, nodes: map[string]*nodeInfo{}, byIP: map[netip.Addr]*nodeInfo{}}
	for _, n := range in.Nodes {
		ni := &nodeInfo{name: n.Name}
		if p, ok := nodeIPv4(n); ok {
			ni.ip = p.Addr()
			c.byIP[ni.ip] = ni
			if n.Name == in.Node {
				c.mySubnet = p.Masked()
			}
		}
		if a, err := netip.ParseAddr(n.Spec.IPv4VXLANTunnelAddr); err == nil {
			ni.vtep = a
		}
		if hw, err := net.ParseMAC(n.Spec.VXLANTunnelMACAddr); err == nil && len(hw) == 6 {
			ni.vtepMAC, ni.hasMAC = MAC(hw), true
		}
		c.nodes[n.Name] = ni
	}
	for _, p := range in.Pools {
		if p.Prefix().IsValid() {
			c.pools = append(c.pools, p)
		}
	}
	// Longest pool first, so the first containing pool is the most specific.
	slices.SortStableFunc(c.pools, func(a, b *resources.IPPool) int { return cmp.Compare(b.Prefix().Bits(), a.Prefix().Bits()) })
	return c
}

func (c *calc) poolOf(p netip.Prefix) *resources.IPPool {
	for _, pool := range c.pools {
		pp := pool.Prefix()
		if pp.Addr().BitLen() == p.Addr().BitLen() && pp.Bits() <= p.Bits() && pp.Contains(p.Addr()) {
			return pool
		}
	}
	return nil
}

func (c *calc) onLink(ip netip.Addr) bool { return c.mySubnet.IsValid() && c.mySubnet.Contains(ip) }

func vxlanPool(p *resources.IPPool) bool { return p != nil && p.Spec.VXLANMode.Enabled() }

// route decides the route to dst of pool on remote node n through its
// underlay address gw (n nil: a learned route to a non-node next hop).
func (c *calc) route(dst netip.Prefix, pool *resources.IPPool, n *nodeInfo, gw netip.Addr) (Route, bool) {
	r := Route{Dst: dst, Kind: Direct, Gateway: gw, OnLink: c.onLink(gw)}
	if pool != nil {
		r.Pool = pool.Name
	}
	if n == nil {
		return r, gw.IsValid()
	}
	r.Node = n.name
	cross := !r.OnLink
	if pool != nil {
		switch vx, ip := pool.Spec.VXLANMode, pool.Spec.IPIPMode; {
		case vx == resources.EncapAlways || vx == resources.EncapCrossSubnet && cross:
			if !n.vtep.IsValid() || !n.hasMAC || !gw.Is4() || !dst.Addr().Is4() {
				return Route{}, false // VTEP not known (yet)
			}
			r.Kind, r.VTEP, r.VTEPMAC = VXLAN, n.vtep, n.vtepMAC
		case (ip == resources.EncapAlways || ip == resources.EncapCrossSubnet && cross) && dst.Addr().Is4():
			r.Kind = IPIP
		}
	}
	return r, gw.IsValid()
}

// datastoreRoutes returns the routes that come from the datastore: this
// node's blocks, and the remote blocks routed without BGP.
func (c *calc) datastoreRoutes(blocks []Block) Table {
	t := Table{}
	for _, b := range blocks {
		if !b.CIDR.IsValid() || b.Node == "" {
			continue
		}
		dst := b.CIDR.Masked()
		pool := c.poolOf(dst)
		if b.Node == c.node {
			r := Route{Dst: dst, Kind: LocalBlock}
			if pool != nil {
				r.Pool = pool.Name
			}
			t[dst] = r
			continue
		}
		if pool == nil || (c.bgp && !vxlanPool(pool)) {
			continue
		}
		n := c.nodes[b.Node]
		if n == nil || !n.ip.IsValid() {
			continue
		}
		r, ok := c.route(dst, pool, n, n.ip)
		if !ok || (r.Kind == Direct && !r.OnLink) {
			continue
		}
		if old, dup := t[dst]; dup && old.Kind == LocalBlock {
			continue
		}
		t[dst] = r
	}
	return t
}

// learned returns the route for a learned route, ignoring the datastore
// routes (which win; the caller checks).
func (c *calc) learned(l Learned) (Route, bool) {
	if !c.bgp || !l.Prefix.IsValid() || !l.NextHop.IsValid() {
		return Route{}, false
	}
	dst := l.Prefix.Masked()
	pool := c.poolOf(dst)
	if vxlanPool(pool) {
		return Route{}, false
	}
	n := c.byIP[l.NextHop]
	if n != nil && n.name == c.node {
		return Route{}, false // our own route reflected back
	}
	return c.route(dst, pool, n, l.NextHop)
}

// Compute returns the FIB of node in.Node.
func Compute(in Input) Table {
	c := newCalc(in)
	t := c.datastoreRoutes(in.Blocks)
	for _, l := range in.Learned {
		if _, taken := t[l.Prefix.Masked()]; taken {
			continue // own block, or a VXLAN route from the datastore
		}
		if r, ok := c.learned(l); ok {
			t[r.Dst] = r
		}
	}
	return t
}

// Delta is a change of a Table: routes set (added or changed) and
// destinations deleted.
type Delta struct {
	Set     []Route
	Deleted []netip.Prefix
}

// Empty reports whether the delta changes nothing.
func (d Delta) Empty() bool { return len(d.Set) == 0 && len(d.Deleted) == 0 }

// FIB is Compute kept up to date incrementally: it holds the inputs and the
// table, and a change of the learned routes recomputes only the
// destinations it touches (a full table of learned routes is not
// recomputed for every update). Each method returns the Delta to program.
// A FIB is not safe for concurrent use.
type FIB struct {
	in      Input // Learned is kept in learned instead
	c       *calc
	ds      Table // routes from the datastore
	learned map[netip.Prefix]Learned
	table   Table
}

// NewFIB returns a FIB of in; its Table is Compute(in).
func NewFIB(in Input) *FIB {
	f := &FIB{learned: map[netip.Prefix]Learned{}, table: Table{}}
	for _, l := range in.Learned {
		if l.Prefix.IsValid() {
			f.learned[l.Prefix.Masked()] = l
		}
	}
	f.SetInput(in)
	return f
}

// Table returns the current table. It is the FIB's own: do not modify it.
func (f *FIB) Table() Table { return f.table }

// SetInput replaces every input but the learned routes (pools, blocks,
// nodes, the node's name, BGP on or off; in.Learned is ignored) and
// recomputes the whole table.
func (f *FIB) SetInput(in Input) Delta {
	in.Learned = nil
	f.in = in
	f.c = newCalc(in)
	f.ds = f.c.datastoreRoutes(in.Blocks)
	next := make(Table, len(f.ds)+len(f.learned))
	for dst, r := range f.ds {
		next[dst] = r
	}
	for dst, l := range f.learned {
		if _, taken := next[dst]; taken {
			continue
		}
		if r, ok := f.c.learned(l); ok {
			next[dst] = r
		}
	}
	var d Delta
	for dst, r := range next {
		if old, ok := f.table[dst]; !ok || old != r {
			d.Set = append(d.Set, r)
		}
	}
	for dst := range f.table {
		if _, ok := next[dst]; !ok {
			d.Deleted = append(d.Deleted, dst)
		}
	}
	f.table = next
	return d
}

// UpdateLearned applies a change of the learned routes: withdrawn are gone,
// then set are new or changed (a prefix in both ends up set).
func (f *FIB) UpdateLearned(set []Learned, withdrawn []netip.Prefix) Delta {
	touched := make([]netip.Prefix, 0, len(set)+len(withdrawn))
	for _, p := range withdrawn {
		p = p.Masked()
		delete(f.learned, p)
		touched = append(touched, p)
	}
	for _, l := range set {
		if !l.Prefix.IsValid() {
			continue
		}
		l.Prefix = l.Prefix.Masked()
		f.learned[l.Prefix] = l
		touched = append(touched, l.Prefix)
	}
	var d Delta
	for _, dst := range touched {
		r, ok := f.ds[dst]
		if !ok {
			if l, have := f.learned[dst]; have {
				r, ok = f.c.learned(l)
			}
		}
		old, had := f.table[dst]
		switch {
		case ok && (!had || old != r):
			f.table[dst] = r
			d.Set = append(d.Set, r)
		case !ok && had:
			delete(f.table, dst)
			d.Deleted = append(d.Deleted, dst)
		}
	}
	return d
}

// BlocksFromIPAM returns the blocks of IPAMBlock objects that have an
// affinity.
func BlocksFromIPAM(blocks []*resources.IPAMBlock) []Block {
	var out []Block
	for _, b := range blocks {
		if n := b.AffineNode(); n != "" && b.Prefix().IsValid() {
			out = append(out, Block{CIDR: b.Prefix(), Node: n})
		}
	}
	return out
}

// BlocksFromAffinities returns the blocks of confirmed BlockAffinities.
func BlocksFromAffinities(affs []*resources.BlockAffinity) []Block {
	var out []Block
	for _, a := range affs {
		if a.Spec.State != resources.AffinityConfirmed {
			continue
		}
		if p, err := netip.ParsePrefix(a.Spec.CIDR); err == nil {
			out = append(out, Block{CIDR: p.Masked(), Node: a.Spec.Node})
		}
	}
	return out
}

// nodeIPv4 is the node's IPv4 address with its prefix length (as
// bgp.NodeIPv4, which this package does not import).
func nodeIPv4(n *resources.Node) (netip.Prefix, bool) {
	var cands []string
	if n.Spec.BGP != nil {
		cands = append(cands, n.Spec.BGP.IPv4Address)
	}
	for _, a := range n.Spec.Addresses {
		cands = append(cands, a.Address)
	}
	for _, s := range cands {
		if s == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				continue
			}
		} else if a, err := netip.ParseAddr(s); err == nil {
			p = netip.PrefixFrom(a, 32)
		}
		if p.IsValid() && p.Addr().Is4() {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
