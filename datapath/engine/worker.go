package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afpacket"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

// worker is the dataplane of one queue: its frame memory, one socket per
// interface bound to that queue, and the pipeline. Between setup and the
// start of its loop, and again after the loop stopped, it is owned by the
// engine's setup/teardown code; in between by its loop goroutine, and the
// engine changes its ports only through ctl (functions the loop runs
// between batches).
type worker struct {
	id    int
	queue int

	// AF_XDP: one UMEM shared by the sockets (index = PortID, nil: none).
	// The lists are the engine's bookkeeping (guarded by Engine.mu for
	// Stats); the loop reaches the ports through dp and its PortSet.
	umem    *afxdp.UMEM
	sockets []*afxdp.Socket
	// AF_PACKET: one pool shared by the ports (index = PortID).
	pool   *afpacket.Pool
	pports []*afpacket.Port

	dp  *datapath.Worker
	ctl *afxdp.Control

	// Set by the loop goroutine before done is closed.
	done chan struct{}
	loop afxdp.LoopStats
	err  error
}

func newWorker(id, queue int) *worker {
	return &worker{id: id, queue: queue, ctl: afxdp.NewControl()}
}

// setSocket records the socket of slot port.
func (w *worker) setSocket(port datapath.PortID, s *afxdp.Socket) {
	for int(port) >= len(w.sockets) {
		w.sockets = append(w.sockets, nil)
	}
	w.sockets[port] = s
}

// setPacketPort records the AF_PACKET port of slot port.
func (w *worker) setPacketPort(port datapath.PortID, p *afpacket.Port) {
	for int(port) >= len(w.pports) {
		w.pports = append(w.pports, nil)
	}
	w.pports[port] = p
}

// socket returns the socket of slot port (nil: none).
func (w *worker) socket(port datapath.PortID) *afxdp.Socket {
	if int(port) < len(w.sockets) {
		return w.sockets[port]
	}
	return nil
}

// packetPort returns the AF_PACKET port of slot port (nil: none).
func (w *worker) packetPort(port datapath.PortID) *afpacket.Port {
	if int(port) < len(w.pports) {
		return w.pports[port]
	}
	return nil
}

// ports returns the worker's ports as datapath.Ports by PortID (nil: an
// empty slot) and as pollables.
func (w *worker) ports() ([]datapath.Port, []afxdp.Pollable) {
	var out []datapath.Port
	var poll []afxdp.Pollable
	for _, s := range w.sockets {
		if s == nil {
			out = append(out, nil) // a nil interface, not a nil *Socket
			continue
		}
		out = append(out, s)
		poll = append(poll, s)
	}
	for _, p := range w.pports {
		if p == nil {
			out = append(out, nil)
			continue
		}
		out = append(out, p)
		poll = append(poll, p)
	}
	return out, poll
}

// start builds the pipeline over the worker's ports and starts its loop.
func (w *worker) start(ctx context.Context, cfg *Config) error {
	ports, poll := w.ports()
	dp, err := datapath.NewWorker(cfg.Tables, datapath.WorkerConfig{Ports: ports, BatchSize: cfg.BatchSize})
	if err != nil {
		return fmt.Errorf("worker %d: %w", w.id, err)
	}
	w.dp = dp
	w.done = make(chan struct{})
	go w.run(ctx, cfg, poll)
	return nil
}

// exec runs fn on the worker's loop goroutine between batches. If the loop
// has stopped, the engine owns the worker: fn runs on the caller's
// goroutine, with a nil PortSet, once the loop goroutine is gone.
func (w *worker) exec(fn func(ps *afxdp.PortSet) error) error {
	err := w.ctl.Do(fn)
	if errors.Is(err, afxdp.ErrLoopStopped) {
		if w.done != nil {
			<-w.done
		}
		return fn(nil)
	}
	return err
}

// run is the worker goroutine: afxdp.Run locks it to an OS thread and
// drains on stop, so every frame is back with its UMEM or pool when it
// returns.
func (w *worker) run(ctx context.Context, cfg *Config, poll []afxdp.Pollable) {
	defer close(w.done)
	if w.id < len(cfg.WorkerCPUs) && cfg.WorkerCPUs[w.id] >= 0 {
		cpu := cfg.WorkerCPUs[w.id]
		// Locked and never unlocked: afxdp.Run locks the goroutine to
		// this same thread, and when the goroutine ends the runtime
		// retires the thread instead of reusing it with our affinity.
		runtime.LockOSThread()
		var set unix.CPUSet
		if cpu < runtime.NumCPU() {
			set.Set(cpu)
		}
		if set.Count() == 0 {
			cfg.Logger.Warn("cannot pin worker: no such CPU", "worker", w.id, "cpu", cpu, "cpus", runtime.NumCPU())
		} else if err := unix.SchedSetaffinity(0, &set); err != nil {
			cfg.Logger.Warn("cannot pin worker", "worker", w.id, "cpu", cpu, "err", err)
		}
	}
	if cfg.WorkerNice != 0 {
		// Niceness is per thread on Linux: lock the goroutine to the
		// thread it is set on (afxdp.Run locks it again and keeps it).
		runtime.LockOSThread()
		if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), cfg.WorkerNice); err != nil {
			cfg.Logger.Warn("cannot set the worker's nice value", "worker", w.id, "nice", cfg.WorkerNice, "err", err)
		}
	}
	// Flow records of policy Log rules are drained between batches (only
	// when there are some: draining an empty ring costs a comparison).
	logRecord := func(r *acl.LogRecord) {
		cfg.Logger.Info("policy log", "worker", w.id, "verdict", r.Verdict.String(),
			"proto", r.Packet.Proto, "src_port", r.Packet.SrcPort, "dst_port", r.Packet.DstPort,
			"src", logAddr(&r.Packet, true), "dst", logAddr(&r.Packet, false), "generation", r.Generation)
	}
	batch := func() int {
		n := w.dp.Poll()
		if n > 0 {
			w.dp.DrainPolicyLogs(logRecord)
		}
		return n
	}
	w.loop, w.err = afxdp.Run(ctx, afxdp.LoopConfig{Ports: poll, Control: w.ctl, Mode: cfg.PollMode}, batch)
	if w.err != nil {
		cfg.Logger.Error("worker loop ended", "worker", w.id, "queue", w.queue, "err", w.err)
	}
}

// logAddr formats a flow record's source or destination address.
func logAddr(p *acl.Packet, src bool) string {
	if p.Family == acl.IPv4 {
		v := p.Dst4
		if src {
			v = p.Src4
		}
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
	}
	if src {
		return netip.AddrFrom16(p.Src6).String()
	}
	return netip.AddrFrom16(p.Dst6).String()
}

// stopped reports whether the loop goroutine exited (or never started).
func (w *worker) stopped() bool {
	if w.done == nil {
		return true
	}
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// frames returns the frame counts of the worker's UMEM or pool.
func (w *worker) frames() afxdp.FrameCounts {
	switch {
	case w.umem != nil:
		return w.umem.Counts()
	case w.pool != nil:
		free := w.pool.FreeFrames()
		// Pool frames are either free or held by the dataplane: sendmmsg
		// copies, so nothing is in flight.
		return afxdp.FrameCounts{Total: w.pool.Frames(), Free: free, App: w.pool.Frames() - free}
	}
	return afxdp.FrameCounts{}
}

func (w *worker) invalidReleases() uint64 {
	switch {
	case w.umem != nil:
		return w.umem.InvalidReleases()
	case w.pool != nil:
		return w.pool.InvalidReleases()
	}
	return 0
}

// checkDrained reports frames the dataplane still holds or has in flight
// after the loop stopped.
func (w *worker) checkDrained() error {
	c := w.frames()
	if c.App != 0 || c.Tx != 0 {
		return fmt.Errorf("worker %d: %d frames held and %d in flight after the drain (%+v)", w.id, c.App, c.Tx, c)
	}
	return nil
}

// close closes the worker's sockets and frame memory; the loop must have
// stopped. It reports frames that did not come back.
func (w *worker) close() error {
	var errs []error
	for _, s := range w.sockets {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if w.umem != nil {
		if c := w.umem.Counts(); c.Free != c.Total {
			errs = append(errs, fmt.Errorf("worker %d: %d of %d frames not back in the umem after closing its sockets (%+v)",
				w.id, c.Total-c.Free, c.Total, c))
		}
		errs = append(errs, w.umem.Close())
	}
	for _, p := range w.pports {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	if w.pool != nil {
		if free, n := w.pool.FreeFrames(), w.pool.Frames(); free != n {
			errs = append(errs, fmt.Errorf("worker %d: %d of %d pool frames not returned", w.id, n-free, n))
		}
		errs = append(errs, w.pool.Close())
	}
	return errors.Join(errs...)
}
