package nstest

import (
	"net"
	"testing"
)

// Rig is a dataplane namespace and a peer namespace, joined by the veth
// pairs Link adds: the layout of the packet I/O port tests.
type Rig struct {
	DP, Peer *NS
	sfx      string
}

// NewRig skips the test unless it runs as root, and creates the two
// namespaces (deleted in t.Cleanup).
func NewRig(t testing.TB) *Rig {
	t.Helper()
	RequireRoot(t)
	return &Rig{DP: NewNS(t, "dp"), Peer: NewNS(t, "peer"), sfx: Suffix()}
}

// Link adds a veth pair with the given MTU and queues per end (0: the
// defaults): dataplane side "d<n><sfx>" with address dpMAC, peer side
// "p<n><sfx>" with address peerMAC.
func (r *Rig) Link(t testing.TB, n string, mtu, queues int, dpMAC, peerMAC net.HardwareAddr) (dpIf, peerIf string) {
	t.Helper()
	dpIf, peerIf = "d"+n+r.sfx, "p"+n+r.sfx
	VethQueues(t, r.DP, dpIf, r.Peer, peerIf, mtu, queues)
	r.DP.IP(t, "link", "set", "dev", dpIf, "address", dpMAC.String())
	r.Peer.IP(t, "link", "set", "dev", peerIf, "address", peerMAC.String())
	return dpIf, peerIf
}
