// Package e2e is Tabby's end-to-end benchmark harness: it compares the
// kernel's forwarding path with Tabby's AF_XDP userspace dataplane on the
// same namespace topology, alternating between the two in one run.
//
// # Topology
//
// Three network namespaces in a line, built with bench/topo:
//
//	gen (eth0) ─── (eth0) dut (eth1) ─── (eth0) sink
//	10.10.1.2       10.10.1.1 10.10.2.1       10.10.2.2
//
// Both links have MTU 1600 so that a 1500-byte pod frame still fits once
// encapsulated (VXLAN adds 50 bytes). The device under test (dut) holds the
// full real BGP table (internal/bgptable, ~900k IPv4 prefixes, all via the
// sink), the pod routes of its own block 10.244.1.0/24 (pods "behind" the
// sink) and of a remote node's blocks 10.244.64.0/20 (64 /26 blocks, the
// remote node being the sink at 10.10.2.2). The dut runs one of two
// implementations, switched per run:
//
//   - kernel: net.ipv4.ip_forward=1, the routes loaded through rtnetlink in
//     batches, a kernel VXLAN device vxlan.calico (VNI 4096, port 4789,
//     nolearning) with the neighbour and FDB entries Calico programs for a
//     remote VTEP, RPS on the ingress veth steering the forwarding work to
//     the CPUs the traffic thread does not use (see CPU below). The kernel
//     here has no IPIP module, so the ipip case is afxdp only.
//   - afxdp: net.ipv4.ip_forward=0 (nothing is forwarded twice) and
//     datapath/engine on eth0 and eth1 with the same routes in
//     datapath.Tables and next hops built from the topology's MACs.
//
// Cases (each for both implementations, for every frame size):
//
//   - forward-<size>: gen sends to random addresses inside random loaded
//     BGP prefixes; the dut routes them to the sink unchanged (TTL−1, MACs).
//   - vxlan-encap-<size>: gen plays local pods (10.244.2.0/24) sending to
//     remote pods (10.244.64.0/20); the dut encapsulates in VXLAN to the
//     remote node, which the sink plays; the sink counts the encapsulated
//     frames and reads the payload at the inner offset.
//   - vxlan-decap-<size>: gen plays a remote node (10.10.1.2) sending VXLAN
//     to the dut's node address 10.10.1.1 for local pods (10.244.1.0/24,
//     behind the sink); the dut decapsulates and forwards the inner frame.
//   - ipip-encap-<size> (afxdp only): as vxlan-encap with IP-in-IP.
//   - policy-1000-<size>, policy-10000-<size>: pod to pod traffic through
//     the dut enforcing a network policy of 1,000 or 10,000 rules (see
//     Policy cases below).
//
// <size> is the length of the pod's Ethernet frame without FCS (64 is the
// smallest frame the wire carries); encapsulated frames are 50 (VXLAN) or
// 20 (IPIP) bytes longer on the underlay. The routing and encapsulation
// cases run at Config.Sizes (default 64 and 1500), the policy cases at
// Config.PolicySizes (default 64 only; TABBY_BENCH_E2E_SIZES sets both).
// Every family is in the default run (about a minute per policy case);
// TABBY_BENCH_E2E_CASES=policy-1000,policy-10000 runs the policy cases
// alone.
//
// # Policy cases
//
// One policy model (package acl) for both implementations: the world of
// acltest.RuleScale with N ingress rules (policies of 10 rules selecting
// role=target; every rule names its peers, selectors over 2,000 pods
// elsewhere or CIDRs from a pool; mostly TCP to common ports) plus the
// lab's pods as endpoints: 64 servers 10.244.1.1-64 behind the sink (role=
// target, on the dut's node: the policy is compiled for them), 100 clients
// 10.244.2.1-100 and 32 intruders 10.244.2.201-232 behind gen (another
// node). Rule N−N/20 (95% deep: 950 of 1,000, 9,500 of 10,000) is replaced
// by the one rule that allows the clients: UDP to port 9 from app ==
// 'e2e-client' (a selector: an nftables set of their addresses). The
// intruders match no rule and are denied at the end of the tier, after the
// whole list. Gen sends from clients to servers (one flow template per
// source port), every 20th flow an intruder's (5% of the frames). Those
// frames carry another marker magic: they are counted apart (MetricDeniedSent,
// MetricDeniedLeak) and pps and loss_pct are of the allowed frames only.
//
//   - kernel: acl.RenderNftables of the world is loaded into the dut with
//     `nft -f` (table inet tabby; forward hook: established/related accepted,
//     then verdict maps from the destination address to the servers'
//     ingress chain, whose rules are the policy's in order, address terms as
//     named sets), and deleted after the case. The kernel's conntrack is
//     active in the dut then; one-way UDP flows never become established,
//     so every frame walks the chain: 950 (9,500) rules for a client's
//     frame, all of them for an intruder's.
//   - afxdp: acl.Compile of the same world, Tables.SetPolicy, and
//     NodeConfig.EnforcePolicy in the policy cases. Tabby's policy stage
//     consults its conntrack first: a client's flow is classified once (its
//     first frame after the engine starts) and then allowed as established;
//     intruders' frames are never tracked, so each one is classified.
//
// MetricPolicyLoad is the time `nft -f` took (kernel; rendering is printed
// apart) or acl.Compile plus SetPolicy (afxdp). Before measuring, each
// implementation gets a functional check: the allowed flows alone at 20k pps
// must arrive (at least 90%), the denied flows alone must not (none may);
// the compiled policy must also match a client's flow with the deep rule
// and an intruder's with the end of the tier. A failed check fails the case.
//
// A caveat that shows most here: the generator's copy-mode AF_XDP frames
// complete only when the dut has freed them, and the socket's send buffer
// bounds the frames in flight (a few hundred), fewer than the kernel's
// backlog holds. A slow kernel path therefore slows the generator instead
// of dropping: the kernel's policy runs show a low gen_pps with no loss
// (classified generator-bound) although the dut is the limit; pps, what
// the sink received, is the same either way.
//
// # Generator and sink
//
// Both are AF_XDP sockets of the harness (datapath/afxdp): the generator's
// on gen/eth0 (TX only, copy mode), the sink's on sink/eth0 behind an XDP
// steering program that redirects every IPv4 frame to it (which also makes
// the veth accept XDP traffic). One goroutine, locked to an OS thread pinned
// to CPU 0, drives both: it transmits pre-built frames (flows chosen round
// robin from a few thousand templates: different destinations and UDP source
// ports) and drains the sink's RX ring between batches. Right before a batch
// is handed to the kernel it writes into every payload a marker (magic and
// phase number), a 64-bit sequence number and the send time from Go's
// monotonic clock (CLOCK_MONOTONIC); the sink parses Ethernet/IPv4, skips
// VXLAN or IPIP outer headers, and reads them back. Sender and receiver share
// the clock and the time origin, so the difference is the one-way latency:
// generator TX path + dut + sink XDP redirect + at most one loop iteration.
//
// Each (case, impl) run has a throughput phase: warm-up, then the generator
// sends as fast as it can for a fixed duration, then the sink drains; the
// implementations alternate (kernel, afxdp, kernel, afxdp, ...) Reps times
// and the run with the median delivered rate is reported. sent is
// what the generator's TX ring accepted and the kernel consumed; pps is what
// the sink received divided by the send duration; loss is 1 − received/sent.
// After the throughput runs of a case, a latency phase per implementation
// sends at a fixed rate that both implementations sustained — LatencyFraction
// (default 50%) of the lower of their measured rates — so that latency is
// not the queueing of an overloaded path; the latency histogram (log-linear,
// <1% bucket error) gives p50, p99 and p99.9.
//
// # CPU
//
// The traffic thread is pinned to CPU 0. The afxdp engine's worker is left
// to the scheduler, which runs it on another CPU since CPU 0 is busy (it is
// not pinned: see unpinThreads for why the Go runtime's threads must stay
// free), and for the kernel implementation RPS on the dut's ingress veth
// sends the forwarding work to the other CPUs. So in both cases CPU 0
// generates and sinks traffic and the other CPUs forward. (On a veth the
// sender's CPU also runs the receiver's first steps: for the kernel
// netif_rx and the RPS hand-off, for afxdp the XDP steering program and the
// copy into the dut's socket.)
//
// cpu_s_per_mpkt is the whole machine's busy time from /proc/stat (user,
// nice, system, irq, softirq, steal) over the send window, divided by the
// packets delivered, in CPU-seconds per million packets. It is measured the
// same way for both implementations and includes the generator and sink
// (one core spinning), the afxdp worker's busy polling, and anything else
// running on the machine: the harness samples the background load before
// the run and prints it, and prints per phase how much CPU the traffic
// thread and the other harness threads (for afxdp: the engine) actually
// got. A sounder per-dut figure is not available here: the kernel has no IRQ
// time accounting, so softirq time (where the kernel forwards) is charged
// to whichever task it interrupted. The afxdp dataplane's own cost per
// packet is what the `pipeline` suite measures in the mem port.
//
// # One run at a time
//
// Two runs at once would pin their traffic threads to the same CPU and
// measure each other, so Run takes an exclusive flock on LockPath first and
// waits for a run in progress to finish (ErrBusy if ctx ends meanwhile).
// Other load on the machine cannot be excluded: it is sampled before the
// run and shows per phase in gen_cpu_pct (the share of its CPU the traffic
// thread got) and in the progress lines.
//
// # Cleanup
//
// Run calls topo.Cleanup first (removing what a crashed run left behind),
// records everything it creates in its topology, and closes it on return,
// on error and on context cancellation: no namespace, link, XDP program or
// process outlives Run.
package e2e
