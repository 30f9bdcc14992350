// Package engine runs one node's dataplane: it opens the packet I/O ports
// (AF_XDP sockets, or AF_PACKET sockets as the fallback) on the node's
// interfaces, attaches the XDP steering program, and drives a
// datapath.Worker over those ports in a worker goroutine until Close.
//
// # Setup and teardown
//
// Start creates, in order: the frame memory (an AF_XDP UMEM or an AF_PACKET
// pool), the steering maps, then per interface the steering attachment and
// the socket, which it registers in the attachment's XSKMAP. It then starts
// the worker loop (afxdp.Run over datapath.Worker.Poll). If any step fails
// Start undoes every earlier one, so a failed Start leaves the interfaces as
// it found them. Close stops the loop (which drains: in-flight frames are
// processed and TX completions awaited), checks that every frame is back
// with its UMEM or pool, detaches the steering programs, closes the sockets
// and frees the frame memory. Sockets and attachments are created in
// Config.Netns (on a thread switched into it); they keep working from any
// thread afterwards.
//
// # Ports and queues
//
// Interface i of Config.Interfaces is datapath.PortID i: the next hops in
// Config.Tables name egress interfaces by that index. Tables.Node.HostPort
// indexes the same list; set it to datapath.NoPort unless one of the
// interfaces leads to the host stack (frames for the host would otherwise be
// sent out of that interface).
//
// # Interfaces attached at runtime
//
// AddInterface attaches another interface while traffic flows (a pod's
// veth): it resolves and attaches it in Config.Netns, opens a socket per
// worker on the worker's UMEM (OpenSocket: no frame state touched from
// outside the worker) or pool, hands the port to each worker through its
// afxdp.Control (the worker adds it to its datapath.Worker and pollable set
// and fills its fill ring between two batches), and only then registers
// the sockets in the interface's XSKMAP. It returns the PortID: the lowest
// slot that is free and that no next hop of Config.Tables still names, or a
// new one. RemoveInterface undoes it: XSKMAP entries removed, the workers
// forward what the socket already received and drop the port between two
// batches, the steering program is detached, TX completions are awaited
// (not for an interface that vanished with its pod), the socket is shut
// down outside the worker (the kernel's teardown waits for an RCU grace
// period) and its frames go back to the UMEM on the worker. Callers remove
// the routes to a port before removing it.
//
// Changes are serialised (one at a time, and not concurrently with Close);
// the worker loops never stop for them: a change costs each worker the
// time of a few function calls between two batches, and an idle worker
// asleep in poll(2) is woken for it through the eventfd it polls. Sockets
// added at runtime have Config.RuntimeRingSize rings (default 256), and
// the frame memory is sized for Config.RuntimeInterfaces of them;
// AddInterface refuses a port the frame memory cannot back, so the ports
// never starve each other of receive buffers.
//
// One worker serves queue 0 of every interface (veths only use queue 0). The
// code is organised per worker: a worker owns one UMEM, one socket per
// interface on its queue, and one datapath.Worker, and every attachment has
// an XSKMAP indexed by queue. Running one worker per RX queue of a
// multi-queue NIC means building more workers with other queue numbers in
// Start (see workerQueues); nothing else changes. AF_PACKET sockets see all
// queues, so more than one AF_PACKET worker would need PACKET_FANOUT.
//
// # AF_PACKET: the kernel still sees every frame
//
// An AF_PACKET socket receives a copy; the kernel stack still processes the
// original. The steering fields of Config (pod CIDRs, node address, host
// addresses) are applied there as a classic BPF socket filter equivalent to
// the XDP program, so the engine sees the same frames in both modes, but the
// kernel must be kept from acting on them too:
//   - forwarded traffic: the kernel must not forward it (net.ipv4.ip_forward=0
//     and net.ipv6.conf.all.forwarding=0 in the engine's namespace, or no
//     kernel route for the pod CIDRs), or drop it at ingress (tc, or an
//     nftables netdev ingress chain; both run after packet taps, so the engine
//     still receives its copy);
//   - tunnel traffic to the node address: the kernel answers VXLAN (no UDP
//     listener) and IP-in-IP (no ipip module) with ICMP unreachable errors
//     unless these packets are dropped at ingress the same way.
//
// # Veth labs (measured on kernel 6.18, pinned by this package's tests)
//
//   - Checksum offload: a kernel socket (or the kernel VXLAN device, whose
//     outer UDP checksum is on by default) sending through a veth with TX
//     checksum offload on, the default, leaves its TCP/UDP checksum
//     unfinished. AF_XDP and AF_PACKET see the raw bytes: forwarded packets
//     then fail the receiver's checksum check, and VXLAN from such a sender
//     is dropped as bad_tunnel. Turn TX checksum offload off on the sending
//     veth (ethtool -K dev tx off). Frames from a real NIC are complete.
//   - Frame size: a frame holds 3840 bytes (4096 minus 256 of headroom);
//     longer frames are dropped by the kernel at the socket (Stats:
//     KernelRxDropped). Native XDP on a veth needs the peer's MTU at most
//     3506; otherwise the attach falls back to generic mode (Stats says why).
//   - Restart: the kernel releases a closed AF_XDP socket's queue
//     asynchronously (~20 ms); Start retries a busy bind for a second.
//
// # Concurrency
//
// Counters and Stats may be called from any goroutine, during and after the
// run. Close may be called from any goroutine, more than once.
package engine
