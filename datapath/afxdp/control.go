package afxdp

import (
	"errors"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrLoopStopped is returned by Control.Do when the loop is not running
// (it ended, or failed to start): nothing ran.
var ErrLoopStopped = errors.New("worker loop stopped")

// Control delivers changes to a running worker loop (Run). The loop owns
// its ports, its UMEM and its datapath.Worker; other goroutines change them
// by handing Do a function, which the loop runs on its own goroutine
// between two batches, never in the middle of one.
//
// Cost when nothing changes: one atomic load per loop turn. Latency of a
// change: a busy loop picks it up after the batch in progress; a loop
// sleeping in poll(2) (adaptive or interrupt mode) is woken at once through
// the eventfd it already polls for its stop signal, so a change never waits
// for the poll timeout (50 ms by default, the alternative way of bounding
// that wait, which would add its whole length to every pod attach).
//
// A Control serves one Run at a time; Do may be called from any goroutine,
// concurrently.
type Control struct {
	pending atomic.Bool

	mu      sync.Mutex
	queue   []*controlReq
	efd     int  // the running loop's eventfd; -1 when none
	started bool // a loop ran or runs
	stopped bool // that loop ended
}

type controlReq struct {
	fn   func(*PortSet) error
	done chan error
}

// NewControl returns a Control for a loop not yet started. Functions given
// to Do before the loop starts run on its first turn.
func NewControl() *Control { return &Control{efd: -1} }

// Do runs fn on the loop's goroutine between batches and returns fn's
// error, waking the loop if it sleeps. fn gets the loop's pollable set to
// add or remove ports. It returns ErrLoopStopped without running fn when
// the loop has ended (or ends before reaching fn). fn must not block for
// long: the loop forwards nothing while it runs.
func (c *Control) Do(fn func(*PortSet) error) error {
	r := &controlReq{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return ErrLoopStopped
	}
	c.queue = append(c.queue, r)
	c.pending.Store(true)
	if c.efd >= 0 {
		one := [8]byte{1}
		unix.Write(c.efd, one[:])
	}
	c.mu.Unlock()
	return <-r.done
}

// Running reports whether a loop runs with this Control.
func (c *Control) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started && !c.stopped
}

// start attaches the loop's eventfd.
func (c *Control) start(efd int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("run loop: control already used by another loop")
	}
	c.started, c.efd = true, efd
	return nil
}

// stop detaches the loop and fails what is still queued.
func (c *Control) stop() {
	c.mu.Lock()
	q := c.queue
	c.queue, c.stopped, c.efd = nil, true, -1
	c.pending.Store(false)
	c.mu.Unlock()
	for _, r := range q {
		r.done <- ErrLoopStopped
	}
}

// run runs the queued functions and returns how many.
func (c *Control) run(ps *PortSet) int {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	c.pending.Store(false)
	c.mu.Unlock()
	for _, r := range q {
		r.done <- r.fn(ps)
	}
	return len(q)
}

// PortSet is the set of pollables of a running loop, as Control functions
// see it: what the loop waits on and services.
type PortSet struct {
	ports   []Pollable
	changed bool
}

// Add adds p (a second Add of the same pollable is ignored).
func (s *PortSet) Add(p Pollable) {
	for _, o := range s.ports {
		if o == p {
			return
		}
	}
	s.ports = append(s.ports, p)
	s.changed = true
}

// Remove removes p and reports whether it was there.
func (s *PortSet) Remove(p Pollable) bool {
	for i, o := range s.ports {
		if o == p {
			s.ports = append(s.ports[:i], s.ports[i+1:]...)
			s.changed = true
			return true
		}
	}
	return false
}

// Len returns the number of pollables.
func (s *PortSet) Len() int { return len(s.ports) }
