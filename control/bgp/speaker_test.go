package bgp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/resources"
)

// testLogger logs to stderr with TABBY_TEST_LOG=1 (GoBGP at Info too), else
// nowhere: GoBGP's goroutines may log after the test has ended.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TABBY_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// cluster is a set of speakers on 127.0.0.x loopback addresses, each on a
// port of its own, computed from one set of resources.
type cluster struct {
	t    *testing.T
	res  Resources
	spk  map[string]*Speaker
	recs map[string]*recorder
}

func newCluster(t *testing.T, def *resources.BGPConfiguration, nodes ...*resources.Node) *cluster {
	c := &cluster{t: t, spk: map[string]*Speaker{}, recs: map[string]*recorder{}}
	c.res.Configs = []*resources.BGPConfiguration{def}
	for _, n := range nodes {
		ip, _ := NodeIPv4(n)
		c.res.Configs = append(c.res.Configs, nodeConfig(n.Name, freePort(t, ip.Addr().String())))
		c.res.Nodes = append(c.res.Nodes, n)
		c.recs[n.Name] = newRecorder(t, n.Name)
		c.spk[n.Name] = startSpeaker(t, c.recs[n.Name])
	}
	return c
}

func (c *cluster) desired(name string) Desired {
	r := c.res
	r.Node = name
	return mustCompute(c.t, r)
}

func (c *cluster) reconcileAll() {
	for _, n := range c.res.Nodes {
		reconcile(c.t, c.spk[n.Name], c.desired(n.Name))
	}
}

// TestMesh: three speakers in a full iBGP mesh exchange their confirmed
// blocks (pending ones stay private), see withdrawals, and a repeated
// Reconcile changes nothing.
func TestMesh(t *testing.T) {
	c := newCluster(t, defaultConfig(64512, true, 0),
		node("node-a", "127.0.0.11/8", nil), node("node-b", "127.0.0.12/8", nil), node("node-c", "127.0.0.13/8", nil))
	c.res.Affinities = []*resources.BlockAffinity{
		affinity("node-a", "10.65.0.0/26", resources.AffinityConfirmed),
		affinity("node-b", "10.65.0.64/26", resources.AffinityConfirmed),
		affinity("node-c", "10.65.0.128/26", resources.AffinityConfirmed),
		affinity("node-c", "10.65.0.192/26", resources.AffinityPending),
	}
	c.reconcileAll()
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		waitEstablished(t, c.spk[n], 2, 20*time.Second)
	}
	c.recs["node-a"].waitFor(10*time.Second, "b and c blocks", hasExactly(map[string]string{
		"10.65.0.64/26": "127.0.0.12", "10.65.0.128/26": "127.0.0.13"}))
	c.recs["node-b"].waitFor(10*time.Second, "a and c blocks", hasExactly(map[string]string{
		"10.65.0.0/26": "127.0.0.11", "10.65.0.128/26": "127.0.0.13"}))
	c.recs["node-c"].waitFor(10*time.Second, "a and b blocks", hasExactly(map[string]string{
		"10.65.0.0/26": "127.0.0.11", "10.65.0.64/26": "127.0.0.12"}))
	for _, r := range c.recs["node-a"].snapshot() {
		if r.Peer != r.NextHop || r.PeerASN != 64512 {
			t.Errorf("node-a learned %+v: want peer = next hop, AS 64512", r)
		}
	}

	// Idempotence: the same desired state again changes nothing.
	st0, _ := c.spk["node-a"].Status(context.Background())
	before := map[string]int{}
	for n, r := range c.recs {
		before[n] = r.eventCount()
	}
	c.reconcileAll()
	time.Sleep(500 * time.Millisecond)
	for n, r := range c.recs {
		if got := r.eventCount(); got != before[n] {
			t.Errorf("%s: %d route events after a no-op reconcile", n, got-before[n])
		}
	}
	st1 := waitEstablished(t, c.spk["node-a"], 2, time.Second)
	for i := range st1.Peers {
		if !st1.Peers[i].Since.Equal(st0.Peers[i].Since) {
			t.Errorf("peer %s re-established by a no-op reconcile", st1.Peers[i].Address)
		}
		if st1.Peers[i].Received != 1 || st1.Peers[i].Accepted != 1 || st1.Peers[i].Advertised != 1 {
			t.Errorf("peer %+v: want 1 received, accepted, advertised", st1.Peers[i])
		}
	}
	if st1.Advertised != 1 || st1.Learned != 2 || st1.ASN != 64512 || st1.RouterID != netip.MustParseAddr("127.0.0.11") {
		t.Errorf("status %+v", st1)
	}

	// Release a block on a, confirm the pending one on c.
	c.res.Affinities[0].Spec.State = resources.AffinityPendingDeletion
	c.res.Affinities[3].Spec.State = resources.AffinityConfirmed
	c.reconcileAll()
	c.recs["node-b"].waitFor(10*time.Second, "a's block withdrawn, c's second block", hasExactly(map[string]string{
		"10.65.0.128/26": "127.0.0.13", "10.65.0.192/26": "127.0.0.13"}))
	c.recs["node-a"].waitFor(10*time.Second, "c's second block", hasExactly(map[string]string{
		"10.65.0.64/26": "127.0.0.12", "10.65.0.128/26": "127.0.0.13", "10.65.0.192/26": "127.0.0.13"}))

	// Remove node c: its sessions go, and with them its routes.
	c.res.Nodes = c.res.Nodes[:2]
	reconcile(t, c.spk["node-a"], c.desired("node-a"))
	reconcile(t, c.spk["node-b"], c.desired("node-b"))
	c.recs["node-b"].waitFor(10*time.Second, "c's routes gone", hasExactly(map[string]string{}))
	c.recs["node-a"].waitFor(10*time.Second, "c's routes gone", hasExactly(map[string]string{"10.65.0.64/26": "127.0.0.12"}))
	waitEstablished(t, c.spk["node-a"], 1, time.Second)
	for _, r := range c.recs {
		r.checkNoDuplicates()
	}
}

// TestRouteReflector: one reflector and three clients without a mesh; the
// clients peer only with the reflector and learn each other's blocks through
// it, next hop unchanged.
func TestRouteReflector(t *testing.T) {
	rr := func(n *resources.Node) { n.Spec.BGP.RouteReflectorClusterID = "244.0.0.1" }
	c := newCluster(t, defaultConfig(64512, false, 0),
		node("rr", "127.0.0.21/8", map[string]string{"route-reflector": "true"}, rr),
		node("c1", "127.0.0.22/8", nil), node("c2", "127.0.0.23/8", nil), node("c3", "127.0.0.24/8", nil))
	c.res.Peers = []*resources.BGPPeer{{ObjectMeta: resources.ObjectMeta{Name: "peer-with-rr"},
		Spec: resources.BGPPeerSpec{NodeSelector: "all()", PeerSelector: "route-reflector == 'true'"}}}
	c.res.Affinities = []*resources.BlockAffinity{
		affinity("c1", "10.66.1.0/26", resources.AffinityConfirmed),
		affinity("c2", "10.66.2.0/26", resources.AffinityConfirmed),
		affinity("c3", "10.66.3.0/26", resources.AffinityConfirmed),
	}
	d := c.desired("c1")
	if len(d.Peers) != 1 || d.Peers[0].Address != netip.MustParseAddr("127.0.0.21") || d.Peers[0].RouteReflectorClient {
		t.Fatalf("c1 peers %+v: want only the reflector, not as a client", d.Peers)
	}
	d = c.desired("rr")
	if len(d.Peers) != 3 {
		t.Fatalf("rr peers %+v: want the three clients", d.Peers)
	}
	for _, p := range d.Peers {
		if !p.RouteReflectorClient || p.ClusterID != netip.MustParseAddr("244.0.0.1") {
			t.Errorf("rr peer %+v: want a client in cluster 244.0.0.1", p)
		}
	}
	c.reconcileAll()
	waitEstablished(t, c.spk["rr"], 3, 20*time.Second)
	c.recs["c1"].waitFor(10*time.Second, "c2 and c3 blocks via the reflector", hasExactly(map[string]string{
		"10.66.2.0/26": "127.0.0.23", "10.66.3.0/26": "127.0.0.24"}))
	c.recs["c3"].waitFor(10*time.Second, "c1 and c2 blocks via the reflector", hasExactly(map[string]string{
		"10.66.1.0/26": "127.0.0.22", "10.66.2.0/26": "127.0.0.23"}))
	for _, r := range c.recs["c1"].snapshot() {
		if r.Peer != netip.MustParseAddr("127.0.0.21") {
			t.Errorf("c1 learned %+v from %s, want the reflector", r, r.Peer)
		}
	}
	// A withdrawal is reflected too.
	c.res.Affinities = c.res.Affinities[1:]
	reconcile(t, c.spk["c1"], c.desired("c1"))
	c.recs["c3"].waitFor(10*time.Second, "c1's block withdrawn", hasExactly(map[string]string{"10.66.2.0/26": "127.0.0.23"}))
	for _, r := range c.recs {
		r.checkNoDuplicates()
	}
}

// TestLogging: the speaker's own records go to Options.Logger; GoBGP's are
// tagged component=gobgp and filtered at GoBGPLogLevel.
func TestLogging(t *testing.T) {
	for _, tc := range []struct {
		name      string
		level     slog.Leveler
		wantGoBGP bool
	}{{"default warn", nil, false}, {"debug", slog.LevelDebug, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var buf lockedWriter
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			s := New(Options{Logger: log, GoBGPLogLevel: tc.level, ConnectRetry: time.Second})
			d := Desired{Global: Global{ASN: 64512, RouterID: netip.MustParseAddr("127.0.0.51"), ListenPort: freePort(t, "127.0.0.51"),
				ListenAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.51")}},
				Peers: []Peer{{Address: netip.MustParseAddr("127.0.0.52"), Port: freePort(t, "127.0.0.52"), ASN: 64512,
					LocalAddress: netip.MustParseAddr("127.0.0.51"), Source: SourceMesh, Name: "b"}}}
			reconcile(t, s, d)
			s.Close()
			out := buf.String()
			if !strings.Contains(out, `msg="bgp peer added" peer=127.0.0.52`) {
				t.Errorf("own record missing:\n%s", out)
			}
			gobgp := 0
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "component=gobgp") {
					gobgp++
					if !tc.wantGoBGP && !strings.Contains(l, "level=WARN") && !strings.Contains(l, "level=ERROR") {
						t.Errorf("GoBGP record below warn passed: %s", l)
					}
				}
			}
			if tc.wantGoBGP && gobgp == 0 {
				t.Errorf("no GoBGP debug records:\n%s", out)
			}
		})
	}
}

// TestReconcilePaths: IPv4 and IPv6 prefixes are originated and withdrawn
// (the v6 one only with a v6 next hop), and a next-hop change re-announces.
func TestReconcilePaths(t *testing.T) {
	s := startSpeaker(t, nil)
	d := Desired{Global: Global{ASN: 64512, RouterID: netip.MustParseAddr("127.0.0.61")},
		Prefixes: prefixes("10.65.0.0/26", "fd00:65::/122"), NextHop4: netip.MustParseAddr("127.0.0.61")}
	reconcile(t, s, d)
	if got := len(s.paths); got != 1 {
		t.Errorf("%d paths without a v6 next hop, want 1", got)
	}
	d.NextHop6 = netip.MustParseAddr("fd00::61")
	reconcile(t, s, d)
	if got := len(s.paths); got != 2 {
		t.Errorf("%d paths, want 2", got)
	}
	d.NextHop4 = netip.MustParseAddr("127.0.0.62")
	reconcile(t, s, d)
	if nh := s.paths[netip.MustParsePrefix("10.65.0.0/26")]; nh != d.NextHop4 {
		t.Errorf("next hop %v after the change, want %v", nh, d.NextHop4)
	}
	d.Prefixes = prefixes("fd00:65::/122")
	reconcile(t, s, d)
	st, err := s.Status(context.Background())
	if err != nil || st.Advertised != 1 || !st.Running || st.ListenPort != 0 {
		t.Errorf("status %+v %v: want one advertised prefix, not listening", st, err)
	}
	d.Prefixes = nil
	reconcile(t, s, d)
	if len(s.paths) != 0 {
		t.Errorf("paths left: %v", s.paths)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Reconcile(context.Background(), d); !errors.Is(err, ErrClosed) {
		t.Errorf("reconcile after close: %v", err)
	}
}

// TestReconcilePeerChange: a peer whose settings change is re-created with
// the new ones; the others are left alone.
func TestReconcilePeerChange(t *testing.T) {
	s := startSpeaker(t, nil)
	a, b := netip.MustParseAddr("127.0.0.72"), netip.MustParseAddr("127.0.0.73")
	d := Desired{Global: Global{ASN: 64512, RouterID: netip.MustParseAddr("127.0.0.71")},
		Peers: []Peer{{Address: a, Port: 1790, ASN: 65001}, {Address: b, Port: 1790, ASN: 65002}}}
	reconcile(t, s, d)
	d.Peers[0].ASN, d.Peers[0].Password = 65009, "new"
	reconcile(t, s, d)
	st, err := s.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 2 || st.Peers[0].ASN != 65009 || st.Peers[1].ASN != 65002 {
		t.Errorf("peers %+v: want %s at AS 65009 and %s unchanged", st.Peers, a, b)
	}
	d.Global.ASN = 64513 // a global change restarts the server with the same peers
	reconcile(t, s, d)
	if st, _ := s.Status(context.Background()); st.ASN != 64513 || len(st.Peers) != 2 {
		t.Errorf("after the AS change: %+v", st)
	}
}
