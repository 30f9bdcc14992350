package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/resources"
)

// recorder collects the RouteEvents of one speaker and checks that no event
// repeats the state already reported.
type recorder struct {
	t    testing.TB
	name string

	mu     sync.Mutex
	routes map[netip.Prefix]Route
	events []RouteEvent
	dups   []RouteEvent
	change chan struct{}
}

func newRecorder(t testing.TB, name string) *recorder {
	return &recorder{t: t, name: name, routes: map[netip.Prefix]Route{}, change: make(chan struct{}, 1)}
}

func (r *recorder) onRoutes(evs []RouteEvent) {
	r.mu.Lock()
	for _, ev := range evs {
		old, had := r.routes[ev.Prefix]
		switch {
		case ev.Withdrawn && !had, !ev.Withdrawn && had && old == ev.Route:
			r.dups = append(r.dups, ev)
		case ev.Withdrawn:
			delete(r.routes, ev.Prefix)
		default:
			r.routes[ev.Prefix] = ev.Route
		}
		r.events = append(r.events, ev)
	}
	r.mu.Unlock()
	select {
	case r.change <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() map[netip.Prefix]Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[netip.Prefix]Route, len(r.routes))
	for k, v := range r.routes {
		out[k] = v
	}
	return out
}

func (r *recorder) eventCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func (r *recorder) checkNoDuplicates() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.dups) > 0 {
		r.t.Errorf("%s: %d duplicate events, first %+v", r.name, len(r.dups), r.dups[0])
	}
}

// waitFor waits until cond holds on the recorder's routes.
func (r *recorder) waitFor(timeout time.Duration, what string, cond func(map[netip.Prefix]Route) bool) {
	r.t.Helper()
	deadline := time.After(timeout)
	for {
		if cond(r.snapshot()) {
			return
		}
		select {
		case <-r.change:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			r.t.Fatalf("%s: timed out after %v waiting for %s; routes %v", r.name, timeout, what, r.snapshot())
		}
	}
}

// hasExactly returns a condition: the routes are exactly want (prefix →
// next hop).
func hasExactly(want map[string]string) func(map[netip.Prefix]Route) bool {
	return func(got map[netip.Prefix]Route) bool {
		if len(got) != len(want) {
			return false
		}
		for p, nh := range want {
			r, ok := got[netip.MustParsePrefix(p)]
			if !ok || r.NextHop != netip.MustParseAddr(nh) {
				return false
			}
		}
		return true
	}
}

// freePort returns a TCP port free on addr.
func freePort(t testing.TB, addr string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// startSpeaker returns a speaker closed at the end of the test.
func startSpeaker(t testing.TB, rec *recorder) *Speaker {
	t.Helper()
	opts := Options{ConnectRetry: time.Second, Logger: testLogger(t)}
	if rec != nil {
		opts.OnRoutes = rec.onRoutes
	}
	s := New(opts)
	t.Cleanup(func() { s.Close() })
	return s
}

func reconcile(t testing.TB, s *Speaker, d Desired) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Reconcile(ctx, d); err != nil {
		t.Fatal(err)
	}
}

// waitEstablished waits until every configured peer of s is established.
func waitEstablished(t testing.TB, s *Speaker, n int, timeout time.Duration) Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := s.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		up := 0
		for _, p := range st.Peers {
			if p.Established {
				up++
			}
		}
		if up == n && len(st.Peers) == n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d established peers: %+v", n, st.Peers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Resource builders.

func node(name, ip string, labels map[string]string, mod ...func(*resources.Node)) *resources.Node {
	n := &resources.Node{ObjectMeta: resources.ObjectMeta{Name: name, Labels: labels},
		Spec: resources.NodeSpec{BGP: &resources.NodeBGPSpec{IPv4Address: ip}}}
	for _, m := range mod {
		m(n)
	}
	return n
}

func nodeConfig(name string, port uint16) *resources.BGPConfiguration {
	return &resources.BGPConfiguration{ObjectMeta: resources.ObjectMeta{Name: "node." + name},
		Spec: resources.BGPConfigurationSpec{ListenPort: port}}
}

func defaultConfig(asn uint32, mesh bool, port uint16) *resources.BGPConfiguration {
	return &resources.BGPConfiguration{ObjectMeta: resources.ObjectMeta{Name: "default"},
		Spec: resources.BGPConfigurationSpec{ASNumber: resources.ASNumber(asn), NodeToNodeMeshEnabled: &mesh, ListenPort: port}}
}

func affinity(node, cidr string, state resources.AffinityState) *resources.BlockAffinity {
	p := netip.MustParsePrefix(cidr)
	return &resources.BlockAffinity{ObjectMeta: resources.ObjectMeta{Name: resources.AffinityName(node, p)},
		Spec: resources.BlockAffinitySpec{State: state, Node: node, CIDR: cidr}}
}

func mustCompute(t testing.TB, r Resources) Desired {
	t.Helper()
	d, err := Compute(r)
	if err != nil {
		t.Fatalf("compute for %s: %v", r.Node, err)
	}
	return d
}

func prefixes(ps ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

var _ = fmt.Sprintf
