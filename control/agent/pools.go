package agent

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/tabbynet/tabby/control/resources"
)

// poolSteerer is a dataplane that must learn the IP pools at run time:
// the afxdp engine's steering program redirects only pod CIDRs to the
// dataplane, and the dataplane decapsulates IP-in-IP and VXLAN only while
// a pool uses them.
type poolSteerer interface {
	setPools(pools []*resources.IPPool) (changed bool, err error)
}

// poolSteering is what a set of pools asks of the dataplane.
type poolSteering struct {
	cidrs       []netip.Prefix
	ipip, vxlan bool
}

func steeringOf(pools []*resources.IPPool) poolSteering {
	var s poolSteering
	for _, p := range pools {
		if pf := p.Prefix(); pf.IsValid() {
			s.cidrs = append(s.cidrs, pf.Masked())
			s.ipip = s.ipip || p.Spec.IPIPMode.Enabled()
			s.vxlan = s.vxlan || p.Spec.VXLANMode.Enabled()
		}
	}
	slices.SortFunc(s.cidrs, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	s.cidrs = slices.Compact(s.cidrs)
	return s
}

func (s poolSteering) equal(o poolSteering) bool {
	return s.ipip == o.ipip && s.vxlan == o.vxlan && slices.Equal(s.cidrs, o.cidrs)
}

// setPools steers the pools' CIDRs to the engine and turns decapsulation
// on or off for their encapsulations. A pool created after the start is
// served without restarting the agent.
func (d *afxdpDataplane) setPools(pools []*resources.IPPool) (bool, error) {
	want := steeringOf(pools)
	if want.equal(d.steering) {
		return false, nil
	}
	if err := d.eng.SetPodCIDRs(want.cidrs); err != nil {
		return false, err
	}
	node := d.tables.Load().Node
	node.DecapIPIP, node.DecapVXLAN = want.ipip, want.vxlan
	if err := d.tables.SetNode(node); err != nil {
		return false, fmt.Errorf("dataplane: decapsulation for the pools: %w", err)
	}
	d.steering = want
	return true, nil
}

// steerPools hands the current pools to a dataplane that steers them.
func (r *reconciler) steerPools() {
	ps, ok := r.dataplane.(poolSteerer)
	if !ok {
		return
	}
	pools := make([]*resources.IPPool, 0, len(r.pools))
	for _, p := range r.pools {
		pools = append(pools, p)
	}
	changed, err := ps.setPools(pools)
	if err != nil {
		r.log.Error("steer IP pools to the dataplane", "err", err)
		return
	}
	if changed {
		r.log.Info("IP pools steered to the dataplane", "pools", len(pools), "cidrs", steeringOf(pools).cidrs)
	}
}
