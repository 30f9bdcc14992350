package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/ipam"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/control/routes"
	"github.com/tabbynet/tabby/datapath"
)

// Options are what the caller of Start decides beyond the configuration.
type Options struct {
	// Layers are the configuration sources above the datastore, highest
	// precedence first: environment, flags, file (see ResolveConfig).
	Layers []*ConfigLayer
	// Logger and LevelVar: the logger (default: from the configuration,
	// to stderr) and the level variable a datastore change adjusts.
	Logger   *slog.Logger
	LevelVar *slog.LevelVar
	// Netns is the network namespace of the dataplane: the engine's
	// interfaces, netlink reads, nftables (0: Config.Netns, else the
	// process's). The agent's sockets (HTTP, etcd, BGP) stay in the
	// process's namespace.
	Netns netns.NsHandle

	// Cluster is the source of the cluster's own objects (pods,
	// namespaces, NetworkPolicies) when the agent should use them (default:
	// the Kubernetes datastore's; none with etcd). With a Cluster, pods
	// are the workload endpoints and this node's registrations are kept in
	// <stateDir>/endpoints.json.
	Cluster *kubernetes.Cluster

	// dataplane replaces the dataplane (tests of the reconciler).
	dataplane dataplane
	// Routes replaces the route programmer (default: FIBRoutes for
	// afxdp, NoRoutes for kernel).
	Routes RouteProgrammer
	// ProbeInterval is how often datastore watches check that etcd
	// answers (default 2s): how fast an outage is noticed.
	ProbeInterval time.Duration
	// StartTimeout bounds waiting for the datastore at start (default 60s).
	StartTimeout time.Duration
	// StuckAfter: /healthz fails when the reconciler loop has not turned
	// for this long (default 30s).
	StuckAfter time.Duration
	// BGPRouteHold delays the first route programming in kernel mode with
	// BGP until BGP delivered routes or this long passed (default 30s), so
	// that a restart does not withdraw routes the peers are resending.
	BGPRouteHold time.Duration
}

// Agent is a running node agent. See the package documentation.
type Agent struct {
	cfg  Config
	opts Options
	log  *slog.Logger

	embedded *etcd.Embedded
	ds       datastore.Datastore
	objs     ObjectStore
	store    *Store
	cluster  *kubernetes.Cluster
	epFile   *endpointFile // with a cluster: this node's registrations
	ipam     *ipam.IPAM
	dp       dataplane
	tables   *datapath.Tables // afxdp only
	bgp      bgpSpeaker
	neigh    *netlinkNeighbors
	rec      *reconciler
	metrics  *metrics

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	watchers []func()
	cni      *http.Server
	cniLn    net.Listener
	servers  []*http.Server
	addrs    map[string]string // "health", "metrics" → listen address

	ownNetns netns.NsHandle // opened from Config.Netns, closed by Close
	vtep     netip.Addr     // this node's VXLAN tunnel address, if any
	closers  []func()       // run by Close after the dataplane

	closeOnce sync.Once
	closeErr  error
}

// Start starts an agent: it resolves the configuration (Options.Layers
// over the datastore's AgentConfigurations), connects to the datastore (or
// starts an embedded etcd), creates the default pools when there are none,
// registers the node, starts the dataplane, the reconciler and its watches,
// and the HTTP servers. On error everything started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Agent, err error) {
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 2 * time.Second
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.StuckAfter <= 0 {
		opts.StuckAfter = 30 * time.Second
	}
	if opts.BGPRouteHold <= 0 {
		opts.BGPRouteHold = 30 * time.Second
	}
	// A bad value in a local source fails now; keys a lower source may
	// still supply are checked once the datastore is read.
	if _, err := parseLayers(opts.Layers...); err != nil {
		return nil, err
	}
	boot, err := ResolveBootstrap(opts.Layers...)
	if err != nil {
		return nil, err
	}
	a := &Agent{opts: opts, log: opts.Logger, addrs: map[string]string{}}
	if a.log == nil {
		a.log, opts.LevelVar = NewLogger(os.Stderr, &boot)
		a.opts.LevelVar = opts.LevelVar
	}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if err := a.connect(ctx, &boot); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	global, node, err := a.readAgentConfigs(sctx, boot.NodeName)
	if err != nil {
		return nil, err
	}
	layers := append([]*ConfigLayer(nil), opts.Layers...)
	for _, ac := range []*AgentConfiguration{node, global} {
		l, err := DatastoreLayer(ac)
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	cfg, err := ResolveConfig(layers...)
	if err != nil {
		return nil, err
	}
	a.cfg = cfg
	if opts.LevelVar != nil {
		opts.LevelVar.Set(cfg.LogLevel)
	}
	a.log = a.log.With("node", cfg.NodeName)
	if !validNetns(a.opts.Netns) && cfg.Netns != "" {
		open := netns.GetFromName
		if strings.HasPrefix(cfg.Netns, "/") {
			open = netns.GetFromPath
		}
		h, err := open(cfg.Netns)
		if err != nil {
			return nil, fmt.Errorf("netns %s: %w", cfg.Netns, err)
		}
		a.ownNetns, a.opts.Netns = h, h
	}
	a.log.Info("starting agent", "dataplane", cfg.Dataplane, "datastore", cfg.Datastore.Type,
		"interfaces", cfg.Interfaces, "bgp", cfg.BGPEnabled, "sources", describeSources(&cfg))

	nodeAddr, hostAddrs, err := a.addresses()
	if err != nil {
		return nil, err
	}
	pools, err := a.ensurePools(sctx)
	if err != nil {
		return nil, err
	}
	if a.ipam, err = ipam.New(a.ds, ipam.Config{Node: cfg.NodeName, Logger: a.log.With("component", "ipam")}); err != nil {
		return nil, err
	}
	if err := a.registerNode(sctx, nodeAddr, pools); err != nil {
		return nil, err
	}
	if err := a.startDataplane(ctx, nodeAddr, hostAddrs, pools); err != nil {
		return nil, err
	}
	a.metrics = newMetrics()
	a.metrics.reg.MustRegister(newDataplaneCollector(func() dataplane { return a.dp }))
	lc := &liveConfig{top: opts.Layers, global: global, node: node, current: cfg, level: opts.LevelVar}
	deps := reconcilerDeps{node: cfg.NodeName, log: a.log.With("component", "reconciler"), debounce: cfg.Debounce,
		dataplane: a.dp, routes: opts.Routes, metrics: a.metrics, config: lc}
	if cfg.BGPEnabled && cfg.Dataplane == "kernel" {
		deps.holdRoutes = time.Now().Add(opts.BGPRouteHold)
	}
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = rcancel
	if cfg.BGPEnabled {
		// The speaker starts on the reconciler's first Reconcile, after
		// a.rec is set; it delivers learned routes from its own goroutine.
		a.bgp = newGoBGPSpeaker(a.log.With("component", "bgp"), func(lr []LearnedRoute) {
			select {
			case a.rec.in <- input{kind: kindLearnedRoutes, typ: datastore.Modified, learned: lr}:
			case <-rctx.Done():
			}
		})
		deps.bgp = a.bgp
		a.metrics.reg.MustRegister(newBGPCollector(a.bgp))
	}
	if deps.routes == nil {
		if deps.routes, err = a.defaultRoutes(nodeAddr); err != nil {
			return nil, err
		}
	}
	deps.kinds = a.watchedKinds()
	a.rec = newReconciler(deps)
	if err := a.loadLocalEndpoints(); err != nil {
		return nil, err
	}
	a.wg.Go(func() { a.rec.run(rctx) })
	if err := a.startWatches(rctx); err != nil {
		return nil, err
	}
	if err := a.startServers(); err != nil {
		return nil, err
	}
	if cfg.IPAMGCInterval > 0 {
		a.wg.Go(func() { a.gcLoop(rctx) })
	}
	a.log.Info("agent started", "cni_socket", cfg.CNISocket, "health", a.addrs["health"], "metrics", a.addrs["metrics"])
	return a, nil
}

// startDataplane starts the configured dataplane.
func (a *Agent) startDataplane(ctx context.Context, nodeAddr netip.Prefix, hostAddrs []netip.Addr, pools []*resources.IPPool) error {
	if a.opts.dataplane != nil {
		a.dp = a.opts.dataplane
		return nil
	}
	if a.cfg.Dataplane == "kernel" {
		log := a.log.With("component", "dataplane")
		ipv6 := false
		for _, p := range pools {
			ipv6 = ipv6 || p.Prefix().Addr().Is6()
		}
		if err := enableForwarding(a.opts.Netns, "/proc/sys", ipv6, log); err != nil {
			return fmt.Errorf("kernel dataplane: %w", err)
		}
		a.dp = newKernelDataplane(a.opts.Netns, a.cfg.NodeName, log)
		return nil
	}
	s := dataplaneSetup{cfg: &a.cfg, netns: a.opts.Netns, nodeAddr: nodeAddr, hostAddrs: hostAddrs,
		log: a.log}
	st := steeringOf(pools)
	s.podCIDRs, s.ipip, s.vxlan = st.cidrs, st.ipip, st.vxlan
	dp, err := startAFXDP(ctx, s)
	if err != nil {
		return err
	}
	dp.steering = st
	a.dp, a.tables = dp, dp.tables
	return nil
}

// defaultRoutes returns the route programmer of the dataplane.
func (a *Agent) defaultRoutes(nodeAddr netip.Prefix) (RouteProgrammer, error) {
	dp, ok := a.dp.(*afxdpDataplane)
	if !ok {
		if _, kernel := a.dp.(*kernelDataplane); !kernel {
			return NoRoutes{}, nil // a test dataplane
		}
		return a.kernelRoutes(nodeAddr)
	}
	neigh, err := newNetlinkNeighbors(a.opts.Netns, dp.ports)
	if err != nil {
		return nil, err
	}
	a.neigh = neigh
	uc := routes.UserspaceConfig{Tables: dp.tables, Neighbors: neigh, FirstNextHop: fibFirstNextHop,
		NextHops: fibNextHops, Logger: a.log.With("component", "routes")}
	if nodeAddr.IsValid() {
		uc.UnderlayIPv4 = nodeAddr.Addr()
	}
	copy(uc.VTEPMAC[:], vtepMAC(a.cfg.NodeName))
	fib, err := routes.NewUserspace(uc)
	if err != nil {
		return nil, err
	}
	return &FIBRoutes{fib: fib, endpoints: NewTablesRoutes(dp.tables, dp.ports, endpointFirstNextHop)}, nil
}

// kernelRoutes returns the kernel-mode programmer, with the VXLAN device
// when this node has a VTEP.
func (a *Agent) kernelRoutes(nodeAddr netip.Prefix) (RouteProgrammer, error) {
	nl, err := netlinkHandle(a.opts.Netns)
	if err != nil {
		return nil, err
	}
	kc := routes.KernelConfig{Handle: nl, Logger: a.log.With("component", "routes")}
	if a.vtep.IsValid() && nodeAddr.IsValid() {
		v := &routes.VXLANDevice{Local: nodeAddr.Addr(), Addr: a.vtep}
		copy(v.MAC[:], vtepMAC(a.cfg.NodeName))
		if len(a.cfg.Interfaces) > 0 {
			if l, err := nl.LinkByName(a.cfg.Interfaces[0]); err == nil {
				v.ParentIndex = l.Attrs().Index
			}
		}
		kc.VXLAN = v
	}
	k, err := routes.NewKernel(kc)
	if err != nil {
		nl.Close()
		return nil, err
	}
	kr := &KernelRoutes{k: k, nl: nl}
	a.closers = append(a.closers, kr.close)
	return kr, nil
}

// startWatches starts one watch per kind, each forwarding into the
// reconciler.
func (a *Agent) startWatches(ctx context.Context) error {
	forward := func(in input) bool {
		select {
		case a.rec.in <- in:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for _, k := range datastoreKinds {
		w, err := a.ds.Watch(ctx, k, datastore.WatchOptions{})
		if err != nil {
			return fmt.Errorf("watch %s: %w", k, err)
		}
		a.watchers = append(a.watchers, w.Stop)
		a.wg.Go(func() {
			for ev := range w.Events() {
				in := input{kind: k, typ: ev.Type, err: ev.Err}
				if ev.Object != nil {
					in.obj = Wrap(ev.Object)
				}
				if !forward(in) {
					return
				}
			}
		})
	}
	if a.objs != nil {
		for _, k := range objectKinds {
			if k == KindWorkloadEndpoint && a.cluster != nil {
				continue // the pods are the endpoints
			}
			w, err := a.objs.Watch(ctx, k)
			if err != nil {
				return fmt.Errorf("watch %s: %w", k, err)
			}
			a.watchers = append(a.watchers, w.Stop)
			a.wg.Go(func() {
				for ev := range w.Events() {
					if !forward(input{kind: k, typ: ev.Type, obj: ev.Object, err: ev.Err}) {
						return
					}
				}
			})
		}
	}
	if a.cluster != nil {
		return a.startClusterWatches(ctx, forward)
	}
	return nil
}

// watchedKinds returns the kinds startWatches watches.
func (a *Agent) watchedKinds() []resources.Kind {
	kinds := append([]resources.Kind(nil), datastoreKinds...)
	if a.objs != nil {
		for _, k := range objectKinds {
			if k != KindWorkloadEndpoint || a.cluster == nil {
				kinds = append(kinds, k)
			}
		}
	}
	if a.cluster != nil {
		kinds = append(kinds, kindPodEndpoint, kindNamespace, kindK8sPolicy)
	}
	return kinds
}

// loadLocalEndpoints gives the reconciler this node's registrations from
// the endpoints file (before it runs).
func (a *Agent) loadLocalEndpoints() error {
	if a.epFile == nil {
		return nil
	}
	m, err := a.epFile.load()
	if err != nil {
		return err
	}
	for _, w := range m {
		a.rec.applyWorkload(w, false, true)
	}
	return nil
}

// Config returns the effective configuration.
func (a *Agent) Config() Config { return a.cfg }

// Tables returns the userspace forwarding tables (nil with the kernel
// dataplane).
func (a *Agent) Tables() *datapath.Tables { return a.tables }

// Store returns the agent's view of the datastore.
func (a *Agent) Store() *Store { return a.store }

// Addr returns the address a server listens on: "health", "metrics" or
// "cni" (the socket path).
func (a *Agent) Addr(name string) string {
	if name == "cni" {
		return a.cfg.CNISocket
	}
	return a.addrs[name]
}

// Close shuts the agent down gracefully: it stops accepting endpoint
// requests (and waits for those in flight), stops the reconciler and the
// watches, the BGP speaker (gracefully: peers keep this node's routes for
// their restart time), the dataplane (the engine detaches; in kernel mode
// routes and nftables rules stay), the HTTP servers, the datastore client
// and the embedded etcd. It deregisters nothing: the Node, its blocks and
// its endpoints stay for the pods that still run.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		var errs []error
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if a.cni != nil {
			errs = append(errs, a.cni.Shutdown(ctx))
			os.Remove(a.cfg.CNISocket)
		}
		if a.cancel != nil {
			a.cancel()
		}
		for _, stop := range a.watchers {
			stop()
		}
		a.wg.Wait()
		if a.bgp != nil {
			errs = append(errs, a.bgp.Shutdown(true))
		}
		if a.neigh != nil {
			a.neigh.close()
		}
		for _, c := range a.closers {
			c()
		}
		if a.dp != nil {
			if err := a.dp.close(); err != nil {
				errs = append(errs, fmt.Errorf("dataplane: %w", err))
			}
		}
		for _, s := range a.servers {
			errs = append(errs, s.Shutdown(ctx))
		}
		if a.ds != nil {
			errs = append(errs, a.ds.Close())
		}
		if a.embedded != nil {
			errs = append(errs, a.embedded.Close())
		}
		if validNetns(a.ownNetns) {
			a.ownNetns.Close()
		}
		a.closeErr = errors.Join(errs...)
		if a.log != nil {
			a.log.Info("agent stopped", "err", a.closeErr)
		}
	})
	return a.closeErr
}
