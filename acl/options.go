package acl

import "log/slog"

// FailsafePort is a protocol and port range that host endpoints always
// accept (inbound: destination port of packets to the host; outbound:
// destination port of packets from it), before any policy, as Calico's
// failsafe ports do, so that a policy mistake cannot cut off ssh, BGP, etcd
// or the API server.
type FailsafePort struct {
	Protocol Protocol
	Min, Max uint16
}

// Default failsafe ports: ssh 22, BGP 179, etcd 2379-2380, Kubernetes API
// 6443 inbound; BGP, etcd and the API outbound.
var (
	DefaultFailsafeInbound = []FailsafePort{
		{ProtoTCP, 22, 22}, {ProtoTCP, 179, 179}, {ProtoTCP, 2379, 2380}, {ProtoTCP, 6443, 6443},
	}
	DefaultFailsafeOutbound = []FailsafePort{
		{ProtoTCP, 179, 179}, {ProtoTCP, 2379, 2380}, {ProtoTCP, 6443, 6443},
	}
)

// Options tune compilation.
type Options struct {
	// Node selects the endpoints that get classifiers (Endpoint.Node ==
	// Node); empty means every endpoint. Other endpoints still count as
	// remote peers for selectors.
	Node string
	// FailsafeInbound and FailsafeOutbound replace the default failsafe
	// ports of host endpoints; NoFailsafe disables them.
	FailsafeInbound  []FailsafePort
	FailsafeOutbound []FailsafePort
	NoFailsafe       bool
	// Logger receives compile summaries (nil: discarded).
	Logger *slog.Logger
}

func (o *Options) failsafe(d Direction) []FailsafePort {
	if o.NoFailsafe {
		return nil
	}
	if d == Ingress {
		if o.FailsafeInbound != nil {
			return o.FailsafeInbound
		}
		return DefaultFailsafeInbound
	}
	if o.FailsafeOutbound != nil {
		return o.FailsafeOutbound
	}
	return DefaultFailsafeOutbound
}

func (o *Options) local(e *Endpoint) bool { return o.Node == "" || e.Node == o.Node }
