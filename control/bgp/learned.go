package bgp

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Route is a route learned from a peer: the best path to Prefix.
type Route struct {
	Prefix netip.Prefix
	// NextHop is the path's BGP next hop (the originating node's address
	// for routes from the mesh or a reflector).
	NextHop netip.Addr
	// Peer and PeerASN are the session the path was learned on.
	Peer    netip.Addr
	PeerASN uint32
}

// RouteEvent is a change of the learned routes: Route is new or changed
// (its next hop or peer), or, with Withdrawn, gone (Route is then the route
// as last reported).
type RouteEvent struct {
	Route
	Withdrawn bool
}

// learnedTable tracks the best learned path of every prefix and delivers
// the changes. GoBGP's watcher goroutine writes cur and pending; the
// delivery goroutine owns delivered and calls onRoutes, so a slow consumer
// delays only the delivery, never GoBGP, and changes that cancel out while
// it is busy are never reported.
type learnedTable struct {
	onRoutes func([]RouteEvent)

	mu      sync.Mutex
	gen     uint64 // incremented when the server is replaced
	cur     map[netip.Prefix]Route
	pending map[netip.Prefix]struct{}

	wake chan struct{}
	quit chan struct{}
	done chan struct{}

	delivered map[netip.Prefix]Route
}

func newLearnedTable(onRoutes func([]RouteEvent)) *learnedTable {
	t := &learnedTable{
		onRoutes:  onRoutes,
		cur:       map[netip.Prefix]Route{},
		pending:   map[netip.Prefix]struct{}{},
		wake:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		delivered: map[netip.Prefix]Route{},
	}
	go t.deliver()
	return t
}

// callback returns the best-path watcher of the current server; records of
// a server replaced since are ignored.
func (t *learnedTable) callback() func([]*apiutil.Path, time.Time) {
	t.mu.Lock()
	gen := t.gen
	t.mu.Unlock()
	return func(paths []*apiutil.Path, _ time.Time) { t.update(gen, paths) }
}

func (t *learnedTable) update(gen uint64, paths []*apiutil.Path) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return
	}
	changed := false
	for _, p := range paths {
		if p.Family != gobgp.RF_IPv4_UC && p.Family != gobgp.RF_IPv6_UC {
			continue
		}
		n, ok := p.Nlri.(*gobgp.IPAddrPrefix)
		if !ok {
			continue
		}
		pf := n.Prefix
		old, had := t.cur[pf]
		// A withdrawal, or this node's own path becoming best, ends the
		// learned route.
		if p.Withdrawal || !p.PeerAddress.IsValid() {
			if had {
				delete(t.cur, pf)
				t.pending[pf] = struct{}{}
				changed = true
			}
			continue
		}
		r := Route{Prefix: pf, NextHop: nextHop(p), Peer: p.PeerAddress, PeerASN: p.PeerASN}
		if had && old == r {
			continue
		}
		t.cur[pf] = r
		t.pending[pf] = struct{}{}
		changed = true
	}
	if changed {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

func nextHop(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *gobgp.PathAttributeNextHop:
			return a.Value
		case *gobgp.PathAttributeMpReachNLRI:
			return a.Nexthop
		}
	}
	return netip.Addr{}
}

// reset forgets every learned route (reported as withdrawn) and ignores the
// old server's records from now on.
func (t *learnedTable) reset() {
	t.mu.Lock()
	t.gen++
	for pf := range t.cur {
		t.pending[pf] = struct{}{}
	}
	clear(t.cur)
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *learnedTable) close() {
	close(t.quit)
	<-t.done
}

func (t *learnedTable) deliver() {
	defer close(t.done)
	for {
		select {
		case <-t.quit:
			return
		case <-t.wake:
		}
		t.mu.Lock()
		var evs []RouteEvent
		for pf := range t.pending {
			r, ok := t.cur[pf]
			old, had := t.delivered[pf]
			switch {
			case ok && (!had || old != r):
				evs = append(evs, RouteEvent{Route: r})
				t.delivered[pf] = r
			case !ok && had:
				evs = append(evs, RouteEvent{Route: old, Withdrawn: true})
				delete(t.delivered, pf)
			}
		}
		clear(t.pending)
		t.mu.Unlock()
		if len(evs) == 0 || t.onRoutes == nil {
			continue
		}
		slices.SortFunc(evs, func(a, b RouteEvent) int { return comparePrefix(a.Prefix, b.Prefix) })
		t.onRoutes(evs)
	}
}

// snapshot returns the current learned routes sorted by prefix.
func (t *learnedTable) snapshot() []Route {
	t.mu.Lock()
	out := make([]Route, 0, len(t.cur))
	for _, r := range t.cur {
		out = append(out, r)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

func (t *learnedTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.cur)
}
