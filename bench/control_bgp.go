package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/control/bgp"
	"github.com/tabbynet/tabby/control/routes"
	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/header"
)

// The bgp suite measures Tabby's routing control plane end to end: BGP
// speakers on 127.0.0.x loopback addresses (each on a port of its own, in
// the calling process), learned routes fed through a routes.FIB
// (incremental routes.Compute) into routes.Userspace and datapath.Tables,
// as the agent does. It needs no root and sends nothing off the loopback.
// Cases (impl tabby):
//
//   - bgp-100k-routes: an eBGP peer announces bgpRoutes /24 prefixes (10k
//     in quick mode) at once; program_time is from the announcement until
//     the last of them is installed in the receiving node's Tables;
//     routes_per_s is the count over that time. Goal: under 2 s. The peer
//     is BIRD 2 when `bird` is on PATH (the prefixes in a disabled static
//     protocol, announced by `birdc enable`, as a ToR would send a table;
//     BIRD has no kernel protocol and so never touches the host's routes),
//     else a second GoBGP speaker, whose own AddPath of 100k paths takes
//     about 4.5 s here and then dominates the figure. The progress line
//     names the peer and when the last route event arrived.
//   - route-propagation: three speakers in a full iBGP mesh; each in turn
//     advertises a new block, and the time from its Reconcile call until
//     the route is installed in each of the other two's Tables is one
//     sample; p50 and p99 over all samples (propSamples advertisements, 10
//     in quick mode, 2 samples each). Goal: p99 under 500 ms.

const (
	bgpRoutes   = 100_000
	propSamples = 100
)

func runBGP(ctx context.Context, opt Options, emit func(Result)) error {
	n := bgpRoutes
	if opt.Quick {
		n = 10_000
	}
	opt.Progressf("bgp: bgp-100k-routes: %d routes", n)
	br, err := measureBulk(ctx, n)
	if err != nil {
		return fmt.Errorf("bgp-100k-routes: %w", err)
	}
	d := br.program
	opt.Progressf("bgp: bgp-100k-routes: %d routes from %s: last learned after %v, all programmed after %v",
		n, br.peer, br.learned.Round(time.Millisecond), d.Round(time.Millisecond))
	emit(Result{Case: "bgp-100k-routes", Impl: "tabby", Metric: "program_time", Value: ms(d), Unit: "ms"})
	emit(Result{Case: "bgp-100k-routes", Impl: "tabby", Metric: "routes_per_s", Value: float64(n) / d.Seconds(), Unit: "routes/s"})

	samples := propSamples
	if opt.Quick {
		samples = 10
	}
	opt.Progressf("bgp: route-propagation: %d advertisements", samples)
	lat, err := measurePropagation(ctx, samples)
	if err != nil {
		return fmt.Errorf("route-propagation: %w", err)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return ms(lat[min(len(lat)-1, int(p*float64(len(lat))))]) }
	opt.Progressf("bgp: route-propagation: %d samples, p50 %.1f ms, p99 %.1f ms, max %.1f ms",
		len(lat), pct(0.5), pct(0.99), ms(lat[len(lat)-1]))
	emit(Result{Case: "route-propagation", Impl: "tabby", Metric: "p50", Value: pct(0.5), Unit: "ms"})
	emit(Result{Case: "route-propagation", Impl: "tabby", Metric: "p99", Value: pct(0.99), Unit: "ms"})
	return nil
}

// fibNode is one node's routing pipeline: its speaker's learned routes go
// through a routes.FIB (incremental routes.Compute) into a Userspace
// programmer and Tables, on one goroutine that takes whatever changes
// arrived since its last pass.
type fibNode struct {
	name    string
	addr    netip.Addr
	port    uint16
	speaker *bgp.Speaker
	tables  *datapath.Tables
	prog    *routes.Userspace
	fib     *routes.FIB

	mu sync.Mutex
	// pending are the learned-route changes since the last pass: the new
	// route, or a zero Learned for a withdrawal.
	pending map[netip.Prefix]routes.Learned
	// events counts learned-route events; lastEvent is when the last came.
	events    int
	lastEvent time.Time
	// installedAt records when each prefix was first seen installed;
	// watchers are woken after every apply.
	installedAt map[netip.Prefix]time.Time
	applied     chan struct{}
	dirty       chan struct{}
	stop        chan struct{}
	done        chan struct{}
	err         error
}

func newFIBNode(name string, addr netip.Addr, neighbors routes.StaticNeighbors) (*fibNode, error) {
	port, err := freeLoopbackPort(addr)
	if err != nil {
		return nil, err
	}
	tb, err := datapath.NewTables(datapath.NodeConfig{TunnelIPv4: addr})
	if err != nil {
		return nil, err
	}
	prog, err := routes.NewUserspace(routes.UserspaceConfig{Tables: tb, Neighbors: neighbors, UnderlayIPv4: addr})
	if err != nil {
		return nil, err
	}
	f := &fibNode{name: name, addr: addr, port: port, tables: tb, prog: prog,
		fib:     routes.NewFIB(routes.Input{Node: name, BGP: true}),
		pending: map[netip.Prefix]routes.Learned{}, installedAt: map[netip.Prefix]time.Time{},
		applied: make(chan struct{}), dirty: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	f.speaker = bgp.New(bgp.Options{ConnectRetry: time.Second, OnRoutes: f.onRoutes})
	go f.run()
	return f, nil
}

func (f *fibNode) onRoutes(evs []bgp.RouteEvent) {
	f.mu.Lock()
	f.events += len(evs)
	f.lastEvent = time.Now()
	for _, ev := range evs {
		if ev.Withdrawn {
			f.pending[ev.Prefix] = routes.Learned{}
		} else {
			f.pending[ev.Prefix] = routes.Learned{Prefix: ev.Prefix, NextHop: ev.NextHop}
		}
	}
	f.mu.Unlock()
	select {
	case f.dirty <- struct{}{}:
	default:
	}
}

func (f *fibNode) run() {
	defer close(f.done)
	for {
		select {
		case <-f.stop:
			return
		case <-f.dirty:
		}
		f.mu.Lock()
		pending := f.pending
		f.pending = make(map[netip.Prefix]routes.Learned, len(pending))
		f.mu.Unlock()
		var set []routes.Learned
		var gone []netip.Prefix
		for p, l := range pending {
			if l.Prefix.IsValid() {
				set = append(set, l)
			} else {
				gone = append(gone, p)
			}
		}
		d := f.fib.UpdateLearned(set, gone)
		_, err := f.prog.ApplyDelta(d)
		now := time.Now()
		f.mu.Lock()
		if err != nil && f.err == nil {
			f.err = err
		}
		for _, r := range d.Set {
			if _, ok := f.prog.NextHopID(r.Dst); ok {
				if _, seen := f.installedAt[r.Dst]; !seen {
					f.installedAt[r.Dst] = now
				}
			}
		}
		close(f.applied)
		f.applied = make(chan struct{})
		f.mu.Unlock()
	}
}

// waitInstalled waits until dst is installed and returns when it was.
func (f *fibNode) waitInstalled(ctx context.Context, dst netip.Prefix, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		t, ok := f.installedAt[dst]
		err, ch := f.err, f.applied
		f.mu.Unlock()
		switch {
		case ok:
			return t, nil
		case err != nil:
			return time.Time{}, err
		}
		select {
		case <-ch:
		case <-deadline:
			return time.Time{}, fmt.Errorf("%s: %s not installed after %v", f.name, dst, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// waitCount waits until n routes are installed and returns when the
// programming pass that installed the last of them ended.
func (f *fibNode) waitCount(ctx context.Context, n int, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		have, err, ch := len(f.installedAt), f.err, f.applied
		var last time.Time
		if have >= n {
			for _, t := range f.installedAt {
				if t.After(last) {
					last = t
				}
			}
		}
		f.mu.Unlock()
		switch {
		case have >= n:
			return last, nil
		case err != nil:
			return time.Time{}, err
		}
		select {
		case <-ch:
		case <-deadline:
			v4, _ := f.tables.Routes()
			return time.Time{}, fmt.Errorf("%s: %d of %d routes installed after %v (tables: %d)", f.name, have, n, timeout, v4)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

func (f *fibNode) close() {
	f.speaker.Close()
	close(f.stop)
	<-f.done
}

func (f *fibNode) waitEstablished(ctx context.Context, peers int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := f.speaker.Status(ctx)
		if err != nil {
			return err
		}
		up := 0
		for _, p := range st.Peers {
			if p.Established {
				up++
			}
		}
		if up == peers {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d sessions established after %v", f.name, up, peers, timeout)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func freeLoopbackPort(addr netip.Addr) (uint16, error) {
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return 0, fmt.Errorf("loopback address %s: %w", addr, err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port), nil
}

func (f *fibNode) global(asn uint32) bgp.Global {
	return bgp.Global{ASN: asn, RouterID: f.addr, ListenPort: f.port, ListenAddresses: []netip.Addr{f.addr}}
}

func (f *fibNode) peer(asn uint32, from *fibNode) bgp.Peer {
	return bgp.Peer{Address: f.addr, Port: f.port, ASN: asn, LocalAddress: from.addr, Source: bgp.SourceMesh, Name: f.name}
}

// loopbackNeighbors resolves every address in addrs to a fixed MAC.
func loopbackNeighbors(addrs ...netip.Addr) routes.StaticNeighbors {
	nb := routes.StaticNeighbors{}
	for i, a := range addrs {
		nb[a] = routes.Neighbor{Port: 1, SrcMAC: header.MAC{2, 0, 0, 0, 0, 1}, DstMAC: header.MAC{2, 0, 0, 0, 1, byte(i)}}
	}
	return nb
}

// bulkPrefixes returns n distinct /24s from 16.0.0.0 up.
func bulkPrefixes(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range n {
		a := uint32(16<<24) + uint32(i)<<8
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), 0}), 24)
	}
	return out
}

// measureBulk runs bgp-100k-routes and returns the time and the peer used.
// The announcing peer is BIRD 2 when it is installed (a router announcing
// a table, as a ToR would), else a second GoBGP speaker, whose own AddPath
// of 100k paths takes seconds and then dominates the figure.
// bulkResult is what bgp-100k-routes measured: the time until the last
// route was installed, until the last route event reached the pipeline, and
// the peer that announced them.
type bulkResult struct {
	program, learned time.Duration
	peer             string
}

func measureBulk(ctx context.Context, n int) (bulkResult, error) {
	peerAddr, tabbyAddr := netip.MustParseAddr("127.0.0.31"), netip.MustParseAddr("127.0.0.32")
	const peerAS, tabbyAS = 65001, 64512
	tabby, err := newFIBNode("tabby", tabbyAddr, loopbackNeighbors(peerAddr))
	if err != nil {
		return bulkResult{}, err
	}
	defer tabby.close()
	peerPort, err := freeLoopbackPort(peerAddr)
	if err != nil {
		return bulkResult{}, err
	}
	prefixes := bulkPrefixes(n)

	var announce func() error
	peerName := "bird"
	if birdPath, err := exec.LookPath("bird"); err == nil {
		b, err := startBIRDPeer(ctx, birdPath, peerAddr, peerPort, peerAS, tabbyAddr, tabby.port, tabbyAS, prefixes)
		if err != nil {
			return bulkResult{}, err
		}
		defer b.close()
		announce = b.enable
	} else {
		peerName = "gobgp"
		peer, err := newFIBNode("peer", peerAddr, nil)
		if err != nil {
			return bulkResult{}, err
		}
		defer peer.close()
		peer.port = peerPort
		pd := bgp.Desired{Global: peer.global(peerAS), Peers: []bgp.Peer{tabby.peer(tabbyAS, peer)}, NextHop4: peerAddr}
		if err := peer.speaker.Reconcile(ctx, pd); err != nil {
			return bulkResult{}, err
		}
		pd.Prefixes = prefixes
		announce = func() error { return peer.speaker.Reconcile(ctx, pd) }
	}
	tp := bgp.Peer{Address: peerAddr, Port: peerPort, ASN: peerAS, LocalAddress: tabbyAddr, Source: bgp.SourceExplicit, Name: peerName}
	if err := tabby.speaker.Reconcile(ctx, bgp.Desired{Global: tabby.global(tabbyAS), Peers: []bgp.Peer{tp}, NextHop4: tabbyAddr}); err != nil {
		return bulkResult{}, err
	}
	if err := tabby.waitEstablished(ctx, 1, 30*time.Second); err != nil {
		return bulkResult{}, err
	}
	start := time.Now()
	if err := announce(); err != nil {
		return bulkResult{}, err
	}
	last, err := tabby.waitCount(ctx, n, 60*time.Second)
	if err != nil {
		return bulkResult{}, err
	}
	// One route end to end: the last prefix leads to the peer.
	a := prefixes[n-1].Addr().As4()
	snap := tabby.tables.Load()
	if id, ok := snap.Routes4.Lookup(uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | 1); !ok || snap.NextHops[id].Kind != datapath.NextHopRemote {
		return bulkResult{}, errors.New("last route not installed towards the peer")
	}
	tabby.mu.Lock()
	learned := tabby.lastEvent.Sub(start)
	tabby.mu.Unlock()
	return bulkResult{program: last.Sub(start), learned: learned, peer: peerName}, nil
}

// birdPeer is a BIRD 2 daemon on a loopback address with the prefixes in a
// disabled static protocol, so that enabling it announces them at once.
// It has no kernel protocol: it never touches the host's routing table.
type birdPeer struct {
	cmd  *exec.Cmd
	dir  string
	sock string
}

func startBIRDPeer(ctx context.Context, bird string, addr netip.Addr, port uint16, asn uint32,
	tabby netip.Addr, tabbyPort uint16, tabbyAS uint32, prefixes []netip.Prefix) (*birdPeer, error) {
	dir, err := os.MkdirTemp("", "tabby-bench-bird-")
	if err != nil {
		return nil, err
	}
	b := &birdPeer{dir: dir, sock: filepath.Join(dir, "bird.ctl")}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "router id %s;\nprotocol device {}\nprotocol static bulk {\n\tipv4;\n\tdisabled;\n", addr)
	for _, p := range prefixes {
		fmt.Fprintf(&cfg, "\troute %s blackhole;\n", p)
	}
	fmt.Fprintf(&cfg, `}
protocol bgp tabby {
	local %s port %d as %d;
	neighbor %s port %d as %d;
	multihop;
	connect delay time 1;
	connect retry time 2;
	ipv4 { import none; export where proto = "bulk"; next hop self; };
}
`, addr, port, asn, tabby, tabbyPort, tabbyAS)
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	b.cmd = exec.Command(bird, "-f", "-c", conf, "-s", b.sock)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := &strings.Builder{}
	b.cmd.Stdout, b.cmd.Stderr = out, out
	if err := b.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start bird: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if exec.CommandContext(ctx, "birdc", "-s", b.sock, "show", "status").Run() == nil {
			return b, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.close()
			return nil, fmt.Errorf("bird did not start: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *birdPeer) enable() error {
	if out, err := exec.Command("birdc", "-s", b.sock, "enable", "bulk").CombinedOutput(); err != nil {
		return fmt.Errorf("birdc enable bulk: %v: %s", err, out)
	}
	return nil
}

func (b *birdPeer) close() {
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	b.cmd.Wait()
	os.RemoveAll(b.dir)
}

// measurePropagation runs route-propagation and returns the samples.
func measurePropagation(ctx context.Context, samples int) ([]time.Duration, error) {
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.41"), netip.MustParseAddr("127.0.0.42"), netip.MustParseAddr("127.0.0.43")}
	nb := loopbackNeighbors(addrs...)
	var nodes []*fibNode
	defer func() {
		for _, f := range nodes {
			f.close()
		}
	}()
	for i, a := range addrs {
		f, err := newFIBNode(fmt.Sprintf("node-%d", i), a, nb)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, f)
	}
	const asn = 64512
	desired := make([]bgp.Desired, len(nodes))
	for i, f := range nodes {
		desired[i] = bgp.Desired{Global: f.global(asn), NextHop4: f.addr}
		for j, o := range nodes {
			if j != i {
				desired[i].Peers = append(desired[i].Peers, o.peer(asn, f))
			}
		}
		if err := f.speaker.Reconcile(ctx, desired[i]); err != nil {
			return nil, err
		}
	}
	for _, f := range nodes {
		if err := f.waitEstablished(ctx, len(nodes)-1, 30*time.Second); err != nil {
			return nil, err
		}
	}
	var lat []time.Duration
	for s := range samples {
		i := s % len(nodes)
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(s >> 2), byte(s&3) << 6}), 26)
		desired[i].Prefixes = append(desired[i].Prefixes, block)
		start := time.Now()
		if err := nodes[i].speaker.Reconcile(ctx, desired[i]); err != nil {
			return nil, err
		}
		for j, f := range nodes {
			if j == i {
				continue
			}
			at, err := f.waitInstalled(ctx, block, 10*time.Second)
			if err != nil {
				return nil, err
			}
			lat = append(lat, at.Sub(start))
		}
	}
	return lat, nil
}
