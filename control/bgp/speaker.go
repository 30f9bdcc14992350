package bgp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Options configure a Speaker. The zero value is usable.
type Options struct {
	// Logger receives the speaker's own records (nil: discarded).
	Logger *slog.Logger
	// GoBGPLogLevel is the least severe GoBGP record passed on to Logger
	// (nil: slog.LevelWarn).
	GoBGPLogLevel slog.Leveler
	// OnRoutes receives learned routes, in order, from one goroutine (see
	// RouteEvent). It must not call Close.
	OnRoutes func([]RouteEvent)
	// ConnectRetry is the time between connection attempts to a peer
	// (default 10s; GoBGP's minimum first delay is about 2s).
	ConnectRetry time.Duration
	// HoldTime is the proposed hold time (default 90s); keepalives are sent
	// every third of it.
	HoldTime time.Duration
}

// Speaker is one node's BGP speaker. See the package documentation.
type Speaker struct {
	opts Options
	log  *slog.Logger
	glog *slog.Logger // GoBGP's logger

	mu      sync.Mutex // serialises Reconcile, Status and Close
	srv     *server.BgpServer
	global  Global // as started; valid when srv != nil
	peers   map[netip.Addr]Peer
	paths   map[netip.Prefix]netip.Addr // advertised prefix → next hop
	stopW   context.CancelFunc          // stops the current server's watch
	closed  bool
	learned *learnedTable
}

// New returns a speaker that is not yet running: the first Reconcile starts
// it.
func New(opts Options) *Speaker {
	if opts.ConnectRetry <= 0 {
		opts.ConnectRetry = 10 * time.Second
	}
	if opts.HoldTime <= 0 {
		opts.HoldTime = 90 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	lvl := opts.GoBGPLogLevel
	if lvl == nil {
		lvl = slog.LevelWarn
	}
	s := &Speaker{
		opts:  opts,
		log:   log,
		glog:  slog.New(&levelHandler{min: lvl, next: log.Handler()}).With("component", "gobgp"),
		peers: map[netip.Addr]Peer{},
		paths: map[netip.Prefix]netip.Addr{},
	}
	s.learned = newLearnedTable(opts.OnRoutes)
	return s
}

// ErrClosed is returned by the methods of a closed Speaker.
var ErrClosed = errors.New("bgp speaker closed")

// Reconcile converges the running server on d: it starts the server (or
// restarts it when d.Global changed), adds missing peers, removes peers not
// in d, re-creates peers whose settings changed, advertises new prefixes and
// withdraws the others. It is idempotent. On error the server is left
// partially converged and a later Reconcile continues from there.
func (s *Speaker) Reconcile(ctx context.Context, d Desired) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := validateDesired(&d); err != nil {
		return err
	}
	if s.srv == nil || !sameGlobal(s.global, d.Global) {
		if err := s.restart(ctx, d.Global); err != nil {
			return err
		}
	}
	var errs []error

	// Peers: remove the gone and the changed first (a changed peer is
	// re-created), then add.
	want := make(map[netip.Addr]Peer, len(d.Peers))
	for _, p := range d.Peers {
		want[p.Address] = p
	}
	for _, addr := range slices.SortedFunc(maps.Keys(s.peers), netip.Addr.Compare) {
		if p, ok := want[addr]; ok && sameSession(p, s.peers[addr]) {
			s.peers[addr] = p // Source and Name may change without a reset
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("delete peer %s: %w", addr, err))
			continue
		}
		s.log.Info("bgp peer removed", "peer", addr)
		delete(s.peers, addr)
	}
	for _, p := range d.Peers {
		if _, ok := s.peers[p.Address]; ok {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p, d.Global.ASN)}); err != nil {
			errs = append(errs, fmt.Errorf("add peer %s: %w", p.Address, err))
			continue
		}
		s.log.Info("bgp peer added", "peer", p.Address, "asn", p.ASN, "source", p.Source, "name", p.Name)
		s.peers[p.Address] = p
	}

	// Paths.
	wantPaths := make(map[netip.Prefix]netip.Addr, len(d.Prefixes))
	for _, pf := range d.Prefixes {
		nh := d.NextHop4
		if pf.Addr().Is6() {
			nh = d.NextHop6
		}
		if nh.IsValid() {
			wantPaths[pf] = nh
		}
	}
	var gone, added []netip.Prefix
	var withdraw, announce []*apiutil.Path
	for _, pf := range slices.SortedFunc(maps.Keys(s.paths), comparePrefix) {
		if _, ok := wantPaths[pf]; !ok {
			gone = append(gone, pf)
			withdraw = append(withdraw, localPath(pf, s.paths[pf], true))
		}
	}
	if len(withdraw) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: withdraw}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %d prefixes: %w", len(withdraw), err))
		} else {
			for _, pf := range gone {
				delete(s.paths, pf)
			}
			s.log.Info("bgp prefixes withdrawn", "count", len(gone), "first", gone[0])
		}
	}
	for _, pf := range d.Prefixes {
		nh, ok := wantPaths[pf]
		if !ok {
			continue
		}
		if old, ok := s.paths[pf]; ok && old == nh {
			continue
		}
		added = append(added, pf)
		announce = append(announce, localPath(pf, nh, false))
	}
	if len(announce) > 0 {
		if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: announce}); err != nil {
			errs = append(errs, fmt.Errorf("advertise %d prefixes: %w", len(announce), err))
		} else {
			for _, pf := range added {
				s.paths[pf] = wantPaths[pf]
			}
			s.log.Info("bgp prefixes advertised", "count", len(added), "first", added[0])
		}
	}
	return errors.Join(errs...)
}

func validateDesired(d *Desired) error {
	g := &d.Global
	if g.ASN == 0 {
		return fmt.Errorf("reconcile: global AS number is 0")
	}
	if !g.RouterID.Is4() {
		return fmt.Errorf("reconcile: router ID %v is not an IPv4 address", g.RouterID)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range d.Peers {
		switch {
		case !p.Address.IsValid():
			return fmt.Errorf("reconcile: peer with no address")
		case seen[p.Address]:
			return fmt.Errorf("reconcile: peer %s listed twice", p.Address)
		case p.ASN == 0:
			return fmt.Errorf("reconcile: peer %s: AS number is 0", p.Address)
		case p.RouteReflectorClient && !p.ClusterID.Is4():
			return fmt.Errorf("reconcile: peer %s: route-reflector client without an IPv4 cluster ID", p.Address)
		}
		seen[p.Address] = true
	}
	for _, pf := range d.Prefixes {
		if !pf.IsValid() || pf.Masked() != pf {
			return fmt.Errorf("reconcile: prefix %v is not a masked prefix", pf)
		}
	}
	return nil
}

// sameSession reports whether a and b configure the same session (they
// may differ in Source and Name).
func sameSession(a, b Peer) bool {
	a.Source, a.Name = b.Source, b.Name
	return a == b
}

func sameGlobal(a, b Global) bool {
	return a.ASN == b.ASN && a.RouterID == b.RouterID && a.ListenPort == b.ListenPort &&
		slices.Equal(a.ListenAddresses, b.ListenAddresses)
}

// restart stops the running server, if any, and starts a new one with g.
// Every peer and path is dropped; learned routes are withdrawn.
func (s *Speaker) restart(ctx context.Context, g Global) error {
	if s.srv != nil {
		s.log.Info("bgp global settings changed; restarting", "asn", g.ASN, "router_id", g.RouterID, "port", g.ListenPort)
		s.stopServer(false)
	}
	srv := server.NewBgpServer(server.LoggerOption(s.glog, nil))
	go srv.Serve()
	listen := int32(g.ListenPort)
	if listen == 0 {
		listen = -1 // GoBGP: do not listen
	}
	req := &api.StartBgpRequest{Global: &api.Global{
		Asn:        g.ASN,
		RouterId:   g.RouterID.String(),
		ListenPort: listen,
	}}
	for _, a := range g.ListenAddresses {
		req.Global.ListenAddresses = append(req.Global.ListenAddresses, a.String())
	}
	if err := srv.StartBgp(ctx, req); err != nil {
		srv.Stop()
		return fmt.Errorf("start bgp (as %d, router id %s, port %d): %w", g.ASN, g.RouterID, g.ListenPort, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	err := srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{
		OnBestPath:   s.learned.callback(),
		OnPeerUpdate: s.onPeerUpdate,
	}, server.WatchBestPath(true), server.WatchPeer())
	if err != nil {
		cancel()
		srv.Stop()
		return fmt.Errorf("watch bgp events: %w", err)
	}
	s.srv, s.global, s.stopW = srv, g, cancel
	s.log.Info("bgp started", "asn", g.ASN, "router_id", g.RouterID, "port", g.ListenPort)
	return nil
}

// stopServer stops the server; graceful leaves sessions with graceful
// restart negotiated without a NOTIFICATION, so those peers keep this
// node's routes for the restart time.
func (s *Speaker) stopServer(graceful bool) {
	s.stopW()
	if err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: graceful}); err != nil {
		s.log.Warn("bgp stop", "err", err)
	}
	s.srv = nil
	s.peers = map[netip.Addr]Peer{}
	s.paths = map[netip.Prefix]netip.Addr{}
	s.learned.reset()
}

func (s *Speaker) onPeerUpdate(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	attrs := []any{"peer", st.NeighborAddress, "asn", st.PeerASN, "state", stateName(st.SessionState)}
	if st.DisconnectMessage != "" && st.SessionState != gobgp.BGP_FSM_ESTABLISHED {
		attrs = append(attrs, "reason", st.DisconnectMessage)
	}
	s.log.Info("bgp peer state", attrs...)
}

// Close stops the speaker with a Cease NOTIFICATION to every peer, which
// then withdraw this node's routes at once. It is safe to call twice.
func (s *Speaker) Close() error { return s.Shutdown(false) }

// Shutdown stops the speaker. With graceful, peers that negotiated graceful
// restart get no NOTIFICATION and keep this node's routes for the restart
// time (an agent restart); otherwise it is Close.
func (s *Speaker) Shutdown(graceful bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.srv != nil {
		s.stopServer(graceful)
	}
	s.learned.close()
	return nil
}

// apiPeer converts p to GoBGP's peer configuration.
func (s *Speaker) apiPeer(p Peer, localASN uint32) *api.Peer {
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if p.Address.Is6() {
		fam = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	restart := p.RestartTime
	if restart <= 0 {
		restart = DefaultRestartTime
	}
	port := p.Port
	if port == 0 {
		port = DefaultPort
	}
	hold := uint64(s.opts.HoldTime / time.Second)
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
			Description:     p.Source.String() + ":" + p.Name,
		},
		Transport: &api.Transport{RemotePort: uint32(port), PassiveMode: p.Passive},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(max(s.opts.ConnectRetry/time.Second, 1)),
			HoldTime:          hold,
			KeepaliveInterval: max(hold/3, 1),
		}},
		GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: uint32(restart / time.Second)},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: fam, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}},
	}
	if p.LocalAddress.IsValid() {
		ap.Transport.LocalAddress = p.LocalAddress.String()
	}
	if p.RouteReflectorClient {
		ap.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: p.ClusterID.String()}
	}
	if p.ASN != localASN && p.Source != SourceExplicit {
		// eBGP between nodes may cross routers (CrossSubnet).
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	return ap
}

// localPath builds the path this node originates for pf.
func localPath(pf netip.Prefix, nh netip.Addr, withdraw bool) *apiutil.Path {
	nlri, _ := gobgp.NewIPAddrPrefix(pf)
	fam := gobgp.RF_IPv4_UC
	var nhAttr gobgp.PathAttributeInterface
	if pf.Addr().Is6() {
		fam = gobgp.RF_IPv6_UC
		nhAttr, _ = gobgp.NewPathAttributeMpReachNLRI(fam, []gobgp.PathNLRI{{NLRI: nlri}}, nh)
	} else {
		nhAttr, _ = gobgp.NewPathAttributeNextHop(nh)
	}
	return &apiutil.Path{
		Family:     fam,
		Nlri:       nlri,
		Attrs:      []gobgp.PathAttributeInterface{gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP), nhAttr},
		Withdrawal: withdraw,
	}
}

func stateName(s gobgp.FSMState) string {
	switch s {
	case gobgp.BGP_FSM_IDLE:
		return "Idle"
	case gobgp.BGP_FSM_CONNECT:
		return "Connect"
	case gobgp.BGP_FSM_ACTIVE:
		return "Active"
	case gobgp.BGP_FSM_OPENSENT:
		return "OpenSent"
	case gobgp.BGP_FSM_OPENCONFIRM:
		return "OpenConfirm"
	case gobgp.BGP_FSM_ESTABLISHED:
		return "Established"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// levelHandler passes on records at min and above.
type levelHandler struct {
	min  slog.Leveler
	next slog.Handler
}

func (h *levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min.Level() && h.next.Enabled(ctx, l)
}

func (h *levelHandler) Handle(ctx context.Context, r slog.Record) error { return h.next.Handle(ctx, r) }

func (h *levelHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &levelHandler{min: h.min, next: h.next.WithAttrs(a)}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{min: h.min, next: h.next.WithGroup(name)}
}
