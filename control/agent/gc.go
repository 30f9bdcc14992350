package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tabbynet/tabby/control/ipam"
)

// IPAM garbage collection. An address leaks when a CNI DEL never reached
// the agent (the agent was down, the runtime lost the container) or an ADD
// failed half-way in a process that died before it could release. Every
// Config.IPAMGCInterval the agent releases this node's allocations whose
// handle is not live, empty blocks affine to it and affinities left by
// interrupted claims (ipam.GarbageCollect, this node only). Live handles are
// the container IDs of this node's registered workload endpoints (the
// datastore's WorkloadEndpoints, or the endpoints file in Kubernetes mode)
// and the node's VXLAN tunnel address handle. Allocations, handles and
// affinities younger than Config.IPAMGCGracePeriod are spared, so that an
// ADD between its assignment and its registration is never taken for a
// leak; and a round whose list of live handles cannot be read releases
// nothing.

// CollectGarbage runs one IPAM garbage collection round for this node with
// the given grace period and returns what it released.
func (a *Agent) CollectGarbage(ctx context.Context, grace time.Duration) (ipam.GCStats, error) {
	live, err := a.liveHandles(ctx)
	if err != nil {
		return ipam.GCStats{}, fmt.Errorf("ipam gc: live handles: %w", err)
	}
	st, err := a.ipam.GarbageCollect(ctx, ipam.GCOptions{
		Live:        func(h string) bool { return live[h] },
		GracePeriod: grace,
	})
	if a.metrics != nil {
		a.metrics.gcReleased.WithLabelValues("addresses").Add(float64(st.Addresses))
		a.metrics.gcReleased.WithLabelValues("blocks").Add(float64(st.Blocks))
		a.metrics.gcReleased.WithLabelValues("affinities").Add(float64(st.Affinities))
		if err != nil {
			a.metrics.gcErrors.Inc()
		}
	}
	if err != nil {
		return st, fmt.Errorf("ipam gc: %w", err)
	}
	return st, nil
}

// liveHandles returns the IPAM handles this node's allocations may hold.
func (a *Agent) liveHandles(ctx context.Context) (map[string]bool, error) {
	live := map[string]bool{vxlanHandle(a.cfg.NodeName): true}
	if a.epFile != nil {
		a.epFile.mu.Lock()
		m, err := a.epFile.load()
		a.epFile.mu.Unlock()
		if err != nil {
			return nil, err
		}
		for id := range m {
			live[id] = true
		}
		return live, nil
	}
	if a.objs == nil {
		return nil, errors.New("no store of workload endpoints")
	}
	objs, err := a.objs.List(ctx, KindWorkloadEndpoint)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if w, ok := o.(*WorkloadEndpoint); ok && w.Spec.ContainerID != "" {
			// Every node's: a handle is one container's, whichever
			// node registered it.
			live[w.Spec.ContainerID] = true
		}
	}
	return live, nil
}

// gcLoop runs CollectGarbage every Config.IPAMGCInterval until ctx ends.
func (a *Agent) gcLoop(ctx context.Context) {
	every, grace := a.cfg.IPAMGCInterval, a.cfg.IPAMGCGracePeriod
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !a.rec.everSyncedAll.Load() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, every)
		st, err := a.CollectGarbage(rctx, grace)
		cancel()
		switch {
		case err != nil:
			a.log.Warn("IPAM garbage collection failed; retrying at the next interval", "err", err,
				"interval", every)
		case st != (ipam.GCStats{}):
			a.log.Info("IPAM garbage collected", "addresses", st.Addresses, "blocks", st.Blocks,
				"affinities", st.Affinities, "grace_period", grace)
		}
	}
}
