package afxdp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Mode is how a socket moves frames between the driver and the UMEM.
type Mode uint8

// Bind modes.
const (
	// ModeAuto (configuration only): zero-copy if the driver supports it,
	// copy mode otherwise.
	ModeAuto Mode = iota
	// ModeCopy: the kernel copies frames between its buffers and the
	// UMEM (any driver; XDP generic mode or drivers without AF_XDP
	// zero-copy support, such as veth).
	ModeCopy
	// ModeZeroCopy: the driver DMAs into the UMEM.
	ModeZeroCopy
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeCopy:
		return "copy"
	case ModeZeroCopy:
		return "zero-copy"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// SocketConfig configures a Socket. Zero fields take the defaults.
type SocketConfig struct {
	// Interface names the interface; Ifindex may be given instead.
	Interface string
	Ifindex   int
	// Queue is the interface's RX/TX queue the socket binds to.
	Queue int
	// Port is stamped on received frames (the socket's index among the
	// worker's ports).
	Port PortID
	// RxSize, TxSize, FillSize and CompletionSize are ring sizes, powers
	// of two (default 1024 each). FillSize also bounds how many frames the
	// socket lends the kernel for receiving.
	RxSize, TxSize, FillSize, CompletionSize int
	// FillBase, when set below FillSize, makes the lending elastic: the
	// socket lends FillBase frames at rest and doubles what it lends, up
	// to FillSize, whenever the kernel has used up three quarters of the
	// lent frames while more wait in the RX ring, as long as at least half
	// of the UMEM is free; after a long calm it halves it again. A socket
	// that receives bursts (TCP over a veth) then absorbs them without the
	// UMEM reserving the burst for every socket. RxSize should be at least
	// FillSize. 0: FillSize (fixed lending).
	FillBase int
	// Mode forces copy or zero-copy mode. ModeAuto tries zero-copy and
	// falls back to copy mode, logging why. Sockets after the first of a
	// UMEM inherit its mode (the kernel decides it per UMEM).
	Mode Mode
	// Logger receives setup messages (default: the UMEM's logger).
	Logger *slog.Logger
}

// SocketStats are a socket's counters. Kernel* fields come from
// XDP_STATISTICS.
type SocketStats struct {
	RxPackets, RxBytes uint64
	// RxInvalid counts RX descriptors outside their frame or shorter than
	// an Ethernet header: recycled, not delivered.
	RxInvalid          uint64
	TxPackets, TxBytes uint64
	// TxInvalid counts frames refused by Transmit for their length or
	// offset (runt, or not inside the frame): released.
	TxInvalid uint64
	// TxRingFull counts frames refused because the TX or completion ring
	// was full: released.
	TxRingFull uint64
	// Kicks counts sendto calls, KickErrors those that failed with other
	// than EAGAIN/EBUSY/ENOBUFS, Wakeups recvfrom/poll wakeups for RX.
	Kicks, KickErrors, Wakeups uint64
	// FillGrows counts the times elastic lending doubled (FillBase).
	FillGrows uint64

	KernelRxDropped, KernelRxInvalidDescs, KernelTxInvalidDescs uint64
	KernelRxRingFull, KernelRxFillRingEmpty, KernelTxRingEmpty  uint64
}

// Add adds o's counters to st (totals over several sockets).
func (st *SocketStats) Add(o SocketStats) {
	st.RxPackets += o.RxPackets
	st.RxBytes += o.RxBytes
	st.RxInvalid += o.RxInvalid
	st.TxPackets += o.TxPackets
	st.TxBytes += o.TxBytes
	st.TxInvalid += o.TxInvalid
	st.TxRingFull += o.TxRingFull
	st.Kicks += o.Kicks
	st.KickErrors += o.KickErrors
	st.Wakeups += o.Wakeups
	st.FillGrows += o.FillGrows
	st.KernelRxDropped += o.KernelRxDropped
	st.KernelRxInvalidDescs += o.KernelRxInvalidDescs
	st.KernelTxInvalidDescs += o.KernelTxInvalidDescs
	st.KernelRxRingFull += o.KernelRxRingFull
	st.KernelRxFillRingEmpty += o.KernelRxFillRingEmpty
	st.KernelTxRingEmpty += o.KernelTxRingEmpty
}

type socketCounters struct {
	rxPackets, rxBytes, rxInvalid             atomic.Uint64
	txPackets, txBytes, txInvalid, txRingFull atomic.Uint64
	kicks, kickErrors, wakeups                atomic.Uint64
	fillGrows                                 atomic.Uint64
}

// Socket is an AF_XDP socket bound to one queue of one interface, with its
// own RX, TX, fill and completion rings on a shared UMEM. It implements
// datapath.Port. Like its UMEM, a socket is owned by one goroutine.
type Socket struct {
	umem       *UMEM
	id         uint16
	fd         int
	log        *slog.Logger
	ifindex    int
	ifname     string
	queue      int
	port       PortID
	mode       Mode
	modeReason string
	needWakeup bool

	rx   rxRing
	tx   txRing
	fill fillRing
	comp completionRing

	fillTarget int // most frames lent to the kernel for RX
	nFill      int // frames lent to the kernel for RX
	// fillBase is what an elastic socket lends at rest (fillTarget when
	// not elastic), fillCalm the refills since the lending last had to
	// grow.
	fillBase int
	fillCalm int
	nTx      int // frames on the TX ring or in flight
	txBudget int // descriptors one copy-mode sendto sends
	scratch  []uint64

	counters    socketCounters
	lastKickErr atomic.Uint32
	onClose     []func()
	shut        bool // Shutdown: the kernel side is gone
	closed      bool // Forget: the frames are back with the UMEM
}

func pow2(n, def int, what string) (uint32, error) {
	if n == 0 {
		n = def
	}
	if n <= 0 || n&(n-1) != 0 || n > 1<<20 {
		return 0, fmt.Errorf("%s size %d is not a power of two in 1..%d", what, n, 1<<20)
	}
	return uint32(n), nil
}

// NewSocket creates an AF_XDP socket in the calling thread's network
// namespace, sets up its rings, binds it to cfg's interface and queue and
// lends it its share of free frames (fill ring). The first socket of a
// UMEM decides the bind mode (zero-copy or copy); later sockets share the
// UMEM (XDP_SHARED_UMEM) with their own fill and completion rings. It must
// be called by the UMEM's owner (see OpenSocket for a running UMEM).
func (u *UMEM) NewSocket(cfg SocketConfig) (*Socket, error) {
	s, err := u.newSocket(cfg)
	if err != nil {
		return nil, err
	}
	s.refill()
	u.publish()
	return s, nil
}

// OpenSocket is NewSocket for a UMEM whose owner goroutine is running: it
// creates, maps and binds the socket and adds it to the UMEM's sockets but
// touches none of the UMEM's frames, so it may be called from another
// goroutine while the owner receives and transmits. The socket's fill ring
// stays empty until its owner first calls Service or Receive (hand it to
// the owner, then register it with a steering program, so that the kernel
// finds frames to receive into). Calls that change the UMEM's socket list
// (NewSocket, OpenSocket, Forget, Close) must not run concurrently with one
// another: the caller serialises them, and hands the socket to the owner
// through a synchronising channel (Control.Do).
func (u *UMEM) OpenSocket(cfg SocketConfig) (*Socket, error) {
	return u.newSocket(cfg)
}

// freeID returns the lowest socket id no socket of the UMEM has.
func (u *UMEM) freeID() (uint16, error) {
	used := make(map[uint16]bool, len(u.sockets))
	for _, o := range u.sockets {
		used[o.id] = true
	}
	for id := 0; id <= 0xffff; id++ {
		if !used[uint16(id)] {
			return uint16(id), nil
		}
	}
	return 0, errors.New("new socket: umem has 65536 sockets")
}

// shareFD returns a bound socket to share the UMEM with (-1: none).
func (u *UMEM) shareFD() int {
	for _, o := range u.sockets {
		if !o.shut && o.fd >= 0 {
			return o.fd
		}
	}
	return -1
}

func (u *UMEM) newSocket(cfg SocketConfig) (_ *Socket, err error) {
	if u.closed {
		return nil, errors.New("new socket: umem closed")
	}
	var sizes [4]uint32
	for i, p := range []struct {
		n    int
		what string
	}{{cfg.RxSize, "rx ring"}, {cfg.TxSize, "tx ring"}, {cfg.FillSize, "fill ring"}, {cfg.CompletionSize, "completion ring"}} {
		if sizes[i], err = pow2(p.n, 1024, p.what); err != nil {
			return nil, fmt.Errorf("new socket: %w", err)
		}
	}
	fillBase := int(sizes[2])
	if cfg.FillBase < 0 {
		return nil, fmt.Errorf("new socket: fill base %d is negative", cfg.FillBase)
	}
	if cfg.FillBase > 0 {
		fillBase = min(cfg.FillBase, fillBase)
	}
	ifindex, ifname := cfg.Ifindex, cfg.Interface
	if ifname != "" {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return nil, fmt.Errorf("new socket: %w", err)
		}
		ifindex = ifi.Index
	} else if ifindex > 0 {
		if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
			ifname = ifi.Name
		}
	} else {
		return nil, errors.New("new socket: no interface")
	}
	if cfg.Queue < 0 {
		return nil, fmt.Errorf("new socket: queue %d", cfg.Queue)
	}
	for _, o := range u.sockets {
		if !o.shut && o.ifindex == ifindex && o.queue == cfg.Queue {
			return nil, fmt.Errorf("new socket: %s queue %d already has a socket on this umem", ifname, cfg.Queue)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = u.log
	}
	id, err := u.freeID()
	if err != nil {
		return nil, err
	}
	s := &Socket{
		umem:       u,
		id:         id,
		log:        log.With("if", ifname, "queue", cfg.Queue),
		ifindex:    ifindex,
		ifname:     ifname,
		queue:      cfg.Queue,
		port:       cfg.Port,
		fillTarget: fillBase,
		fillBase:   fillBase,
		txBudget:   copyModeTxBatch,
		scratch:    make([]uint64, max(sizes[3], sizes[2])),
	}
	// The UMEM is registered with the kernel by its first socket and
	// shared through any bound one; once every socket is gone the kernel
	// has dropped it, and the next socket registers it again.
	shareFD := u.shareFD()
	shared := u.bound && shareFD >= 0
	if shared {
		if s.fd, err = unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
			return nil, fmt.Errorf("new socket: %w", err)
		}
	} else if s.fd, err = u.register(); err != nil {
		return nil, fmt.Errorf("new socket: %w", err)
	}
	defer func() {
		if err != nil {
			s.unmap()
			unix.Close(s.fd)
		}
	}()
	if err := s.setupRings(sizes); err != nil {
		return nil, fmt.Errorf("new socket %s/%d: %w", ifname, cfg.Queue, err)
	}
	if shared {
		sa := &unix.SockaddrXDP{Flags: unix.XDP_SHARED_UMEM, Ifindex: uint32(ifindex), QueueID: uint32(cfg.Queue),
			SharedUmemFD: uint32(shareFD)}
		if err := unix.Bind(s.fd, sa); err != nil {
			return nil, fmt.Errorf("new socket %s/%d: bind shared umem: %w", ifname, cfg.Queue, err)
		}
		s.modeReason = "inherited from the umem's first socket"
		s.needWakeup = u.needWakeup
	} else if err := s.bindFirst(cfg.Mode); err != nil {
		return nil, fmt.Errorf("new socket %s/%d: %w", ifname, cfg.Queue, err)
	}
	var opts struct{ flags uint32 }
	if err := getsockopt(s.fd, unix.SOL_XDP, unix.XDP_OPTIONS, unsafe.Pointer(&opts), unsafe.Sizeof(opts)); err != nil {
		return nil, fmt.Errorf("new socket %s/%d: get options: %w", ifname, cfg.Queue, err)
	}
	s.mode = ModeCopy
	if opts.flags&unix.XDP_OPTIONS_ZEROCOPY != 0 {
		s.mode = ModeZeroCopy
	}
	if s.mode == ModeCopy {
		s.setTxBudget()
	}
	if !shared {
		u.bound, u.mode, u.needWakeup = true, s.mode, s.needWakeup
	}
	u.sockets = append(u.sockets, s)
	s.log.Info("af_xdp socket bound", "mode", s.mode, "why", s.modeReason, "need_wakeup", s.needWakeup,
		"shared_umem", shared, "tx_budget", s.txBudget)
	return s, nil
}

// setupRings creates and maps the four rings.
func (s *Socket) setupRings(sizes [4]uint32) error {
	for i, opt := range []int{unix.XDP_RX_RING, unix.XDP_TX_RING, unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING} {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_XDP, opt, int(sizes[i])); err != nil {
			return fmt.Errorf("set ring size (option %d): %w", opt, err)
		}
	}
	var off unix.XDPMmapOffsets
	if err := getsockopt(s.fd, unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off)); err != nil {
		return fmt.Errorf("get mmap offsets: %w", err)
	}
	descSize, addrSize := unsafe.Sizeof(unix.XDPDesc{}), unsafe.Sizeof(uint64(0))
	mem, err := mapRing(s.fd, off.Rx, sizes[0], descSize, unix.XDP_PGOFF_RX_RING)
	if err != nil {
		return err
	}
	s.rx.init(mem, off.Rx, sizes[0])
	if mem, err = mapRing(s.fd, off.Tx, sizes[1], descSize, unix.XDP_PGOFF_TX_RING); err != nil {
		return err
	}
	s.tx.init(mem, off.Tx, sizes[1])
	if mem, err = mapRing(s.fd, off.Fr, sizes[2], addrSize, unix.XDP_UMEM_PGOFF_FILL_RING); err != nil {
		return err
	}
	s.fill.init(mem, off.Fr, sizes[2])
	if mem, err = mapRing(s.fd, off.Cr, sizes[3], addrSize, unix.XDP_UMEM_PGOFF_COMPLETION_RING); err != nil {
		return err
	}
	s.comp.init(mem, off.Cr, sizes[3])
	return nil
}

// bindFirst binds the socket that registered the UMEM: zero-copy first
// (unless copy mode is forced), then copy mode, with need_wakeup.
func (s *Socket) bindFirst(want Mode) error {
	bind := func(flags uint16) error {
		return unix.Bind(s.fd, &unix.SockaddrXDP{Flags: flags | unix.XDP_USE_NEED_WAKEUP,
			Ifindex: uint32(s.ifindex), QueueID: uint32(s.queue)})
	}
	s.needWakeup = true
	switch want {
	case ModeZeroCopy:
		if err := bind(unix.XDP_ZEROCOPY); err != nil {
			return fmt.Errorf("bind zero-copy: %w", err)
		}
		s.modeReason = "zero-copy requested"
		return nil
	case ModeCopy:
		if err := bind(unix.XDP_COPY); err != nil {
			return fmt.Errorf("bind copy mode: %w", err)
		}
		s.modeReason = "copy mode requested"
		return nil
	}
	zcErr := bind(unix.XDP_ZEROCOPY)
	if zcErr == nil {
		s.modeReason = "driver supports zero-copy"
		return nil
	}
	if err := bind(unix.XDP_COPY); err != nil {
		return fmt.Errorf("bind: zero-copy: %v; copy mode: %w", zcErr, err)
	}
	s.modeReason = "zero-copy bind failed: " + zcErr.Error()
	s.log.Info("af_xdp zero-copy unavailable, using copy mode", "err", zcErr)
	return nil
}

// setTxBudget raises the number of frames one copy-mode sendto sends from
// the kernel's default of 32 to the TX ring size, where the kernel accepts
// XDP_MAX_TX_SKB_BUDGET.
func (s *Socket) setTxBudget() {
	budget := s.tx.size
	if budget < copyModeTxBatch {
		return
	}
	if err := setsockopt(s.fd, unix.SOL_XDP, xdpMaxTxSkbBudget, unsafe.Pointer(&budget), unsafe.Sizeof(budget)); err != nil {
		s.log.Debug("XDP_MAX_TX_SKB_BUDGET not accepted; kicking 32 frames per sendto", "err", err)
		return
	}
	s.txBudget = int(budget)
}

// Mode returns the socket's bind mode (ModeCopy or ModeZeroCopy).
func (s *Socket) Mode() Mode { return s.mode }

// ModeReason says why the socket has its mode.
func (s *Socket) ModeReason() string { return s.modeReason }

// TxBudget returns how many frames one sendto kick sends in copy mode.
func (s *Socket) TxBudget() int { return s.txBudget }

// FD returns the socket's file descriptor (for poll and the XSKMAP).
func (s *Socket) FD() int { return s.fd }

// Ifindex returns the interface index the socket is bound to.
func (s *Socket) Ifindex() int { return s.ifindex }

// Queue returns the queue the socket is bound to.
func (s *Socket) Queue() int { return s.queue }

// UMEM returns the socket's UMEM.
func (s *Socket) UMEM() *UMEM { return s.umem }

// Headroom implements datapath.Port.
func (s *Socket) Headroom() int { return s.umem.Headroom() }

// Receive implements datapath.Port: it hands out up to len(frames)
// received frames (Buf is the whole UMEM frame, Off/Len from the
// descriptor), then tops up the fill ring. It does not block.
func (s *Socket) Receive(frames []Frame) int {
	u := s.umem
	idx, n := s.rx.peek(uint32(len(frames)))
	if n == 0 {
		if s.needWakeup && s.fill.needWakeup() {
			recvfromWake(s.fd)
			s.counters.wakeups.Add(1)
		}
		if s.refill() {
			u.publish()
		}
		return 0
	}
	got, bytes, invalid := 0, uint64(0), uint64(0)
	for i := uint32(0); i < n; i++ {
		d := s.rx.desc(idx + i)
		base := d.Addr &^ u.frameMask
		fi := base >> u.frameShift
		if fi >= uint64(u.nframes) || u.state[fi] != stateFill {
			// Not a frame we lent: leave it alone.
			u.invalid.Add(1)
			invalid++
			continue
		}
		s.nFill--
		u.nFill--
		off := d.Addr - base
		if d.Len < ethHeaderLen || off+uint64(d.Len) > u.frameSize {
			u.state[fi] = stateFree
			u.free = append(u.free, base)
			invalid++
			continue
		}
		u.state[fi] = stateApp
		frames[got] = Frame{Buf: u.area[base : base+u.frameSize : base+u.frameSize],
			Off: int(off), Len: int(d.Len), Handle: base, Port: s.port}
		bytes += uint64(d.Len)
		got++
	}
	if s.fillBase < int(s.fill.size) {
		// What the kernel had filled and we had not read, this batch included.
		s.adaptFill(int(atomic.LoadUint32(s.rx.producer) - s.rx.cachedCons))
	}
	s.rx.consRelease(n)
	u.nApp += got
	s.refill()
	u.publish()
	s.counters.rxPackets.Add(uint64(got))
	s.counters.rxBytes.Add(bytes)
	if invalid > 0 {
		s.counters.rxInvalid.Add(invalid)
	}
	return got
}

// refill moves free frames to the fill ring, up to the socket's share, and
// reports whether it moved any.
func (s *Socket) refill() bool {
	u := s.umem
	want := min(s.fillTarget-s.nFill, len(u.free))
	if want <= 0 {
		return false
	}
	n := min(want, int(s.fill.free()))
	if n == 0 {
		return false
	}
	top := len(u.free)
	take := u.free[top-n : top]
	for _, a := range take {
		fi := a >> u.frameShift
		u.state[fi] = stateFill
		u.owner[fi] = s.id
	}
	s.fill.put(take)
	s.fill.prodSubmit()
	u.free = u.free[:top-n]
	s.nFill += n
	u.nFill += n
	return true
}

// fillCalmBatches is how many receive calls without a sign of starvation
// an elastic socket waits before halving what it lends (tens of
// milliseconds of busy polling; bursts every few milliseconds keep the
// lending up).
const fillCalmBatches = 1 << 16

// adaptFill grows or shrinks an elastic socket's lending (FillBase) when a
// receive found backlog frames in the RX ring. The sign of starvation: more
// than half of what the socket lends is filled and waiting for the worker,
// so the next burst would find the fill ring empty and be
// dropped (rx_fill_ring_empty_descs). (The fill ring's consumer index is
// no signal: the kernel takes every visible entry into a private cache at
// once.)
func (s *Socket) adaptFill(backlog int) {
	u := s.umem
	if backlog > s.fillTarget/2 {
		s.fillCalm = 0
		if s.fillTarget < int(s.fill.size) && 2*len(u.free) > u.nframes {
			s.fillTarget = min(2*s.fillTarget, int(s.fill.size))
			s.counters.fillGrows.Add(1)
		}
		return
	}
	if s.fillTarget > s.fillBase {
		if s.fillCalm++; s.fillCalm >= fillCalmBatches {
			s.fillTarget = max(s.fillTarget/2, s.fillBase)
			s.fillCalm = 0
		}
	}
}

// Transmit implements datapath.Port. It queues frames on the TX ring
// (frames may come from any socket of the same UMEM), kicks the kernel,
// and reclaims completed frames into the fill ring. On return frames[:n]
// are the frames queued, in their original order; the others, refused for
// a full ring (TxRingFull) or a bad length or offset (TxInvalid), were
// released. Frames that are not the dataplane's to give (released twice,
// or from another UMEM) are ignored and counted by UMEM.InvalidReleases.
func (s *Socket) Transmit(frames []Frame) int {
	u := s.umem
	s.reap()
	room := int(s.tx.free(uint32(len(frames))))
	room = min(room, int(s.comp.size)-s.nTx)
	queued, bytes, bad, full := 0, uint64(0), uint64(0), uint64(0)
	for i := range frames {
		f := &frames[i]
		h := f.Handle
		if !u.appFrame(h) {
			u.invalid.Add(1)
			continue
		}
		if f.Len < ethHeaderLen || f.Off < 0 || uint64(f.Off)+uint64(f.Len) > u.frameSize {
			u.releaseApp(h)
			bad++
			continue
		}
		if queued >= room {
			u.releaseApp(h)
			full++
			continue
		}
		fi := h >> u.frameShift
		u.state[fi] = stateTx
		u.owner[fi] = s.id
		s.tx.put(h+uint64(f.Off), uint32(f.Len))
		bytes += uint64(f.Len)
		if queued != i {
			frames[queued] = *f
		}
		queued++
	}
	u.nApp -= queued
	u.nTx += queued
	s.nTx += queued
	if queued > 0 {
		s.tx.prodSubmit()
		s.kick()
	}
	s.refill()
	u.publish()
	s.counters.txPackets.Add(uint64(queued))
	s.counters.txBytes.Add(bytes)
	if bad > 0 {
		s.counters.txInvalid.Add(bad)
	}
	if full > 0 {
		s.counters.txRingFull.Add(full)
	}
	return queued
}

// Release implements datapath.Port: the frames go back to the UMEM and
// this socket's fill ring is topped up.
func (s *Socket) Release(frames []Frame) {
	u := s.umem
	for i := range frames {
		h := frames[i].Handle
		if !u.appFrame(h) {
			u.invalid.Add(1)
			continue
		}
		u.releaseApp(h)
	}
	s.refill()
	u.publish()
}

// kick asks the kernel to send what is on the TX ring. In copy mode one
// sendto sends at most TxBudget frames and returns EAGAIN while more are
// pending, so it is repeated as often as the pending count needs (bounded,
// so a full completion ring cannot make it spin). With need_wakeup in
// zero-copy mode the driver is woken only when it asked.
func (s *Socket) kick() {
	if s.mode == ModeZeroCopy && s.needWakeup && !s.tx.needWakeup() {
		return
	}
	pending := int(s.tx.pending())
	tries := 1
	if s.mode == ModeCopy {
		tries = (pending+s.txBudget-1)/s.txBudget + 1
	}
	for range tries {
		errno := sendtoKick(s.fd)
		s.counters.kicks.Add(1)
		switch errno {
		case 0, unix.EAGAIN:
		case unix.EBUSY, unix.ENOBUFS:
			return
		default:
			s.counters.kickErrors.Add(1)
			s.lastKickErr.Store(uint32(errno))
			return
		}
		if s.tx.pending() == 0 {
			return
		}
	}
}

// reap moves completed frames from the completion ring to the free stack.
func (s *Socket) reap() {
	if s.nTx == 0 {
		return
	}
	u := s.umem
	n := s.comp.take(s.scratch[:s.comp.size])
	done := 0
	for _, a := range s.scratch[:n] {
		base := a &^ u.frameMask
		fi := base >> u.frameShift
		if fi >= uint64(u.nframes) || u.state[fi] != stateTx {
			u.invalid.Add(1)
			continue
		}
		u.state[fi] = stateFree
		u.free = append(u.free, base)
		done++
	}
	s.nTx -= done
	u.nTx -= done
}

// Service does the socket's housekeeping for an idle or busy loop: it
// reaps the completion ring, kicks TX frames still pending (a copy-mode
// kick stops at the budget), and tops up the fill ring.
func (s *Socket) Service() {
	s.reap()
	if s.tx.pending() != 0 {
		s.kick()
	}
	s.refill()
	s.umem.publish()
}

// TxOutstanding returns how many frames this socket has queued or in
// flight.
func (s *Socket) TxOutstanding() int { return s.nTx }

// Stats returns the socket's counters. It may be called from any
// goroutine; the kernel counters are read with getsockopt.
func (s *Socket) Stats() SocketStats {
	c := &s.counters
	st := SocketStats{
		RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(), RxInvalid: c.rxInvalid.Load(),
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(), TxInvalid: c.txInvalid.Load(),
		TxRingFull: c.txRingFull.Load(), Kicks: c.kicks.Load(), KickErrors: c.kickErrors.Load(),
		Wakeups: c.wakeups.Load(), FillGrows: c.fillGrows.Load(),
	}
	var ks unix.XDPStatistics
	if s.fd >= 0 && getsockopt(s.fd, unix.SOL_XDP, unix.XDP_STATISTICS, unsafe.Pointer(&ks), unsafe.Sizeof(ks)) == nil {
		st.KernelRxDropped, st.KernelRxInvalidDescs, st.KernelTxInvalidDescs = ks.Rx_dropped, ks.Rx_invalid_descs, ks.Tx_invalid_descs
		st.KernelRxRingFull, st.KernelRxFillRingEmpty, st.KernelTxRingEmpty = ks.Rx_ring_full, ks.Rx_fill_ring_empty_descs, ks.Tx_ring_empty_descs
	}
	return st
}

func (s *Socket) unmap() {
	s.rx.close()
	s.tx.close()
	s.fill.close()
	s.comp.close()
}

// Shutdown unregisters the socket from steering programs, unmaps its rings
// and closes it, without touching its UMEM: from then on the kernel uses
// none of the frames it held for the socket (its fill ring, TX in flight),
// but they stay accounted to the socket until UMEM.Forget returns them. It
// may be called from any goroutine once the socket's owner no longer uses
// it (it is no port of a running loop any more), so that the kernel's
// teardown (an RCU grace period) does not stall the owner. After Shutdown
// the socket may only be passed to Forget (Stats still answers with the
// counters kept in userspace).
func (s *Socket) Shutdown() error {
	if s.shut {
		return nil
	}
	s.shut = true
	for _, f := range s.onClose {
		f()
	}
	s.unmap()
	var err error
	if s.fd >= 0 {
		err = unix.Close(s.fd)
		s.fd = -1
	}
	return err
}

// Forget removes a socket that is shut down from the UMEM and returns the
// frames the kernel held for it (fill ring, TX in flight) to the free
// stack. It must be called from the UMEM's owner goroutine.
func (u *UMEM) Forget(s *Socket) error {
	if s.umem != u {
		return errors.New("forget socket: not a socket of this umem")
	}
	if !s.shut {
		return fmt.Errorf("forget socket %s/%d: still open (Shutdown first)", s.ifname, s.queue)
	}
	if s.closed {
		return nil
	}
	s.closed = true
	for i, o := range u.sockets {
		if o == s {
			u.sockets = append(u.sockets[:i], u.sockets[i+1:]...)
			break
		}
	}
	if len(u.sockets) == 0 {
		u.bound = false
	}
	fill, tx := u.reclaim(s.id)
	s.nFill, s.nTx = 0, 0
	s.log.Debug("af_xdp socket closed", "reclaimed_fill", fill, "reclaimed_tx", tx)
	return nil
}

// Close unregisters the socket from steering programs, closes it, and
// returns the frames the kernel held for it (fill ring, TX in flight) to
// the UMEM: Shutdown then Forget, after reaping the completions already
// there. Frames the dataplane holds stay valid until the UMEM closes. Call
// it from the owning goroutine, after the worker loop stopped.
func (s *Socket) Close() error {
	if s.closed {
		return nil
	}
	if !s.shut {
		s.reap()
	}
	err := s.Shutdown()
	return errors.Join(err, s.umem.Forget(s))
}
