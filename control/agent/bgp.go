package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/tabbynet/tabby/control/bgp"
	"github.com/tabbynet/tabby/control/resources"
)

// BGPInputs are the resources the BGP speaker's desired state is computed
// from.
type BGPInputs struct {
	Node       string
	Nodes      []*resources.Node
	Configs    []*resources.BGPConfiguration
	Peers      []*resources.BGPPeer
	Affinities []*resources.BlockAffinity
}

// bgpSpeaker is what the reconciler drives: Reconcile from the reconciler
// goroutine, Status from any.
type bgpSpeaker interface {
	Reconcile(ctx context.Context, in BGPInputs) error
	Status(ctx context.Context) (*BGPStatus, error)
	// Shutdown stops the speaker; graceful keeps the peers' routes for
	// their graceful-restart time (a restart without flap).
	Shutdown(graceful bool) error
}

// gobgpSpeaker runs control/bgp's GoBGP speaker.
type gobgpSpeaker struct {
	s     *bgp.Speaker
	noBGP bool // the node has no BGP address: nothing runs
}

// newGoBGPSpeaker returns a speaker whose learned routes go to onRoutes.
func newGoBGPSpeaker(log *slog.Logger, onRoutes func([]LearnedRoute)) *gobgpSpeaker {
	s := bgp.New(bgp.Options{Logger: log, OnRoutes: func(evs []bgp.RouteEvent) {
		out := make([]LearnedRoute, len(evs))
		for i, ev := range evs {
			out[i] = LearnedRoute{Prefix: ev.Prefix, NextHop: ev.NextHop, Peer: ev.Peer, Withdrawn: ev.Withdrawn}
		}
		onRoutes(out)
	}})
	return &gobgpSpeaker{s: s}
}

func (g *gobgpSpeaker) Reconcile(ctx context.Context, in BGPInputs) error {
	d, err := bgp.Compute(bgp.Resources{Node: in.Node, Nodes: in.Nodes, Configs: in.Configs, Peers: in.Peers,
		Affinities: in.Affinities})
	if errors.Is(err, bgp.ErrNoBGP) {
		g.noBGP = true
		return err
	}
	if err != nil {
		return err
	}
	g.noBGP = false
	return g.s.Reconcile(ctx, d)
}

func (g *gobgpSpeaker) Status(ctx context.Context) (*BGPStatus, error) {
	st, err := g.s.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := &BGPStatus{Running: st.Running, ASN: st.ASN, Advertised: st.Advertised, Learned: st.Learned}
	if st.RouterID.IsValid() {
		out.RouterID = st.RouterID.String()
	}
	for _, p := range st.Peers {
		ps := PeerStatus{Address: p.Address.String(), ASN: p.ASN, Name: p.Name, Source: p.Source.String(),
			State: p.State, Established: p.Established, Received: p.Received, Advertised: p.Advertised,
			LastError: p.LastError}
		if !p.Since.IsZero() {
			ps.Since = p.Since.UTC().Format(time.RFC3339)
		}
		out.Peers = append(out.Peers, ps)
	}
	return out, nil
}

func (g *gobgpSpeaker) Shutdown(graceful bool) error { return g.s.Shutdown(graceful) }
