// Package afpacket is the fallback datapath.Port for interfaces where the
// XDP steering program cannot attach (bonds, VLAN devices, drivers without
// XDP): an AF_PACKET socket with a TPACKET_V3 receive ring and sendmmsg for
// transmission.
//
// # Buffers
//
// The kernel owns the TPACKET_V3 ring: a block can only be handed back
// whole, so frames cannot stay in it while the pipeline works on them.
// Every received packet is therefore copied once from the ring into a frame
// of a Pool, at Off = the pool's headroom, so encapsulation is written in
// place in front of it as with AF_XDP. A Pool is shared by all AF_PACKET
// ports of a worker: a frame received on one port can be transmitted or
// released on any other (Frame.Handle is the pool frame index). Pool
// frames are not interchangeable with an AF_XDP UMEM: a worker uses ports
// of one family.
//
// # Transmit
//
// Transmit uses sendmmsg(2) with one iovec per frame pointing into the
// pool, rather than a TPACKET TX ring: both copy each packet once into an
// skb and take one syscall per batch, but sendmmsg needs no second ring to
// size and manage and returns at once whether each frame was taken, so pool
// frames are recycled immediately, with no completion state to reap.
// PACKET_QDISC_BYPASS is optional (Config.QdiscBypass), as AF_XDP bypasses
// the qdisc layer too.
//
// # What the kernel still sees
//
// AF_PACKET receives a copy: the kernel stack still processes every frame.
// On an interface the dataplane forwards for, the agent must keep the
// kernel from forwarding the same frames (no route, or an ingress drop in tc
// or nftables netdev ingress, which run after packet taps), and may narrow
// what the socket sees with a classic BPF filter (Config.Filter). Outgoing
// frames are not received (PACKET_IGNORE_OUTGOING, and checked per packet).
//
// # Ownership
//
// A Pool and its ports are owned by one goroutine, like AF_XDP sockets; Stats
// and Counts may be read from any goroutine.
package afpacket
