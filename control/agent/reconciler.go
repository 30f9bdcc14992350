package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// kindLearnedRoutes is the pseudo-kind of BGP learned-route inputs.
const kindLearnedRoutes resources.Kind = "bgp:learned"

// watchedKinds are the kinds the reconciler watches: from the datastore and
// from the object store.
var (
	datastoreKinds = []resources.Kind{resources.KindNode, resources.KindIPPool, resources.KindIPAMBlock,
		resources.KindBlockAffinity, resources.KindBGPConfiguration, resources.KindBGPPeer, resources.KindHostEndpoint}
	objectKinds = []resources.Kind{KindTier, KindNetworkPolicy, KindGlobalNetworkPolicy, KindWorkloadEndpoint,
		KindAgentConfiguration}
)

// The inputs each output needs synced (listed at least once) before it is
// first published: publishing from a partial view could allow traffic a
// policy not yet seen denies.
var (
	policyInputs = []resources.Kind{KindTier, KindNetworkPolicy, KindGlobalNetworkPolicy, KindWorkloadEndpoint,
		resources.KindHostEndpoint, kindPodEndpoint, kindNamespace, kindK8sPolicy}
	routeInputs = []resources.Kind{resources.KindNode, resources.KindIPPool, resources.KindIPAMBlock, KindWorkloadEndpoint,
		kindPodEndpoint}
	bgpInputs = []resources.Kind{resources.KindNode, resources.KindBGPConfiguration, resources.KindBGPPeer,
		resources.KindBlockAffinity}
)

// input is one watch event (or a batch of learned routes) for the
// reconciler.
type input struct {
	kind    resources.Kind
	typ     datastore.EventType
	obj     Object
	err     error
	learned []LearnedRoute
}

// call runs fn on the reconciler goroutine, publishes at once and reports
// fn's error.
type call struct {
	fn   func(r *reconciler) error
	done chan error
}

// reconcilerDeps are what the reconciler publishes to.
type reconcilerDeps struct {
	node      string
	log       *slog.Logger
	debounce  time.Duration
	dataplane dataplane
	routes    RouteProgrammer
	bgp       bgpSpeaker // nil: BGP off
	metrics   *metrics
	config    *liveConfig
	// holdRoutes delays the first route programming until BGP delivered
	// routes or this time passed (kernel mode with BGP: a restarted agent
	// would otherwise withdraw the routes the kernel still has, which its
	// peers are about to send again).
	holdRoutes time.Time
	// kinds are the inputs watched; each reports Synced.
	kinds []resources.Kind
}

// reconciler owns the desired state. Everything below the channels is
// touched only by the goroutine running run; other goroutines talk to it
// through in and calls and read what it publishes (status, heartbeat).
type reconciler struct {
	reconcilerDeps
	in    chan input
	calls chan call

	// heartbeat is the UnixNano time of the loop's last iteration.
	heartbeat atomic.Int64
	status    atomic.Pointer[Status]
	// everSyncedAll is set once every watch has synced (the endpoint API
	// waits for it).
	everSyncedAll atomic.Bool

	nodes      map[string]*resources.Node
	pools      map[string]*resources.IPPool
	blocks     map[string]*resources.IPAMBlock
	affinities map[string]*resources.BlockAffinity
	bgpConfigs map[string]*resources.BGPConfiguration
	bgpPeers   map[string]*resources.BGPPeer
	heps       map[string]*resources.HostEndpoint
	tiers      map[string]*Tier
	policies   map[resources.Key]acl.Policy // converted, valid
	weps       map[resources.Key]*WorkloadEndpoint
	wepRev     map[resources.Key]int64 // last applied revision (see applyWorkload)
	learned    map[netip.Prefix]LearnedRoute

	compiler   *acl.Compiler
	epACL      map[string]acl.Endpoint // by acl ID, as last given to the compiler
	objErrs    map[resources.Key]string
	pending    map[resources.Key]acl.Policy // rejected for a missing tier
	generation uint64
	compileDur time.Duration

	dirty      struct{ policy, routes, bgp bool }
	synced     map[resources.Kind]bool
	everSynced map[resources.Kind]bool
	watchErr   map[resources.Kind]string
	timer      *time.Timer
	timerArmed bool
	routeStats RouteStats
	routeErr   string
	// portErrs are the local endpoints' interfaces the dataplane failed
	// to attach, with the error (afxdp; retried every round).
	portErrs map[string]string
	bgpErr   string
	// goneAddrs are addresses of local endpoints removed since the last
	// flush, whose conntrack entries the dataplane deletes (see
	// conntrackCleaner).
	goneAddrs   []netip.Addr
	reconciles  uint64
	lastPublish time.Time
}

func newReconciler(d reconcilerDeps) *reconciler {
	r := &reconciler{
		reconcilerDeps: d,
		in:             make(chan input, 256),
		calls:          make(chan call),
		nodes:          map[string]*resources.Node{},
		pools:          map[string]*resources.IPPool{},
		blocks:         map[string]*resources.IPAMBlock{},
		affinities:     map[string]*resources.BlockAffinity{},
		bgpConfigs:     map[string]*resources.BGPConfiguration{},
		bgpPeers:       map[string]*resources.BGPPeer{},
		heps:           map[string]*resources.HostEndpoint{},
		tiers:          map[string]*Tier{},
		policies:       map[resources.Key]acl.Policy{},
		weps:           map[resources.Key]*WorkloadEndpoint{},
		wepRev:         map[resources.Key]int64{},
		learned:        map[netip.Prefix]LearnedRoute{},
		compiler:       acl.NewCompiler(acl.Options{Node: d.node}),
		epACL:          map[string]acl.Endpoint{},
		objErrs:        map[resources.Key]string{},
		pending:        map[resources.Key]acl.Policy{},
		synced:         map[resources.Kind]bool{},
		everSynced:     map[resources.Kind]bool{},
		watchErr:       map[resources.Kind]string{},
		portErrs:       map[string]string{},
	}
	r.heartbeat.Store(time.Now().UnixNano())
	r.publishStatus()
	return r
}

// run is the reconciler loop; it returns when ctx is done.
func (r *reconciler) run(ctx context.Context) {
	r.timer = time.NewTimer(time.Hour)
	r.timer.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		r.heartbeat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			r.timer.Stop()
			return
		case in := <-r.in:
			r.apply(in)
			// Drain what is queued before deciding to publish.
			for n := 0; n < 1000; n++ {
				select {
				case in := <-r.in:
					r.apply(in)
					continue
				default:
				}
				break
			}
			r.arm()
		case c := <-r.calls:
			err := c.fn(r)
			r.flush(ctx)
			c.done <- err
		case <-r.timer.C:
			r.timerArmed = false
			r.flush(ctx)
		case <-tick.C:
			if r.dirty.policy || r.dirty.routes || r.dirty.bgp {
				r.arm() // retry what failed
			}
		}
	}
}

// do runs fn on the reconciler goroutine and publishes before returning.
func (r *reconciler) do(ctx context.Context, fn func(r *reconciler) error) error {
	c := call{fn: fn, done: make(chan error, 1)}
	select {
	case r.calls <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *reconciler) arm() {
	if r.timerArmed || !(r.dirty.policy || r.dirty.routes || r.dirty.bgp) {
		r.publishStatus()
		return
	}
	r.timerArmed = true
	r.timer.Reset(r.debounce)
	r.publishStatus()
}

// apply records one input in the desired state and marks what it dirties.
func (r *reconciler) apply(in input) {
	switch in.typ {
	case datastore.Synced:
		r.synced[in.kind], r.everSynced[in.kind] = true, true
		delete(r.watchErr, in.kind)
		r.metrics.setSynced(in.kind, true)
		all := true
		for _, k := range r.kinds {
			all = all && r.everSynced[k]
		}
		if all && !r.everSyncedAll.Load() {
			r.log.Info("datastore synced")
			r.everSyncedAll.Store(true)
			r.dirty.policy, r.dirty.routes, r.dirty.bgp = true, true, true
		}
		return
	case datastore.Error:
		if isClusterKind(in.kind) && r.everSynced[in.kind] {
			// Informers relist by themselves and report no second
			// Synced; the datastore's own watches tell whether the
			// apiserver is reachable.
			r.log.Warn("cluster watch broken; the informer relists", "kind", in.kind, "err", in.err)
			if in.err != nil {
				r.watchErr[in.kind] = in.err.Error()
			}
			r.metrics.watchErrors.WithLabelValues(string(in.kind)).Inc()
			return
		}
		if r.synced[in.kind] {
			r.log.Warn("datastore watch broken; keeping the last state", "kind", in.kind, "err", in.err)
		}
		r.synced[in.kind] = false
		if in.err != nil {
			r.watchErr[in.kind] = in.err.Error()
		}
		r.metrics.setSynced(in.kind, false)
		r.metrics.watchErrors.WithLabelValues(string(in.kind)).Inc()
		return
	}
	if isClusterKind(in.kind) {
		delete(r.watchErr, in.kind)
	}
	if in.kind == kindLearnedRoutes {
		for _, lr := range in.learned {
			if lr.Withdrawn {
				delete(r.learned, lr.Prefix)
			} else {
				r.learned[lr.Prefix] = lr
			}
		}
		r.dirty.routes = true
		return
	}
	del := in.typ == datastore.Deleted
	key := KeyOfObject(in.obj)
	switch o := in.obj.(type) {
	case ResourceObject:
		r.applyResource(o.Resource, key, del)
	case *Tier:
		r.applyTier(o, del)
	case *NetworkPolicy:
		r.applyPolicy(key, del, o.ToACL)
	case *GlobalNetworkPolicy:
		r.applyPolicy(key, del, o.ToACL)
	case *WorkloadEndpoint:
		if in.kind == kindPodEndpoint {
			r.mergeLocal(o)
		}
		r.applyWorkload(o, del, false)
	case *k8sObject:
		r.applyK8s(o, del)
	case *AgentConfiguration:
		if o.Name == "default" || o.Name == NodeConfigName(r.node) {
			if del {
				o = nil
			}
			r.config.update(key.Name, o, r.log)
		}
	}
}

func setOrDelete[T any](m map[string]T, name string, v T, del bool) {
	if del {
		delete(m, name)
	} else {
		m[name] = v
	}
}

func (r *reconciler) applyResource(obj resources.Resource, key resources.Key, del bool) {
	switch o := obj.(type) {
	case *resources.Node:
		setOrDelete(r.nodes, o.Name, o, del)
		r.dirty.routes, r.dirty.bgp = true, true
	case *resources.IPPool:
		setOrDelete(r.pools, o.Name, o, del)
		r.dirty.routes = true
	case *resources.IPAMBlock:
		setOrDelete(r.blocks, o.Name, o, del)
		r.dirty.routes = true
	case *resources.BlockAffinity:
		setOrDelete(r.affinities, o.Name, o, del)
		r.dirty.bgp = true
	case *resources.BGPConfiguration:
		setOrDelete(r.bgpConfigs, o.Name, o, del)
		r.dirty.bgp = true
	case *resources.BGPPeer:
		setOrDelete(r.bgpPeers, o.Name, o, del)
		r.dirty.bgp = true
	case *resources.HostEndpoint:
		setOrDelete(r.heps, o.Name, o, del)
		if del {
			r.deleteEndpoint("host/" + o.Name)
		} else {
			r.setEndpoint(key, hostEndpointACL(o))
		}
	}
}

func (r *reconciler) applyTier(t *Tier, del bool) {
	key := KeyOfObject(t)
	if del {
		delete(r.tiers, t.Name)
		r.compiler.DeleteTier(t.Name)
	} else {
		r.tiers[t.Name] = t
		if err := r.compiler.SetTier(t.ToACL()); err != nil {
			r.objErr(key, err)
			return
		}
	}
	delete(r.objErrs, key)
	r.dirty.policy = true
	// Policies that waited for this tier.
	for k, p := range r.pending {
		if p.Tier == t.Name && !del {
			delete(r.pending, k)
			r.setPolicy(k, p)
		}
	}
}

func (r *reconciler) applyPolicy(key resources.Key, del bool, convert func() (acl.Policy, error)) {
	if del {
		// The compiler knows the policy by its converted ID, which is not
		// always the key's (a Kubernetes NetworkPolicy "web" is
		// "knp.default.web"); only a policy in r.policies was given to it.
		if p, ok := r.policies[key]; ok {
			r.compiler.DeletePolicy(p.ID())
		}
		delete(r.policies, key)
		delete(r.pending, key)
		delete(r.objErrs, key)
		r.dirty.policy = true
		return
	}
	p, err := convert()
	if err != nil {
		r.objErr(key, err)
		return
	}
	r.setPolicy(key, p)
}

func (r *reconciler) setPolicy(key resources.Key, p acl.Policy) {
	if old, ok := r.policies[key]; ok && reflect.DeepEqual(old, p) {
		return
	}
	if err := r.compiler.SetPolicy(p); err != nil {
		var ve *acl.ValidationError
		if errors.As(err, &ve) && ve.Field == "tier" {
			r.pending[key] = p
		}
		r.objErr(key, err)
		return
	}
	delete(r.objErrs, key)
	r.policies[key] = p
	r.dirty.policy = true
}

// applyWorkload records a workload endpoint from the watch or, with api
// set, from the endpoint API. The two paths race: a watch event can arrive
// after the API already applied a newer version or a deletion, so every
// endpoint's last applied revision is kept (a tombstone for API deletions,
// dropped when the watch reports the deletion) and older events are
// ignored.
func (r *reconciler) applyWorkload(w *WorkloadEndpoint, del, api bool) {
	key := KeyOfObject(w)
	if rev, err := strconv.ParseInt(w.ResourceVersion, 10, 64); err == nil && rev > 0 {
		// A deletion may carry the revision of the version it deletes,
		// which may be the one last applied.
		if last, ok := r.wepRev[key]; ok && (rev < last || rev == last && !del) {
			return
		}
		if del && !api {
			// The watch reports nothing older after this.
			delete(r.wepRev, key)
		} else {
			r.wepRev[key] = rev
		}
	}
	if del {
		cur, ok := r.weps[key]
		if !ok {
			return
		}
		r.endpointAddrsGone(cur, nil)
		delete(r.weps, key)
		delete(r.objErrs, key)
		r.deleteEndpoint(key.Namespace + "/" + key.Name)
		r.dirty.routes = true
		return
	}
	if cur, ok := r.weps[key]; ok && reflect.DeepEqual(cur.Spec, w.Spec) && reflect.DeepEqual(cur.Labels, w.Labels) {
		r.weps[key] = w
		return
	}
	if cur, ok := r.weps[key]; ok {
		r.endpointAddrsGone(cur, w)
	}
	r.weps[key] = w
	r.setEndpoint(key, w.ToACL())
	if w.Spec.Node == r.node {
		r.dirty.routes = true
	}
}

// endpointAddrsGone records the addresses of old, a local endpoint, that
// its replacement w (nil: deleted) does not keep on this node.
func (r *reconciler) endpointAddrsGone(old, w *WorkloadEndpoint) {
	if old.Spec.Node != r.node {
		return
	}
	var kept []netip.Addr
	if w != nil && w.Spec.Node == r.node {
		kept = w.Addrs()
	}
	for _, a := range old.Addrs() {
		if !slices.Contains(kept, a) {
			r.goneAddrs = append(r.goneAddrs, a)
		}
	}
}

func (r *reconciler) setEndpoint(key resources.Key, e acl.Endpoint) {
	if old, ok := r.epACL[e.ID()]; ok && reflect.DeepEqual(old, e) {
		return
	}
	if err := r.compiler.SetEndpoint(e); err != nil {
		r.objErr(key, err)
		return
	}
	delete(r.objErrs, key)
	r.epACL[e.ID()] = e
	r.dirty.policy = true
}

func (r *reconciler) deleteEndpoint(id string) {
	if _, ok := r.epACL[id]; !ok {
		return
	}
	delete(r.epACL, id)
	r.compiler.DeleteEndpoint(id)
	r.dirty.policy = true
}

func (r *reconciler) objErr(key resources.Key, err error) {
	msg := err.Error()
	if r.objErrs[key] != msg {
		r.log.Warn("object rejected; its previous version stays in force", "object", key.String(), "err", err)
		r.metrics.objectErrors.WithLabelValues(string(key.Kind)).Inc()
	}
	r.objErrs[key] = msg
}

// ready reports whether every watched kind of kinds has synced once.
func (r *reconciler) ready(kinds []resources.Kind) bool {
	for _, k := range kinds {
		if !r.everSynced[k] && slices.Contains(r.kinds, k) {
			return false
		}
	}
	return true
}

// errNotReady is returned by the endpoint API before the first sync.
var errNotReady = errors.New("agent not ready: datastore not synced yet")
