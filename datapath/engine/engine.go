package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afpacket"
	"github.com/tabbynet/tabby/datapath/afxdp"
	"github.com/tabbynet/tabby/datapath/header"
)

// Engine runs one node's dataplane workers on AF_XDP (or AF_PACKET) ports.
type Engine struct {
	cfg Config
	log *slog.Logger

	steering *afxdp.Steering // AF_XDP only
	// AF_PACKET only (nil: every frame): the socket filter of underlay
	// interfaces and of workload interfaces (no tunnel traffic).
	filter, workloadFilter []unix.SockFilter
	workers                []*worker

	cancel context.CancelFunc
	done   chan struct{} // closed when every worker loop has exited

	// opMu serialises AddInterface, RemoveInterface and Close: one
	// change of the port set at a time.
	opMu sync.Mutex
	// mu guards what Stats reads while changes happen: ifaces, the
	// workers' socket and port lists, closed, final.
	mu sync.Mutex
	// ifaces are the attached interfaces by PortID (nil: a free slot).
	ifaces   []*ifaceState
	closed   bool
	closeErr error
	final    *Stats // recorded by Close before the sockets close
	// retired sums the counters of the AF_XDP sockets removed so far, so
	// that SocketTotals never goes backwards when a pod leaves.
	retired afxdp.SocketStats
}

// ifaceState is what the engine learned and created for one interface.
type ifaceState struct {
	name       string
	port       datapath.PortID
	ifindex    int
	mtu        int
	ring       int               // AF_XDP ring size of its sockets
	burstRing  int               // RX and fill ring size (Config.BurstRingSize)
	runtime    bool              // added by AddInterface
	workload   bool              // Interface.Workload
	attachment *afxdp.Attachment // AF_XDP only
	xdpReason  string
}

// workerQueues returns the queues that get a worker: only queue 0 for now
// (veths use one queue). One worker per RX queue of a multi-queue NIC is
// this list growing to the NIC's channel count: each worker then binds one
// socket per interface on its queue and registers it in the interface's
// XSKMAP at that index.
func workerQueues(cfg *Config) []int { return []int{0} }

// Start creates the frame memory and sockets, attaches the steering
// program, registers the sockets with it and starts the worker loops, which
// run until Close (or until ctx is done; Close must still be called). On any
// error it undoes everything it did and returns an error naming the step and
// interface.
func Start(ctx context.Context, cfg Config) (*Engine, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, done: make(chan struct{})}
	if cfg.PortKind == PortAFXDP && !cfg.steered() {
		e.log.Warn("no pod CIDRs and no node address: the steering program redirects nothing to the dataplane")
	}
	snap := cfg.Tables.Load()
	if snap == nil {
		return nil, errors.New("engine: tables have no snapshot (use datapath.NewTables)")
	}
	if hp := snap.Node.HostPort; hp != datapath.NoPort {
		if int(hp) < len(cfg.Interfaces) {
			e.log.Info("frames for the host are sent out of an engine interface", "host_port", hp,
				"if", cfg.Interfaces[hp].Name)
		} else {
			e.log.Warn("tables name a host port beyond the engine's interfaces; frames for the host are dropped",
				"host_port", hp)
		}
	}
	if err := inNetns(cfg.Netns, e.setup); err != nil {
		return nil, errors.Join(err, e.teardown())
	}
	runCtx, cancel := context.WithCancel(ctx)
	e.cancel = cancel
	for _, w := range e.workers {
		if err := w.start(runCtx, &e.cfg); err != nil {
			cancel()
			e.waitWorkers()
			return nil, errors.Join(err, e.teardown())
		}
	}
	go func() {
		e.waitWorkers()
		close(e.done)
	}()
	e.log.Info("engine started", "ports", cfg.PortKind, "interfaces", len(cfg.Interfaces),
		"workers", len(e.workers), "poll", cfg.PollMode, "batch", cfg.BatchSize, "frames", e.frameTotal(),
		"burst_ring", cfg.BurstRingSize)
	return e, nil
}

// frameTotal returns the frames of one worker's UMEM or pool.
func (e *Engine) frameTotal() int {
	if e.cfg.PortKind == PortAFPacket {
		return e.cfg.poolFrames()
	}
	return e.cfg.umemFrames()
}

// setup creates everything in the engine's namespace.
func (e *Engine) setup() error {
	cfg := &e.cfg
	for i, ifc := range cfg.Interfaces {
		is, err := e.resolve(ifc, datapath.PortID(i), false)
		if err != nil {
			return err
		}
		e.ifaces = append(e.ifaces, is)
	}
	if cfg.PortKind == PortAFPacket {
		return e.setupAFPacket()
	}
	return e.setupAFXDP()
}

// resolve looks an interface up (in the calling thread's namespace) and
// returns its state.
func (e *Engine) resolve(ifc Interface, port datapath.PortID, runtime bool) (*ifaceState, error) {
	ifi, err := net.InterfaceByName(ifc.Name)
	if err != nil {
		return nil, fmt.Errorf("engine: interface %s: %w", ifc.Name, err)
	}
	is := &ifaceState{name: ifc.Name, port: port, ifindex: ifi.Index, mtu: ifi.MTU,
		ring: e.cfg.ringSize(ifc, runtime), burstRing: e.cfg.BurstRingSize, runtime: runtime, workload: ifc.Workload}
	if e.cfg.PortKind == PortAFPacket {
		is.xdpReason = "af_packet ports: no XDP program"
	}
	if room := frameSize - maxHeadroom; ifi.MTU+header.EthernetLen+4 > room {
		e.log.Warn("interface MTU exceeds what a frame holds: longer frames are dropped", "if", ifc.Name,
			"mtu", ifi.MTU, "max_frame", room)
	}
	return is, nil
}

func (e *Engine) setupAFXDP() error {
	cfg := &e.cfg
	st, err := afxdp.NewSteering(afxdp.SteeringConfig{VXLANPort: cfg.VXLANPort, Logger: cfg.Logger})
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	e.steering = st
	if err := st.SetPodCIDRs(cfg.PodCIDRs); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if err := st.SetHostAddresses(cfg.HostAddresses); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if err := st.SetNodeAddress(cfg.NodeAddress); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	for i, ifc := range cfg.Interfaces {
		if err := e.attach(e.ifaces[i], ifc.XDPMode); err != nil {
			return err
		}
	}
	for wi, q := range workerQueues(cfg) {
		w := newWorker(wi, q)
		e.workers = append(e.workers, w)
		if w.umem, err = afxdp.NewUMEM(afxdp.UMEMConfig{Frames: cfg.umemFrames(), FrameSize: frameSize,
			Logger: cfg.Logger}); err != nil {
			return fmt.Errorf("engine: worker %d: %w", wi, err)
		}
		for _, is := range e.ifaces {
			s, err := e.newSocket(context.Background(), w.umem.NewSocket, is.socketConfig(q))
			if err != nil {
				return fmt.Errorf("engine: interface %s queue %d: %w", is.name, q, err)
			}
			w.setSocket(is.port, s)
			if err := is.attachment.Register(s); err != nil {
				return fmt.Errorf("engine: interface %s queue %d: %w", is.name, q, err)
			}
		}
	}
	return nil
}

// socketConfig returns the configuration of the interface's socket on a
// queue.
func (is *ifaceState) socketConfig(queue int) afxdp.SocketConfig {
	rx := max(is.ring, is.burstRing)
	return afxdp.SocketConfig{Interface: is.name, Queue: queue, Port: is.port,
		RxSize: rx, TxSize: is.ring, FillSize: rx, CompletionSize: is.ring, FillBase: is.ring}
}

// bindBusyWindow is how long Start retries binding a socket to a queue that
// is busy. The kernel releases a closed AF_XDP socket's hold on its queue
// asynchronously (measured: ~20 ms on kernel 6.18), so an engine started
// right after another one on the same interfaces closed would otherwise
// fail with EBUSY.
var bindBusyWindow = time.Second

// attachBusyWindow is how long attaching the steering program retries
// while the interface still holds the XDP link of a process that exited.
var attachBusyWindow = 2 * time.Second

// newSocket creates a socket with open (UMEM.NewSocket, or OpenSocket on
// a running UMEM), retrying for bindBusyWindow while the queue is busy.
func (e *Engine) newSocket(ctx context.Context, open func(afxdp.SocketConfig) (*afxdp.Socket, error),
	cfg afxdp.SocketConfig) (*afxdp.Socket, error) {
	deadline := time.Now().Add(bindBusyWindow)
	for {
		s, err := open(cfg)
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return s, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (queue busy: %v)", ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// attach attaches the steering program to an interface. With XDPAuto it
// tries native mode and falls back to generic mode itself, so that the
// reason for the fallback is kept for Stats.
func (e *Engine) attach(is *ifaceState, mode afxdp.XDPMode) error {
	attachOnce := e.steering.Attach
	if is.workload {
		attachOnce = e.steering.AttachWorkload
	}
	// An XDP link of a process that just died (an agent killed and
	// restarted) is released asynchronously, after its files are closed
	// by a kernel work queue: until then the attach fails with EBUSY
	// (native) or EEXIST (generic). Retry for attachBusyWindow.
	attach := func(name string, mode afxdp.XDPMode) (*afxdp.Attachment, error) {
		deadline := time.Now().Add(attachBusyWindow)
		for {
			a, err := attachOnce(name, mode)
			if err == nil || !(errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST)) || time.Now().After(deadline) {
				if err != nil && (errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST)) {
					err = fmt.Errorf("%w (another XDP program stayed attached for %s: is another tabby agent running on this node? see `ip link show %s`)",
						err, attachBusyWindow, name)
				}
				return a, err
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	switch mode {
	case afxdp.XDPDriver, afxdp.XDPGeneric:
		a, err := attach(is.name, mode)
		if err != nil {
			return fmt.Errorf("engine: interface %s: %w", is.name, err)
		}
		is.attachment, is.xdpReason = a, mode.String()+" mode requested"
		return nil
	}
	a, nerr := attach(is.name, afxdp.XDPDriver)
	if nerr == nil {
		is.attachment, is.xdpReason = a, "native attach succeeded"
		return nil
	}
	// The native attempt waited out a dying process's link: one
	// generic attempt is enough.
	a, err := attachOnce(is.name, afxdp.XDPGeneric)
	if err != nil {
		return fmt.Errorf("engine: interface %s: native: %v; generic: %w", is.name, nerr, err)
	}
	is.attachment, is.xdpReason = a, "native attach failed: "+nerr.Error()
	e.log.Warn("native XDP unavailable, steering in generic mode", "if", is.name, "err", nerr)
	return nil
}

func (e *Engine) setupAFPacket() error {
	cfg := &e.cfg
	if cfg.steered() {
		var err error
		spec := steerSpec{pods: cfg.PodCIDRs, hosts: cfg.HostAddresses, node: cfg.NodeAddress,
			ipip: true, vxlan: true, vxlanPort: cfg.VXLANPort}
		if e.filter, err = packetFilter(spec); err != nil {
			return fmt.Errorf("engine: %w", err)
		}
		spec.ipip, spec.vxlan = false, false
		if e.workloadFilter, err = packetFilter(spec); err != nil {
			return fmt.Errorf("engine: %w", err)
		}
	} else {
		e.log.Warn("no pod CIDRs and no node address: the af_packet sockets take every frame")
	}
	for wi, q := range workerQueues(cfg) {
		w := newWorker(wi, q)
		e.workers = append(e.workers, w)
		pool, err := afpacket.NewPool(cfg.poolFrames(), frameSize, poolHeadroom)
		if err != nil {
			return fmt.Errorf("engine: worker %d: %w", wi, err)
		}
		w.pool = pool
		for _, is := range e.ifaces {
			p, err := e.openPacketPort(w, is)
			if err != nil {
				return err
			}
			w.setPacketPort(is.port, p)
		}
	}
	return nil
}

// The AF_PACKET receive ring: many small blocks rather than the package's
// default 16 of 256 KiB. The kernel retires a block after 1 ms even if it
// is nearly empty, so at a light load every block holds a millisecond of
// traffic and the ring's depth in time is its block count: 16 blocks were
// 16 ms, less than a worker on a busy two-core machine is sometimes
// descheduled for (measured here: 0.4-0.9% of a 5,000 frames/s flow dropped). 128
// blocks of 64 KiB (8 MiB) hold 128 ms at a light load and ~50,000
// minimum-size frames at a heavy one.
const (
	packetBlockSize = 64 << 10
	packetBlocks    = 128
)

// openPacketPort opens an AF_PACKET port for an interface on a worker's
// pool (in the calling thread's namespace).
func (e *Engine) openPacketPort(w *worker, is *ifaceState) (*afpacket.Port, error) {
	filter := e.filter
	if is.workload {
		filter = e.workloadFilter
	}
	p, err := w.pool.Open(afpacket.Config{Interface: is.name, Port: is.port, Filter: filter,
		BlockSize: packetBlockSize, Blocks: packetBlocks,
		MaxBatch: e.cfg.BatchSize, Logger: e.cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("engine: interface %s: %w", is.name, err)
	}
	return p, nil
}

// waitWorkers waits for every started worker loop to exit.
func (e *Engine) waitWorkers() {
	for _, w := range e.workers {
		if w.done != nil {
			<-w.done
		}
	}
}

// teardown detaches the steering programs and closes sockets and frame
// memory. The worker loops must have stopped.
func (e *Engine) teardown() error {
	var errs []error
	if e.steering != nil {
		// Detach first: from here on the kernel gets every frame.
		errs = append(errs, e.steering.Close())
	}
	for _, w := range e.workers {
		errs = append(errs, w.close())
	}
	return errors.Join(errs...)
}

// Done is closed when the worker loops have exited: after Close, or
// earlier if a loop failed (Err says why) or Start's context ended.
func (e *Engine) Done() <-chan struct{} { return e.done }

// Err returns the error that ended a worker loop, or nil.
func (e *Engine) Err() error {
	var errs []error
	for _, w := range e.workers {
		if w.stopped() && w.err != nil {
			errs = append(errs, w.err)
		}
	}
	return errors.Join(errs...)
}

// Counters returns the pipeline counters summed over the workers. It may
// be called from any goroutine, also after Close.
func (e *Engine) Counters() datapath.Counters {
	var c datapath.Counters
	for _, w := range e.workers {
		wc := w.dp.Counters()
		c.Add(&wc)
	}
	return c
}

// Stats returns the engine's socket, steering and frame statistics and the
// modes chosen. It may be called from any goroutine; after Close it returns
// the statistics recorded when the workers had drained.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.final != nil {
		return *e.final
	}
	return e.stats()
}

// SocketTotals returns the AF_XDP socket counters summed over every socket
// the engine has had (the removed ones included): monotonic counters for
// metrics such as the kernel's drops at the sockets.
func (e *Engine) SocketTotals() afxdp.SocketStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.retired
	if e.final != nil {
		for _, p := range e.final.Ports {
			t.Add(p.XDP)
		}
		return t
	}
	for _, w := range e.workers {
		for _, s := range w.sockets {
			if s != nil {
				t.Add(s.Stats())
			}
		}
	}
	return t
}

// Frames returns where the frames of the workers' UMEMs are (AF_XDP):
// free, lent to the kernel for receiving, held by the dataplane, or in
// transmission.
func (e *Engine) Frames() afxdp.FrameCounts {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.final != nil {
		return e.final.Frames
	}
	var t afxdp.FrameCounts
	for _, w := range e.workers {
		f := w.frames()
		t.Total += f.Total
		t.Free += f.Free
		t.Fill += f.Fill
		t.App += f.App
		t.Tx += f.Tx
	}
	return t
}

// stats reads the live statistics; e.mu is held and the sockets are open.
func (e *Engine) stats() Stats {
	st := Stats{PortKind: e.cfg.PortKind}
	for _, is := range e.ifaces {
		if is == nil {
			continue
		}
		s := InterfaceStats{Name: is.name, Port: is.port, Ifindex: is.ifindex, MTU: is.mtu, Runtime: is.runtime,
			Workload:      is.workload,
			XDPModeReason: is.xdpReason}
		if a := is.attachment; a != nil {
			s.XDPMode = a.Mode()
			if c, err := a.Stats(); err == nil {
				s.Steering = SteeringStats{
					PassOther: c[afxdp.StatPassOther], PassHost: c[afxdp.StatPassHost],
					PassTruncated: c[afxdp.StatPassTruncated], PassFragment: c[afxdp.StatPassFragment],
					RedirectPod: c[afxdp.StatRedirectPod], RedirectIPIP: c[afxdp.StatRedirectIPIP],
					RedirectVXLAN: c[afxdp.StatRedirectVXLAN], NoSocket: c[afxdp.StatNoSocket],
				}
			}
		}
		if len(e.workers) > 0 {
			if sk := e.workers[0].socket(is.port); sk != nil {
				s.SocketMode, s.SocketModeReason = sk.Mode(), sk.ModeReason()
			}
		}
		st.Interfaces = append(st.Interfaces, s)
	}
	running := false
	for _, w := range e.workers {
		for i, s := range w.sockets {
			if s == nil {
				continue
			}
			st.Ports = append(st.Ports, PortStats{Interface: e.ifaceName(i), Port: datapath.PortID(i), Queue: w.queue,
				Worker: w.id, SocketMode: s.Mode(), SocketModeReason: s.ModeReason(), TxBudget: s.TxBudget(),
				XDP: s.Stats()})
		}
		for i, p := range w.pports {
			if p == nil {
				continue
			}
			st.Ports = append(st.Ports, PortStats{Interface: e.ifaceName(i), Port: datapath.PortID(i), Queue: w.queue,
				Worker: w.id, Packet: p.Stats()})
		}
		ws := WorkerStats{Queue: w.queue, Frames: w.frames(), Running: !w.stopped()}
		if w.dp != nil {
			ws.Counters = w.dp.Counters()
		}
		if !ws.Running {
			ws.Loop, ws.Err = w.loop, w.err
		}
		running = running || ws.Running
		st.Workers = append(st.Workers, ws)
		st.Frames.Total += ws.Frames.Total
		st.Frames.Free += ws.Frames.Free
		st.Frames.Fill += ws.Frames.Fill
		st.Frames.App += ws.Frames.App
		st.Frames.Tx += ws.Frames.Tx
		st.InvalidReleases += w.invalidReleases()
	}
	st.Running = running
	return st
}

// ifaceName returns the name of the interface in slot i ("" if none).
func (e *Engine) ifaceName(i int) string {
	if i < len(e.ifaces) && e.ifaces[i] != nil {
		return e.ifaces[i].name
	}
	return ""
}

// Close stops the workers (they drain: frames in flight are processed and
// TX completions awaited), checks that every frame came back, detaches the
// steering programs, closes the sockets and frees the frame memory, leaving
// the interfaces as Start found them. It returns the first error a worker
// loop ended with, frames that leaked, and teardown errors. Calling it
// again returns the same result.
func (e *Engine) Close() error {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return e.closeErr
	}
	e.closed = true
	e.cancel()
	<-e.done
	var errs []error
	if err := e.Err(); err != nil {
		errs = append(errs, err)
	}
	final := e.stats()
	e.final = &final
	for _, w := range e.workers {
		if err := w.checkDrained(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := e.teardown(); err != nil {
		errs = append(errs, err)
	}
	e.closeErr = errors.Join(errs...)
	if e.closeErr != nil {
		e.log.Error("engine closed with errors", "err", e.closeErr)
	} else {
		e.log.Info("engine closed", "frames", final.Frames)
	}
	return e.closeErr
}
