package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/datapath"
)

// RouteProgrammer turns the agent's routing inputs into forwarding state:
// the userspace tables (afxdp) or kernel routes. It is called from the
// reconciler goroutine only, with the complete inputs every time (it
// computes the difference itself). This is the seam for control/routes:
// its FIB computation and route programmers implement it (see
// Options.Routes); until then the agent uses TablesRoutes (afxdp: local
// endpoints and this node's blocks) or NoRoutes (kernel: the CNI plugin
// programs the routes to local pods).
type RouteProgrammer interface {
	Apply(ctx context.Context, in RouteInputs) (RouteStats, error)
}

// RouteInputs are the routing inputs.
type RouteInputs struct {
	// Node is this node's name, NodeAddress its underlay address.
	Node        string
	NodeAddress netip.Prefix
	// LocalEndpoints are the addresses of this node's workload endpoints.
	LocalEndpoints []LocalEndpoint
	// Blocks are every node's IPAM blocks with their pool's encapsulation
	// and their node's addresses.
	Blocks []BlockRoute
	// Learned are the routes learned by BGP; BGP says whether it runs.
	Learned []LearnedRoute
	BGP     bool
	// Pools and Nodes are every IPPool and Node.
	Pools []*resources.IPPool
	Nodes []*resources.Node
}

// LocalEndpoint is one address of a local workload endpoint.
type LocalEndpoint struct {
	Addr netip.Addr
	// Interface is the host side of the pod's veth, MAC the pod's MAC.
	Interface string
	MAC       string
	Key       resources.Key
}

// BlockRoute is one IPAM block.
type BlockRoute struct {
	CIDR netip.Prefix
	// Node is the node the block is affine to ("" if none).
	Node        string
	NodeAddress netip.Prefix
	// VTEP and VTEPMAC are the node's VXLAN tunnel address and MAC.
	VTEP    netip.Addr
	VTEPMAC string
	// Pool and its modes.
	Pool                string
	IPIPMode, VXLANMode resources.EncapMode
}

// RouteStats are the routes programmed.
type RouteStats struct {
	IPv4, IPv6 int
	// Pending routes wait for something (an unresolved neighbour); the
	// reconciler retries them.
	Pending int
}

// NoRoutes programs nothing (kernel mode without control/routes).
type NoRoutes struct{}

// Apply does nothing.
func (NoRoutes) Apply(context.Context, RouteInputs) (RouteStats, error) { return RouteStats{}, nil }

// TablesRoutes programs the routes of local endpoints into datapath.Tables:
// each local endpoint address to its veth when that veth is one of the
// engine's ports (NextHopLocal, MACs rewritten); the afxdp dataplane
// attaches a local endpoint's veth before its route is programmed, and
// detaches it after the route is gone. Blocks and routes to other nodes
// are control/routes' (FIBRoutes). It owns the next-hop ids from first up.
type TablesRoutes struct {
	t     *datapath.Tables
	ports *portTable

	ids    map[datapath.NextHop]uint32
	refs   map[uint32]int
	free   []uint32
	next   uint32
	routes map[netip.Prefix]uint32
	// Skipped counts local endpoints whose interface is no engine port.
	Skipped int
}

// NewTablesRoutes returns a programmer for t whose engine ports are ports
// (interface name → port id and MAC).
func NewTablesRoutes(t *datapath.Tables, ports *portTable, first uint32) *TablesRoutes {
	return &TablesRoutes{t: t, ports: ports, ids: map[datapath.NextHop]uint32{}, refs: map[uint32]int{},
		routes: map[netip.Prefix]uint32{}, next: first}
}

// Apply programs the difference between the tables and the inputs.
func (p *TablesRoutes) Apply(_ context.Context, in RouteInputs) (RouteStats, error) {
	want := map[netip.Prefix]datapath.NextHop{}
	p.Skipped = 0
	for _, ep := range in.LocalEndpoints {
		port, ok := p.ports.get(ep.Interface)
		if !ok {
			p.Skipped++
			continue
		}
		nh := datapath.NextHop{Kind: datapath.NextHopLocal, Port: port.id, SrcMAC: port.mac}
		if hw, err := net.ParseMAC(ep.MAC); err == nil && len(hw) == 6 {
			copy(nh.DstMAC[:], hw)
		}
		want[netip.PrefixFrom(ep.Addr, ep.Addr.BitLen())] = nh
	}
	var errs []error
	// Add and change first, so that no address is briefly unrouted.
	prefixes := make([]netip.Prefix, 0, len(want))
	for pf := range want {
		prefixes = append(prefixes, pf)
	}
	sort.Slice(prefixes, func(i, j int) bool { return prefixes[i].Bits() < prefixes[j].Bits() })
	for _, pf := range prefixes {
		id, err := p.nextHop(want[pf])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if old, ok := p.routes[pf]; ok && old == id {
			p.refs[id]--
			continue
		}
		if err := p.t.AddRoute(pf, id); err != nil {
			p.refs[id]--
			errs = append(errs, err)
			continue
		}
		if old, ok := p.routes[pf]; ok {
			p.refs[old]--
		}
		p.routes[pf] = id
	}
	for pf, id := range p.routes {
		if _, ok := want[pf]; ok {
			continue
		}
		if err := p.t.DeleteRoute(pf); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(p.routes, pf)
		p.refs[id]--
	}
	for nh, id := range p.ids {
		if p.refs[id] > 0 {
			continue
		}
		if err := p.t.RemoveNextHop(id); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(p.ids, nh)
		delete(p.refs, id)
		p.free = append(p.free, id)
	}
	v4, v6 := p.t.Routes()
	if err := errors.Join(errs...); err != nil {
		return RouteStats{IPv4: v4, IPv6: v6}, fmt.Errorf("endpoint routes: %w", err)
	}
	return RouteStats{IPv4: v4, IPv6: v6}, nil
}

// nextHop returns the id of nh, setting it if new, and takes a reference
// (released by the caller when the route does not change).
func (p *TablesRoutes) nextHop(nh datapath.NextHop) (uint32, error) {
	if id, ok := p.ids[nh]; ok {
		p.refs[id]++
		return id, nil
	}
	var id uint32
	if n := len(p.free); n > 0 {
		id, p.free = p.free[n-1], p.free[:n-1]
	} else {
		id = p.next
		p.next++
	}
	if err := p.t.SetNextHop(id, nh); err != nil {
		p.free = append(p.free, id)
		return 0, err
	}
	p.ids[nh] = id
	p.refs[id] = 1
	return id, nil
}
