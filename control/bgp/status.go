package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// PeerStatus is the state of one session.
type PeerStatus struct {
	Address netip.Addr
	Port    uint16
	ASN     uint32
	// Source and Name are the peer's origin, as configured.
	Source PeerSource
	Name   string
	// State is the FSM state: Idle, Connect, Active, OpenSent, OpenConfirm
	// or Established.
	State       string
	Established bool
	// Since is when the session was established (zero when it is not).
	Since time.Time
	// Uptime is how long it has been established.
	Uptime time.Duration
	// Received, Accepted and Advertised count prefixes (all families).
	Received, Accepted, Advertised uint64
	// LastError is the reason of the last disconnection, if any.
	LastError string
}

// Status is the speaker's state for `tabby status` and metrics.
type Status struct {
	Running    bool
	ASN        uint32
	RouterID   netip.Addr
	ListenPort uint16
	// Peers are sorted by address.
	Peers []PeerStatus
	// Advertised is the number of prefixes this node originates; Learned
	// the number of learned routes.
	Advertised, Learned int
}

// Status reports the speaker's sessions and route counts.
func (s *Speaker) Status(ctx context.Context) (Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Status{}, ErrClosed
	}
	st := Status{Learned: s.learned.count()}
	if s.srv == nil {
		return st, nil
	}
	st.Running, st.ASN, st.RouterID, st.ListenPort = true, s.global.ASN, s.global.RouterID, s.global.ListenPort
	st.Advertised = len(s.paths)
	now := time.Now()
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		var ps PeerStatus
		if p.Conf != nil {
			ps.Address, _ = netip.ParseAddr(p.Conf.NeighborAddress)
			ps.ASN = p.Conf.PeerAsn
		}
		if cfg, ok := s.peers[ps.Address]; ok {
			ps.Port, ps.Source, ps.Name = cfg.Port, cfg.Source, cfg.Name
			if ps.Port == 0 {
				ps.Port = DefaultPort
			}
		}
		if p.State != nil {
			ps.State = sessionStateName(p.State.SessionState)
			ps.Established = p.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED
			ps.LastError = p.State.DisconnectMessage
		}
		if ps.Established && p.Timers != nil && p.Timers.State != nil && p.Timers.State.Uptime != nil {
			ps.Since = p.Timers.State.Uptime.AsTime()
			ps.Uptime = now.Sub(ps.Since)
		}
		for _, af := range p.AfiSafis {
			if af.State != nil {
				ps.Received += af.State.Received
				ps.Accepted += af.State.Accepted
				ps.Advertised += af.State.Advertised
			}
		}
		st.Peers = append(st.Peers, ps)
	})
	if err != nil {
		return st, fmt.Errorf("list peers: %w", err)
	}
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return st, nil
}

// Learned returns the learned routes, sorted by prefix: the state that the
// RouteEvents delivered so far, and those still pending, add up to.
func (s *Speaker) Learned() []Route { return s.learned.snapshot() }

func sessionStateName(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_SESSION_STATE_IDLE:
		return "Idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "Connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "Active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "OpenSent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "Established"
	}
	return "Unknown"
}
