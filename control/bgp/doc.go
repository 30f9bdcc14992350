// Package bgp is Tabby's BGP speaker for one node: an embedded GoBGP v4
// server that peers as Calico's BIRD does and advertises the node's IPAM
// blocks.
//
// The package has two halves:
//
//   - Compute (desired.go) is a pure function from datastore resources
//     (Nodes, BGPConfigurations, BGPPeers, BlockAffinities) to a Desired
//     state: the global settings (AS, router ID, listen port), the peers
//     (node-to-node mesh, route-reflector sessions, explicit peers such as
//     ToR switches, with AS, TCP-MD5 password and source address) and the
//     prefixes to advertise (this node's confirmed block affinities).
//   - Speaker (speaker.go) owns a running GoBGP server and converges it on a
//     Desired with Reconcile: peers are added, removed or re-created when
//     their settings change, paths are added and withdrawn, and the global
//     settings restart the server only when they change. Reconcile is
//     idempotent: a second call with the same Desired changes nothing.
//
// Learned routes (the best path of every prefix not originated by this
// node) are delivered to Options.OnRoutes as batches of RouteEvents from one
// goroutine, in order, coalesced and without duplicates: a prefix is
// reported only when its next hop or peer changes or when it goes away.
//
// Route reflection follows Calico: a node whose Node.spec.bgp has a
// routeReflectorClusterID is a reflector; on a session between a reflector
// and a node whose cluster ID differs (or is empty), the reflector treats the
// node as its client. Sessions between nodes come from BGPPeers with a
// peerSelector, in both directions (the nodes the BGPPeer applies to peer
// with the selected nodes, and the selected nodes with them). As in Calico,
// a route-reflector topology sets nodeToNodeMeshEnabled to false, so that
// clients peer only with their reflectors.
//
// Graceful restart (RFC 4724) is negotiated on every session, IPv4 and IPv6
// unicast, with the peer's restart time taken from BGPPeer.maxRestartTime
// (default 120 s): when a peer's session drops without a NOTIFICATION, its
// routes are kept (marked stale) until it comes back and sends End-of-RIB or
// the restart time runs out, so a restarting agent does not flap routes on
// the other nodes. Close sends a Cease NOTIFICATION, so an orderly shutdown
// withdraws this node's routes at once.
//
// Concurrency: a Speaker is safe for concurrent use; Reconcile calls are
// serialised. The package never logs except through Options.Logger (default:
// discard); GoBGP's own log records go to the same logger, tagged
// component=gobgp, at Options.GoBGPLogLevel and above (default Warn).
package bgp
