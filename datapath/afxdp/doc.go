// Package afxdp is Tabby's AF_XDP packet I/O: a UMEM of frames shared by
// the AF_XDP sockets of one worker (XDP_SHARED_UMEM, across interfaces and
// queues), sockets that implement datapath.Port, the XDP steering program
// that redirects only the traffic the dataplane owns, and the worker loop
// with its poll modes.
//
// Built directly on golang.org/x/sys/unix (sockets, rings, mmap) and
// github.com/cilium/ebpf (maps; the program is written with ebpf/asm, so
// no C toolchain is needed).
//
// # Ownership
//
// A UMEM, its sockets, their four rings and the frames they hand out are
// owned by one goroutine, the worker's (normally inside Run, on a locked OS
// thread). Nothing on the per-packet path takes a lock, allocates or logs.
// Counts, Stats and the steering Set* methods may be called from any
// goroutine.
//
// Other goroutines change a running worker through a Control (LoopConfig):
// Control.Do runs a function on the loop's goroutine between two batches
// (waking the loop if it sleeps in poll(2)), which may add or remove
// pollables and ports. A socket for a running UMEM is created with
// OpenSocket from any goroutine (it touches no frame state), handed to the
// worker, which fills its fill ring; a socket is retired with Shutdown
// from any goroutine once the worker no longer uses it, then Forget on the
// worker returns its frames. Calls that change a UMEM's socket list are
// serialised by the caller.
//
// # Frames
//
// Every frame of a UMEM is in exactly one state: free (on the UMEM's free
// stack), fill (lent to the kernel through a socket's fill ring), app (held
// by the dataplane after Receive or Alloc) or tx (on a TX ring or in flight
// until it shows up on a completion ring). The state is kept per frame, so
// a frame released twice or a foreign handle is refused and counted
// (UMEM.InvalidReleases) instead of corrupting a ring, and FrameCounts
// always add up to the total. After a drained stop App and Tx are zero;
// after every socket is closed all frames are free.
//
// How many frames a socket lends is its fill ring size, or, with
// SocketConfig.FillBase, elastic: FillBase at rest, doubled (up to the fill
// ring size) whenever a receive finds more than half of what is lent
// waiting unread in the RX ring while at least half of the UMEM is free,
// halved again after a long calm. A TCP sender on a veth delivers whole TSO
// bursts faster than a worker reads them; a socket that runs out of lent
// frames drops them (rx_fill_ring_empty_descs) and the sender retransmits.
// Lending elastically lets a busy socket borrow what idle sockets are not
// using instead of the UMEM reserving the burst for every socket.
//
// A received frame's Buf is its whole UMEM frame; the packet starts at Off,
// which is XDP_PACKET_HEADROOM (256) plus the registered headroom, so
// encapsulation can be written in place in front of it. Frame.Handle is the
// frame's base address; Transmit sends Buf[Off:Off+Len] of any frame of the
// same UMEM (TX address Handle+Off), whichever socket received it.
//
// # Rings and memory ordering
//
// Each ring type has its own file (fillring.go, compring.go, rxring.go,
// txring.go) over the common producer/consumer logic in ring.go, which
// documents the ordering argument: the shared indices are read and written
// with sync/atomic (sequentially consistent, so acquire/release against the
// kernel's smp_load_acquire/smp_store_release), descriptors with plain
// accesses ordered by them; the other side's index is re-read only when the
// cached view cannot satisfy a batch, and indices are published once per
// batch.
//
// # Modes on veth (measured, kernel 6.18)
//
// Zero-copy bind fails with EOPNOTSUPP on veth, so sockets bind in copy
// mode (Socket.Mode, ModeReason); the steering program attaches in native
// mode on veth and in generic mode anywhere. Copy-mode sendto sends at most
// 32 frames unless XDP_MAX_TX_SKB_BUDGET raises it, which the socket sets
// to its TX ring size; kicks are repeated as needed either way.
package afxdp
