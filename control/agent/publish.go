package agent

import (
	"context"
	"net/netip"
	"sort"
	"time"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/control/resources"
)

// flush publishes whatever is dirty and whose inputs have synced.
func (r *reconciler) flush(ctx context.Context) {
	if r.timerArmed {
		r.timer.Stop()
		r.timerArmed = false
	}
	if !(r.dirty.policy || r.dirty.routes || r.dirty.bgp) && len(r.goneAddrs) == 0 {
		r.publishStatus()
		return
	}
	start := time.Now()
	if r.dirty.policy && r.ready(policyInputs) {
		r.publishPolicy()
	}
	if r.dirty.routes && r.ready(routeInputs) && (len(r.learned) > 0 || time.Now().After(r.holdRoutes)) {
		r.programRoutes(ctx)
	}
	if r.dirty.bgp && r.ready(bgpInputs) {
		r.reconcileBGP(ctx)
	}
	r.deleteConntrack()
	r.reconciles++
	r.metrics.reconciles.Inc()
	r.metrics.reconcileDuration.Observe(time.Since(start).Seconds())
	r.publishStatus()
}

// deleteConntrack deletes the conntrack entries of the local endpoints'
// addresses removed since the last flush (after the policy and routes no
// longer name them), when the dataplane keeps kernel conntrack state. A
// failure is logged and counted, not retried: the entries then expire by
// the kernel's timeouts.
func (r *reconciler) deleteConntrack() {
	gone := r.goneAddrs
	r.goneAddrs = nil
	cc, ok := r.dataplane.(conntrackCleaner)
	if !ok || len(gone) == 0 {
		return
	}
	for _, v6 := range []bool{false, true} {
		var addrs []netip.Addr
		for _, a := range gone {
			if a.Is6() == v6 {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			continue
		}
		fam := "ipv4"
		if v6 {
			fam = "ipv6"
		}
		n, err := cc.deleteConntrack(v6, addrs)
		r.metrics.conntrackDeleted.WithLabelValues(fam).Add(float64(n))
		if err != nil {
			r.metrics.conntrackErrors.Inc()
			r.log.Warn("delete conntrack entries of removed endpoints; they expire by the kernel's timeouts",
				"addresses", addrs, "deleted", n, "err", err)
			continue
		}
		r.log.Debug("conntrack entries of removed endpoints deleted", "addresses", addrs, "entries", n)
	}
}

func (r *reconciler) publishPolicy() {
	compiled, st := r.compiler.Compile()
	if err := r.dataplane.setPolicy(compiled, r.aclState); err != nil {
		r.log.Error("publish policy", "err", err)
		r.metrics.policyErrors.Inc()
		return // stays dirty: retried on the next tick
	}
	r.dirty.policy = false
	r.generation = compiled.Generation
	r.compileDur = st.Duration
	r.lastPublish = time.Now()
	r.metrics.policyCompile.Observe(st.Duration.Seconds())
	r.metrics.policyGeneration.Set(float64(compiled.Generation))
	r.metrics.policyEndpoints.Set(float64(st.Endpoints))
	r.log.Debug("policy published", "generation", compiled.Generation, "endpoints", st.Endpoints,
		"policies", st.Policies, "classifiers", st.Classifiers, "built", st.Built, "took", st.Duration)
}

// aclState returns the whole policy state (for the kernel dataplane's
// nftables rendering).
func (r *reconciler) aclState() *acl.State {
	s := &acl.State{}
	for _, t := range r.tiers {
		s.Tiers = append(s.Tiers, t.ToACL())
	}
	for _, e := range r.epACL {
		s.Endpoints = append(s.Endpoints, e)
	}
	for _, p := range r.policies {
		s.Policies = append(s.Policies, p)
	}
	sort.Slice(s.Tiers, func(i, j int) bool { return s.Tiers[i].Name < s.Tiers[j].Name })
	sort.Slice(s.Endpoints, func(i, j int) bool { return s.Endpoints[i].ID() < s.Endpoints[j].ID() })
	sort.Slice(s.Policies, func(i, j int) bool { return s.Policies[i].ID() < s.Policies[j].ID() })
	return s
}

// routeInputs gathers what route programming needs.
func (r *reconciler) routeInputs() RouteInputs {
	in := RouteInputs{Node: r.node, BGP: r.bgp != nil}
	for _, p := range r.pools {
		in.Pools = append(in.Pools, p)
	}
	for _, n := range r.nodes {
		in.Nodes = append(in.Nodes, n)
	}
	sort.Slice(in.Pools, func(i, j int) bool { return in.Pools[i].Name < in.Pools[j].Name })
	sort.Slice(in.Nodes, func(i, j int) bool { return in.Nodes[i].Name < in.Nodes[j].Name })
	if n := r.nodes[r.node]; n != nil {
		in.NodeAddress, _ = nodeIPv4(n)
	}
	for _, w := range r.weps {
		if w.Spec.Node != r.node {
			continue
		}
		for _, a := range w.Addrs() {
			in.LocalEndpoints = append(in.LocalEndpoints, LocalEndpoint{Addr: a, Interface: w.Spec.InterfaceName,
				MAC: w.Spec.MAC, Key: KeyOfObject(w)})
		}
	}
	sort.Slice(in.LocalEndpoints, func(i, j int) bool { return in.LocalEndpoints[i].Addr.Less(in.LocalEndpoints[j].Addr) })
	for _, b := range r.blocks {
		br := BlockRoute{CIDR: b.Prefix(), Node: b.AffineNode()}
		if !br.CIDR.IsValid() {
			continue
		}
		for _, p := range r.pools {
			if pf := p.Prefix(); pf.IsValid() && pf.Overlaps(br.CIDR) && pf.Bits() <= br.CIDR.Bits() {
				br.Pool = p.Name
				br.IPIPMode, br.VXLANMode = p.Spec.IPIPMode, p.Spec.VXLANMode
			}
		}
		if n := r.nodes[br.Node]; n != nil {
			br.NodeAddress, _ = nodeIPv4(n)
			if a, err := netip.ParseAddr(n.Spec.IPv4VXLANTunnelAddr); err == nil {
				br.VTEP = a
			}
			br.VTEPMAC = n.Spec.VXLANTunnelMACAddr
		}
		in.Blocks = append(in.Blocks, br)
	}
	sort.Slice(in.Blocks, func(i, j int) bool { return in.Blocks[i].CIDR.String() < in.Blocks[j].CIDR.String() })
	for _, lr := range r.learned {
		in.Learned = append(in.Learned, lr)
	}
	sort.Slice(in.Learned, func(i, j int) bool { return in.Learned[i].Prefix.String() < in.Learned[j].Prefix.String() })
	return in
}

// programRoutes programs the routes; with a dataplane serving pods'
// interfaces as ports (afxdp), a new local endpoint's interface is attached
// first and a gone endpoint's interface detached after its route was
// removed.
func (r *reconciler) programRoutes(ctx context.Context) {
	r.steerPools()
	pm, ports := r.dataplane.(portManager)
	var want map[string]bool
	if ports {
		want = r.localInterfaces()
		r.attachPorts(ctx, pm, want)
	}
	st, err := r.routes.Apply(ctx, r.routeInputs())
	if ports {
		r.detachPorts(pm, want)
		// An interface that failed to attach is retried next round.
		st.Pending += len(r.portErrs)
	}
	r.routeStats = st
	if err != nil {
		if msg := err.Error(); msg != r.routeErr {
			r.log.Error("program routes", "err", err)
			r.routeErr = msg
		}
		return
	}
	r.routeErr = ""
	r.dirty.routes = st.Pending > 0
	r.metrics.fibRoutes.WithLabelValues("ipv4").Set(float64(st.IPv4))
	r.metrics.fibRoutes.WithLabelValues("ipv6").Set(float64(st.IPv6))
}

func (r *reconciler) reconcileBGP(ctx context.Context) {
	if r.bgp == nil {
		r.dirty.bgp = false
		return
	}
	in := BGPInputs{Node: r.node}
	for _, n := range r.nodes {
		in.Nodes = append(in.Nodes, n)
	}
	for _, c := range r.bgpConfigs {
		in.Configs = append(in.Configs, c)
	}
	for _, p := range r.bgpPeers {
		in.Peers = append(in.Peers, p)
	}
	for _, a := range r.affinities {
		in.Affinities = append(in.Affinities, a)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.bgp.Reconcile(rctx, in); err != nil {
		if msg := err.Error(); msg != r.bgpErr {
			r.log.Error("reconcile BGP", "err", err)
			r.bgpErr = msg
		}
		return
	}
	r.bgpErr = ""
	r.dirty.bgp = false
}

// publishStatus stores a fresh status for readers on other goroutines.
func (r *reconciler) publishStatus() {
	st := &Status{Node: r.node, Time: time.Now().UTC(), Reconciles: r.reconciles}
	ds := &st.Datastore
	ds.Synced = true
	for _, k := range r.kinds {
		ks := KindStatus{Kind: string(k), Synced: r.synced[k], Error: r.watchErr[k]}
		ds.Synced = ds.Synced && ks.Synced
		ds.Kinds = append(ds.Kinds, ks)
	}
	var inUse, capacity int
	for _, b := range r.blocks {
		if b.AffineNode() != r.node {
			continue
		}
		n := len(b.Spec.Allocations) - len(b.Spec.Unallocated)
		st.Blocks = append(st.Blocks, BlockStatus{CIDR: b.Spec.CIDR, InUse: n, Capacity: len(b.Spec.Allocations)})
		inUse += n
		capacity += len(b.Spec.Allocations)
	}
	sort.Slice(st.Blocks, func(i, j int) bool { return st.Blocks[i].CIDR < st.Blocks[j].CIDR })
	r.metrics.ipamBlocks.Set(float64(len(st.Blocks)))
	r.metrics.ipamInUse.Set(float64(inUse))
	r.metrics.ipamCapacity.Set(float64(capacity))
	for _, w := range r.weps {
		st.Endpoints.Total++
		if w.Spec.Node == r.node {
			st.Endpoints.Local++
			st.Endpoints.List = append(st.Endpoints.List, w)
		}
	}
	sort.Slice(st.Endpoints.List, func(i, j int) bool {
		a, b := st.Endpoints.List[i], st.Endpoints.List[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	st.Policy = PolicyStatus{Generation: r.generation, Policies: len(r.policies), Tiers: len(r.tiers) + 1,
		CompileTime: r.compileDur.String(), Pending: r.dirty.policy}
	for k, e := range r.objErrs {
		st.Policy.Errors = append(st.Policy.Errors, k.String()+": "+e)
	}
	sort.Strings(st.Policy.Errors)
	st.Routes = RouteStatus{IPv4: r.routeStats.IPv4, IPv6: r.routeStats.IPv6, Pending: r.routeStats.Pending,
		Learned: len(r.learned), Error: r.routeErr}
	st.BGPError = r.bgpErr
	r.status.Store(st)
	r.metrics.datastoreReady.Set(boolFloat(ds.Synced))
}

// LearnedRoute is a route learned from a BGP peer.
type LearnedRoute struct {
	Prefix    netip.Prefix
	NextHop   netip.Addr
	Peer      netip.Addr
	Withdrawn bool
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// nodeIPv4 returns a node's IPv4 address with prefix length: spec.bgp's,
// else the first IPv4 entry of spec.addresses.
func nodeIPv4(n *resources.Node) (netip.Prefix, bool) {
	parse := func(s string) (netip.Prefix, bool) {
		if p, err := netip.ParsePrefix(s); err == nil {
			return p, p.Addr().Is4()
		}
		if a, err := netip.ParseAddr(s); err == nil {
			return netip.PrefixFrom(a, a.BitLen()), a.Is4()
		}
		return netip.Prefix{}, false
	}
	if n.Spec.BGP != nil && n.Spec.BGP.IPv4Address != "" {
		if p, ok := parse(n.Spec.BGP.IPv4Address); ok {
			return p, true
		}
	}
	for _, a := range n.Spec.Addresses {
		if p, ok := parse(a.Address); ok {
			return p, true
		}
	}
	return netip.Prefix{}, false
}
