package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tabbynet/tabby/control/routes"
)

// Next-hop id ranges of the userspace tables: local endpoints below
// fibFirstNextHop, control/routes' FIB from there.
const (
	endpointFirstNextHop = 1
	fibFirstNextHop      = 4096
	fibNextHops          = 65536 - fibFirstNextHop
)

// FIBRoutes is the afxdp route programmer: control/routes computes the FIB
// (this node's blocks, other nodes' blocks by pool mode, BGP-learned
// routes) and programs it into the tables with next hops resolved from the
// kernel's neighbour table; TablesRoutes adds a route per local endpoint.
type FIBRoutes struct {
	fib       *routes.Userspace
	endpoints *TablesRoutes
}

// Apply programs the FIB and the endpoint routes.
func (f *FIBRoutes) Apply(ctx context.Context, in RouteInputs) (RouteStats, error) {
	ri := routes.Input{Node: in.Node, Pools: in.Pools, Nodes: in.Nodes, BGP: in.BGP}
	for _, b := range in.Blocks {
		ri.Blocks = append(ri.Blocks, routes.Block{CIDR: b.CIDR, Node: b.Node})
	}
	for _, l := range in.Learned {
		ri.Learned = append(ri.Learned, routes.Learned{Prefix: l.Prefix, NextHop: l.NextHop})
	}
	st, ferr := f.fib.Apply(routes.Compute(ri))
	est, eerr := f.endpoints.Apply(ctx, in)
	est.Pending = st.Pending
	return est, errors.Join(ferr, eerr)
}

// netlinkNeighbors resolves underlay next hops from the kernel's routing
// and neighbour tables in the dataplane's namespace; an unresolved address
// is probed (a datagram to its discard port makes the kernel ARP for it)
// and reported pending, so the next reconcile retries it.
type netlinkNeighbors struct {
	netns netns.NsHandle
	// ports are the engine's interfaces, the configured ones and the
	// pods' veths attached at runtime: a next hop out of any of them
	// resolves.
	ports *portTable

	mu sync.Mutex
	nl *netlink.Handle
}

func newNetlinkNeighbors(h netns.NsHandle, ports *portTable) (*netlinkNeighbors, error) {
	nl, err := netlinkHandle(h)
	if err != nil {
		return nil, err
	}
	return &netlinkNeighbors{netns: h, nl: nl, ports: ports}, nil
}

func (n *netlinkNeighbors) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nl.Close()
}

// Neighbor implements routes.Neighbors.
func (n *netlinkNeighbors) Neighbor(ip netip.Addr) (routes.Neighbor, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rs, err := n.nl.RouteGet(ip.AsSlice())
	if err != nil || len(rs) == 0 {
		return routes.Neighbor{}, false
	}
	idx := rs[0].LinkIndex
	port, ok := n.ports.byIndex(idx)
	if !ok {
		return routes.Neighbor{}, false
	}
	target := ip
	if gw, ok := netip.AddrFromSlice(rs[0].Gw); ok && gw.IsValid() && !gw.IsUnspecified() {
		target = gw.Unmap()
	}
	fam := netlink.FAMILY_V4
	if target.Is6() {
		fam = netlink.FAMILY_V6
	}
	neighs, err := n.nl.NeighList(idx, fam)
	if err == nil {
		for _, ne := range neighs {
			a, ok := netip.AddrFromSlice(ne.IP)
			if !ok || a.Unmap() != target || len(ne.HardwareAddr) != 6 {
				continue
			}
			if ne.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0 {
				continue
			}
			nb := routes.Neighbor{Port: port.id, SrcMAC: port.mac, MTU: port.mtu}
			copy(nb.DstMAC[:], ne.HardwareAddr)
			return nb, true
		}
	}
	go n.probe(target)
	return routes.Neighbor{}, false
}

func (n *netlinkNeighbors) probe(ip netip.Addr) {
	_ = inNetns(n.netns, func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 9)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte{0})
		return err
	})
}

// KernelRoutes is the kernel-mode route programmer: control/routes computes
// the FIB and its Kernel programmer installs it (protocol routes.Protocol,
// the VXLAN device, neighbours and FDB entries) in the dataplane's
// namespace. Routes to local pods are the CNI plugin's. The routes stay
// when the agent stops; the next agent reconciles against them.
type KernelRoutes struct {
	k  *routes.Kernel
	nl *netlink.Handle
}

// Apply programs the FIB into the kernel.
func (k *KernelRoutes) Apply(_ context.Context, in RouteInputs) (RouteStats, error) {
	ri := routes.Input{Node: in.Node, Pools: in.Pools, Nodes: in.Nodes, BGP: in.BGP}
	for _, b := range in.Blocks {
		ri.Blocks = append(ri.Blocks, routes.Block{CIDR: b.CIDR, Node: b.Node})
	}
	for _, l := range in.Learned {
		ri.Learned = append(ri.Learned, routes.Learned{Prefix: l.Prefix, NextHop: l.NextHop})
	}
	table := routes.Compute(ri)
	st, err := k.k.Apply(table)
	out := RouteStats{Pending: st.Pending}
	for dst := range table {
		if dst.Addr().Is4() {
			out.IPv4++
		} else {
			out.IPv6++
		}
	}
	return out, err
}

func (k *KernelRoutes) close() { k.nl.Close() }
