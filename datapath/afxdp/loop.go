package afxdp

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// PollMode is how a worker loop waits for traffic.
type PollMode uint8

// Poll modes.
const (
	// PollAdaptive (the default) busy-polls while traffic flows and for
	// BusyWindow after the last frame, then sleeps in poll(2) until a
	// socket is readable or PollTimeout passes: full speed under load, no
	// core burnt on an idle node.
	PollAdaptive PollMode = iota
	// PollBusy never sleeps: lowest latency, one core per worker.
	PollBusy
	// PollInterrupt sleeps in poll(2) whenever a batch comes back empty.
	PollInterrupt
)

func (m PollMode) String() string {
	switch m {
	case PollAdaptive:
		return "adaptive"
	case PollBusy:
		return "busy"
	case PollInterrupt:
		return "interrupt"
	}
	return fmt.Sprintf("PollMode(%d)", uint8(m))
}

// ParsePollMode parses "adaptive", "busy" or "interrupt".
func ParsePollMode(s string) (PollMode, error) {
	for _, m := range []PollMode{PollAdaptive, PollBusy, PollInterrupt} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown poll mode %q (want adaptive, busy or interrupt)", s)
}

// Pollable is a port a loop can wait on and keep serviced: an AF_XDP
// Socket, or an AF_PACKET port.
type Pollable interface {
	// FD is polled for POLLIN while the loop sleeps.
	FD() int
	// Service does housekeeping between batches: reclaim completed TX
	// frames, push pending TX, refill receive buffers.
	Service()
}

// LoopConfig configures Run. Zero fields take the defaults.
type LoopConfig struct {
	// Ports are waited on and serviced; normally every port of the
	// worker. Control may change the set while the loop runs.
	Ports []Pollable
	// Control, if set, delivers changes to the running loop (ports added
	// or removed, other work on the loop's goroutine); see Control.
	Control *Control
	// Mode is the poll mode (default PollAdaptive).
	Mode PollMode
	// BusyWindow is how long the adaptive mode keeps busy-polling after
	// the last frame (default 200µs).
	BusyWindow time.Duration
	// PollTimeout bounds one sleep in poll(2) (default 50ms); completions
	// are reclaimed at least this often on an idle loop.
	PollTimeout time.Duration
	// DrainTimeout bounds the wait for TX completions on stop (default
	// 1s).
	DrainTimeout time.Duration
}

// LoopStats says how a loop spent its time.
type LoopStats struct {
	// Batches counts calls of the batch function that moved frames,
	// EmptyPolls those that did not, Sleeps the poll(2) calls.
	Batches, EmptyPolls, Sleeps uint64
	// ControlOps counts the functions run for Control.Do.
	ControlOps uint64
}

// Run runs a worker loop on a locked OS thread until ctx is done: it calls
// batch (wired to datapath.Worker.Poll: receive, process, transmit one batch
// from every port; it returns how many frames it received), services the
// ports, runs what Control.Do hands it between batches, and waits according
// to the poll mode. On stop it drains: batch is called until it finds
// nothing, then TX completions are awaited (up to DrainTimeout) so that
// every frame is back with its UMEM when Run returns. Run returns nil after
// a stop, or the error that ended it.
func Run(ctx context.Context, cfg LoopConfig, batch func() int) (LoopStats, error) {
	if cfg.BusyWindow == 0 {
		cfg.BusyWindow = 200 * time.Microsecond
	}
	if cfg.PollTimeout == 0 {
		cfg.PollTimeout = 50 * time.Millisecond
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = time.Second
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ctl := cfg.Control

	// A stop, and a Control request, must interrupt poll(2): an eventfd
	// written on cancellation and by Control.Do is polled with the ports.
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		if ctl != nil {
			ctl.stop()
		}
		return LoopStats{}, fmt.Errorf("run loop: eventfd: %w", err)
	}
	defer unix.Close(efd)
	if ctl != nil {
		// Runs before the eventfd is closed: no Do writes to a closed fd.
		defer ctl.stop()
		if err := ctl.start(efd); err != nil {
			return LoopStats{}, err
		}
	}
	var stop atomic.Bool
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			stop.Store(true)
			one := [8]byte{1}
			unix.Write(efd, one[:])
		case <-done:
		}
	}()
	ps := &PortSet{ports: append([]Pollable(nil), cfg.Ports...)}
	var pfds []unix.PollFd
	rebuild := func() {
		pfds = pfds[:0]
		for _, p := range ps.ports {
			pfds = append(pfds, unix.PollFd{Fd: int32(p.FD()), Events: unix.POLLIN})
		}
		pfds = append(pfds, unix.PollFd{Fd: int32(efd), Events: unix.POLLIN})
	}
	rebuild()
	timeoutMs := int(max(cfg.PollTimeout.Milliseconds(), 1))

	var st LoopStats
	// emptyRun counts the empty turns since the last work; the adaptive
	// mode's busy window is timed from the first of them (idleSince), and
	// the clock is read only every idleClockTurns turns: a clock read costs
	// as much as an empty turn.
	emptyRun := 0
	var idleSince time.Time
	for !stop.Load() {
		// One atomic load per turn when nothing changes.
		if ctl != nil && ctl.pending.Load() {
			n := ctl.run(ps)
			st.ControlOps += uint64(n)
			if ps.changed {
				ps.changed = false
				rebuild()
			}
			emptyRun = 0 // the change may bring traffic: spin a window
		}
		if batch() > 0 {
			st.Batches++
			emptyRun = 0
			continue
		}
		st.EmptyPolls++
		for _, p := range ps.ports {
			p.Service()
		}
		switch cfg.Mode {
		case PollBusy:
			continue
		case PollAdaptive:
			if emptyRun++; emptyRun == 1 {
				idleSince = time.Now()
				continue
			}
			if emptyRun%idleClockTurns != 0 || time.Since(idleSince) < cfg.BusyWindow {
				continue
			}
		}
		st.Sleeps++
		for i := range pfds {
			pfds[i].Revents = 0
		}
		if _, err := unix.Poll(pfds, timeoutMs); err != nil && !errors.Is(err, unix.EINTR) {
			return st, fmt.Errorf("run loop: poll: %w", err)
		}
		if pfds[len(pfds)-1].Revents&unix.POLLIN != 0 {
			// Reset the eventfd so the next sleep blocks again.
			var buf [8]byte
			unix.Read(efd, buf[:])
		}
		emptyRun = 0 // woken: spin for one window before sleeping again
	}
	return st, drain(ps.ports, cfg.DrainTimeout, batch)
}

// idleClockTurns is how often (in empty turns) an adaptive loop reads the
// clock to see whether its busy window is over.
const idleClockTurns = 64

// TxPending is implemented by pollables that can have transmitted frames
// in flight (AF_XDP sockets): the drain waits until none is.
type TxPending interface {
	TxOutstanding() int
}

// drain processes what is still on the RX rings and waits for TX
// completions.
func drain(ports []Pollable, timeout time.Duration, batch func() int) error {
	for i := 0; i < 1000 && batch() > 0; i++ {
	}
	deadline := time.Now().Add(timeout)
	for {
		pending := 0
		for _, p := range ports {
			p.Service()
			if s, ok := p.(TxPending); ok {
				pending += s.TxOutstanding()
			}
		}
		if pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("run loop: %d frames still in flight after %v", pending, timeout)
		}
		time.Sleep(100 * time.Microsecond)
	}
}
