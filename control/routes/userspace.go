package routes

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

// Neighbor is how to send a frame towards an underlay address: out of Port,
// from SrcMAC to DstMAC (the address's own MAC on a shared subnet, else the
// gateway's).
type Neighbor struct {
	Port           datapath.PortID
	SrcMAC, DstMAC header.MAC
	// MTU is the underlay IP MTU of the path (0: 1500).
	MTU int
}

// Neighbors resolves underlay addresses for the userspace programmer. The
// agent implements it from the host's neighbour table (ARP/ND, and the
// route to the address for gateways); tests use StaticNeighbors.
type Neighbors interface {
	// Neighbor returns how to reach ip, or false while it is unresolved
	// (routes through it are then pending and retried by the next Apply).
	Neighbor(ip netip.Addr) (Neighbor, bool)
}

// StaticNeighbors is a fixed Neighbors.
type StaticNeighbors map[netip.Addr]Neighbor

// Neighbor implements Neighbors.
func (s StaticNeighbors) Neighbor(ip netip.Addr) (Neighbor, bool) {
	n, ok := s[ip]
	return n, ok
}

// UserspaceConfig configures a Userspace programmer.
type UserspaceConfig struct {
	Tables    *datapath.Tables
	Neighbors Neighbors
	// UnderlayIPv4 is this node's address: the outer source of tunnels.
	UnderlayIPv4 netip.Addr
	// VTEPMAC is this node's VXLAN MAC (inner source of VXLAN frames).
	VTEPMAC MAC
	// VNI and VXLANPort default to 4096 and 4789.
	VNI       uint32
	VXLANPort uint16
	// FirstNextHop and NextHops delimit the next-hop ids this programmer
	// owns in Tables: [FirstNextHop, FirstNextHop+NextHops). Defaults 1 and
	// 65535. Keep them low: Tables' next-hop array is as long as the
	// highest id used.
	FirstNextHop, NextHops uint32
	// Logger receives debug records (nil: discarded).
	Logger *slog.Logger
}

// Stats counts what one Apply did.
type Stats struct {
	// Routes added, changed (replaced), deleted, and left as they were.
	Added, Changed, Deleted, Unchanged int
	// Pending routes could not be programmed yet (unresolved neighbour,
	// missing tunnel device); the next Apply retries them.
	Pending int
	// NextHopsAdded and NextHopsRemoved count next hops (userspace) or
	// neighbour/FDB entries (kernel) written and removed.
	NextHopsAdded, NextHopsRemoved int
}

// Changes is the number of dataplane writes the Apply made.
func (s Stats) Changes() int {
	return s.Added + s.Changed + s.Deleted + s.NextHopsAdded + s.NextHopsRemoved
}

// nhSpec identifies a next hop: everything it is built from.
type nhSpec struct {
	kind   datapath.NextHopKind
	encap  datapath.EncapMode
	nb     Neighbor
	tunnel encap.TunnelConfig
}

type nhEntry struct {
	id   uint32
	refs int
}

type installed struct {
	r    Route
	spec nhSpec
}

// Userspace programs Tables incrementally: each Apply diffs the desired
// table against what it installed before and writes only the differences.
// Next hops are shared by every route with the same spec (a remote node and
// mode), allocated the lowest free id in the owned range, and removed when
// their last route goes. A Userspace is not safe for concurrent use (one
// reconciler goroutine owns it); Tables may be read concurrently.
type Userspace struct {
	cfg    UserspaceConfig
	log    *slog.Logger
	routes map[netip.Prefix]installed
	nhs    map[nhSpec]*nhEntry
	free   []uint32 // freed ids, reused lowest first
	next   uint32   // next never-used id
}

// NewUserspace returns a programmer that owns the configured next-hop range
// of cfg.Tables and no routes yet.
func NewUserspace(cfg UserspaceConfig) (*Userspace, error) {
	if cfg.Tables == nil {
		return nil, errors.New("userspace routes: no tables")
	}
	if cfg.Neighbors == nil {
		cfg.Neighbors = StaticNeighbors{}
	}
	if cfg.FirstNextHop == 0 {
		cfg.FirstNextHop = 1
	}
	if cfg.NextHops == 0 {
		cfg.NextHops = 65535
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Userspace{cfg: cfg, log: log, routes: map[netip.Prefix]installed{}, nhs: map[nhSpec]*nhEntry{}, next: cfg.FirstNextHop}, nil
}

// spec returns the next hop for r, or false while it cannot be built.
func (u *Userspace) spec(r Route) (nhSpec, bool) {
	switch r.Kind {
	case LocalBlock:
		return nhSpec{kind: datapath.NextHopBlackhole}, true
	case Direct, IPIP, VXLAN:
	default:
		return nhSpec{}, false
	}
	nb, ok := u.cfg.Neighbors.Neighbor(r.Gateway)
	if !ok {
		return nhSpec{}, false
	}
	if nb.MTU == 0 {
		nb.MTU = encap.DefaultMTU
	}
	s := nhSpec{kind: datapath.NextHopRemote, nb: nb}
	if r.Kind == Direct {
		return s, true
	}
	if !r.Gateway.Is4() || !u.cfg.UnderlayIPv4.Is4() {
		return nhSpec{}, false
	}
	s.tunnel = encap.TunnelConfig{
		LocalMAC: nb.SrcMAC, NextHopMAC: nb.DstMAC,
		Src: u.cfg.UnderlayIPv4.As4(), Dst: r.Gateway.As4(),
		UnderlayMTU: nb.MTU,
	}
	s.encap = datapath.EncapIPIP
	if r.Kind == VXLAN {
		s.encap = datapath.EncapVXLAN
		s.tunnel.VNI, s.tunnel.Port = u.cfg.VNI, u.cfg.VXLANPort
		s.tunnel.VTEPMAC, s.tunnel.RemoteVTEPMAC = header.MAC(u.cfg.VTEPMAC), header.MAC(r.VTEPMAC)
	}
	return s, true
}

// nextHop returns the id of the next hop for s, creating it if needed.
func (u *Userspace) nextHop(s nhSpec, st *Stats) (uint32, error) {
	if e := u.nhs[s]; e != nil {
		return e.id, nil
	}
	var id uint32
	switch {
	case len(u.free) > 0:
		id, u.free = u.free[0], u.free[1:]
	case u.next < u.cfg.FirstNextHop+u.cfg.NextHops:
		id = u.next
		u.next++
	default:
		return 0, fmt.Errorf("next-hop ids %d..%d exhausted", u.cfg.FirstNextHop, u.cfg.FirstNextHop+u.cfg.NextHops-1)
	}
	nh := datapath.NextHop{Kind: s.kind, Port: datapath.NoPort}
	if s.kind == datapath.NextHopRemote {
		nh.Port, nh.SrcMAC, nh.DstMAC, nh.MTU = s.nb.Port, s.nb.SrcMAC, s.nb.DstMAC, uint16(s.nb.MTU)
		nh.Encap = s.encap
		if s.encap != datapath.EncapNone {
			t, err := encap.NewTunnel(s.tunnel)
			if err != nil {
				u.release(id)
				return 0, err
			}
			nh.Tunnel = t
			mode := encap.ModeIPIP
			if s.encap == datapath.EncapVXLAN {
				mode = encap.ModeVXLAN
			}
			nh.MTU = uint16(t.MTU(mode))
		}
	}
	if err := u.cfg.Tables.SetNextHop(id, nh); err != nil {
		u.release(id)
		return 0, err
	}
	u.nhs[s] = &nhEntry{id: id}
	st.NextHopsAdded++
	return id, nil
}

func (u *Userspace) release(id uint32) {
	i := 0
	for i < len(u.free) && u.free[i] < id {
		i++
	}
	u.free = append(u.free, 0)
	copy(u.free[i+1:], u.free[i:])
	u.free[i] = id
}

// Apply converges the tables on desired. Errors are per route; Apply goes
// on with the others and returns them joined.
func (u *Userspace) Apply(desired Table) (Stats, error) {
	var st Stats
	var errs []error
	// Deletions first: they free next hops and ids for the additions.
	for dst := range u.routes {
		if _, ok := desired[dst]; !ok {
			errs = u.delete(dst, &st, errs)
		}
	}
	// Changed routes in destination order, so that ids are allocated
	// deterministically.
	var todo []netip.Prefix
	for dst, r := range desired {
		if in, had := u.routes[dst]; had && in.r == r {
			st.Unchanged++
			continue
		}
		todo = append(todo, dst)
	}
	slices.SortFunc(todo, comparePrefix)
	for _, dst := range todo {
		errs = u.set(desired[dst], &st, errs)
	}
	return u.finish(st, errs)
}

// ApplyDelta applies a change computed by a FIB: the cost is that of the
// change, not of the table. Routes still pending from earlier calls are
// not retried (Apply retries them).
func (u *Userspace) ApplyDelta(d Delta) (Stats, error) {
	var st Stats
	var errs []error
	for _, dst := range d.Deleted {
		errs = u.delete(dst, &st, errs)
	}
	set := slices.Clone(d.Set)
	slices.SortFunc(set, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	for _, r := range set {
		if in, had := u.routes[r.Dst]; had && in.r == r {
			st.Unchanged++
			continue
		}
		errs = u.set(r, &st, errs)
	}
	return u.finish(st, errs)
}

func (u *Userspace) delete(dst netip.Prefix, st *Stats, errs []error) []error {
	in, ok := u.routes[dst]
	if !ok {
		return errs
	}
	if err := u.cfg.Tables.DeleteRoute(dst); err != nil {
		return append(errs, err)
	}
	delete(u.routes, dst)
	u.unref(in.spec)
	st.Deleted++
	return errs
}

// set installs r, which differs from what is installed for r.Dst.
func (u *Userspace) set(r Route, st *Stats, errs []error) []error {
	dst := r.Dst
	in, had := u.routes[dst]
	s, ok := u.spec(r)
	if !ok {
		// An installed route keeps forwarding the old way meanwhile.
		st.Pending++
		return errs
	}
	if had && in.spec == s {
		u.routes[dst] = installed{r: r, spec: s}
		st.Unchanged++
		return errs
	}
	id, err := u.nextHop(s, st)
	if err != nil {
		return append(errs, fmt.Errorf("route %s: %w", dst, err))
	}
	if err := u.cfg.Tables.AddRoute(dst, id); err != nil {
		return append(errs, err) // an unused new next hop is collected in finish
	}
	u.nhs[s].refs++
	u.routes[dst] = installed{r: r, spec: s}
	if had {
		u.unref(in.spec)
		st.Changed++
	} else {
		st.Added++
	}
	return errs
}

func (u *Userspace) finish(st Stats, errs []error) (Stats, error) {
	st.NextHopsRemoved = u.gc()
	if st.Changes() > 0 {
		u.log.Debug("userspace routes applied", "added", st.Added, "changed", st.Changed, "deleted", st.Deleted,
			"pending", st.Pending, "next_hops_added", st.NextHopsAdded, "next_hops_removed", st.NextHopsRemoved)
	}
	return st, errors.Join(errs...)
}

func (u *Userspace) unref(s nhSpec) {
	if e := u.nhs[s]; e != nil {
		e.refs--
	}
}

// gc removes next hops no route uses and returns how many.
func (u *Userspace) gc() int {
	n := 0
	for s, e := range u.nhs {
		if e.refs > 0 {
			continue
		}
		if err := u.cfg.Tables.RemoveNextHop(e.id); err != nil {
			continue // still referenced in Tables: try again next time
		}
		delete(u.nhs, s)
		u.release(e.id)
		n++
	}
	return n
}

// Installed returns the routes programmed, by destination.
func (u *Userspace) Installed() Table {
	t := make(Table, len(u.routes))
	for dst, in := range u.routes {
		t[dst] = in.r
	}
	return t
}

// NextHopID returns the next-hop id serving dst, if a route is installed.
func (u *Userspace) NextHopID(dst netip.Prefix) (uint32, bool) {
	in, ok := u.routes[dst]
	if !ok {
		return 0, false
	}
	e := u.nhs[in.spec]
	if e == nil {
		return 0, false
	}
	return e.id, true
}
