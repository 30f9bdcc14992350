package afxdp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
)

// TestControlWakesSleepingLoop: a loop asleep in poll(2) with a long
// timeout (interrupt and adaptive modes) runs a Control function at once,
// on the loop's goroutine; the function sees and changes the pollable set;
// functions queued before the loop starts run on its first turn; after the
// loop ends Do fails with ErrLoopStopped without running anything.
func TestControlWakesSleepingLoop(t *testing.T) {
	for _, mode := range []PollMode{PollInterrupt, PollAdaptive, PollBusy} {
		t.Run(mode.String(), func(t *testing.T) {
			u := newFakeUMEM(256, 2048)
			a, _ := newFakeSocket(u, 0, 16)
			b, _ := newFakeSocket(u, 1, 16)
			ctl := NewControl()
			early := make(chan int, 1)
			go func() {
				// Queued before Run: runs on its first turn.
				ctl.Do(func(ps *PortSet) error { early <- ps.Len(); return nil })
			}()
			for !ctlQueued(ctl) {
				time.Sleep(time.Millisecond)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			frames := make([]Frame, 16)
			inLoop := make(chan struct{})
			var loopGoroutine bool
			type result struct {
				st  LoopStats
				err error
			}
			res := make(chan result, 1)
			go func() {
				st, err := Run(ctx, LoopConfig{Ports: []Pollable{a}, Control: ctl, Mode: mode, PollTimeout: 10 * time.Second},
					func() int {
						select {
						case <-inLoop:
						default:
							close(inLoop)
						}
						n := a.Receive(frames)
						a.Release(frames[:n])
						return n
					})
				res <- result{st, err}
			}()
			if n := <-early; n != 1 {
				t.Fatalf("early function saw %d pollables, want 1", n)
			}
			<-inLoop
			time.Sleep(20 * time.Millisecond) // asleep in poll(2) by now (interrupt/adaptive)
			for i, want := range []int{2, 1} {
				t0 := time.Now()
				var got int
				err := ctl.Do(func(ps *PortSet) error {
					if i == 0 {
						ps.Add(b)
						ps.Add(b) // ignored
					} else if !ps.Remove(b) || ps.Remove(b) {
						return errors.New("remove")
					}
					got = ps.Len()
					loopGoroutine = true
					return nil
				})
				if err != nil || got != want {
					t.Fatalf("Do %d: %v, %d pollables, want %d", i, err, got, want)
				}
				if d := time.Since(t0); d > 2*time.Second {
					t.Fatalf("Do took %v: the sleeping loop was not woken", d)
				} else {
					t.Logf("Do %d returned after %v", i, d)
				}
			}
			if err := ctl.Do(func(*PortSet) error { return errTest }); !errors.Is(err, errTest) {
				t.Fatalf("Do returned %v, want the function's error", err)
			}
			if !ctl.Running() || !loopGoroutine {
				t.Fatal("control not running")
			}
			cancel()
			r := <-res
			if r.err != nil || r.st.ControlOps != 4 {
				t.Fatalf("loop: %v %+v, want 4 control ops", r.err, r.st)
			}
			ran := false
			if err := ctl.Do(func(*PortSet) error { ran = true; return nil }); !errors.Is(err, ErrLoopStopped) || ran {
				t.Fatalf("Do after stop: %v (ran %v), want ErrLoopStopped", err, ran)
			}
			if ctl.Running() {
				t.Fatal("control running after the loop ended")
			}
		})
	}
}

var errTest = errors.New("test error")

func ctlQueued(c *Control) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue) > 0
}

// TestFakeShutdownForget: a socket shut down while its frames are lent to
// the kernel (fill ring) and in flight (TX) gets them back to the UMEM on
// Forget; Forget refuses an open socket; the freed socket id is reused.
func TestFakeShutdownForget(t *testing.T) {
	u := newFakeUMEM(256, 2048)
	a, ka := newFakeSocket(u, 0, 32)
	b, _ := newFakeSocket(u, 1, 32)
	frames := make([]Frame, 8)
	if n := ka.deliver(testPacket(60, 1), testPacket(60, 2), testPacket(60, 3)); n != 3 {
		t.Fatal("deliver")
	}
	n := a.Receive(frames)
	if n != 3 || b.Transmit(frames[:n]) != 3 {
		t.Fatalf("received %d", n)
	}
	c := checkCounts(t, u)
	if c.Tx != 3 || c.Fill != 64 {
		t.Fatalf("before: %+v", c)
	}
	if err := u.Forget(b); err == nil {
		t.Fatal("Forget accepted an open socket")
	}
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := u.Forget(b); err != nil {
		t.Fatal(err)
	}
	c = checkCounts(t, u)
	if c.Tx != 0 || c.Fill != 32 || c.Free != 256-32 {
		t.Fatalf("after forgetting b: %+v, want a's 32 fill frames only", c)
	}
	if id, _ := u.freeID(); id != b.id {
		t.Fatalf("free id %d, want b's %d again", id, b.id)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if c := checkCounts(t, u); c.Free != 256 || u.bound {
		t.Fatalf("after closing every socket: %+v (bound %v)", c, u.bound)
	}
}

// TestRuntimeSocket: on a loop forwarding between two real sockets, a third
// socket on another veth is opened while the loop runs (OpenSocket from
// another goroutine), handed to the loop through Control, registered, and
// carries traffic; then it is unregistered, taken out of the loop, shut
// down from outside and forgotten on the loop, and every frame is back.
// The UMEM's first socket is removed too, and a new socket registers the
// UMEM again.
func TestRuntimeSocket(t *testing.T) {
	r := newRig(t)
	in, inPeer := r.link(t, "1", 1500, 0)
	out, outPeer := r.link(t, "2", 1500, 0)
	extra, extraPeer := r.link(t, "3", 1500, 0)
	u := newTestUMEM(t, UMEMConfig{Frames: 4096, FrameSize: 2048})
	st := newTestSteering(t, "10.200.0.0/16")
	sIn, aIn := setupSocket(t, r, u, st, in, 0, XDPAuto, 0)
	sOut, _ := setupSocket(t, r, u, st, out, 0, XDPAuto, 1)
	rawIn := nstest.OpenRaw(t, r.Peer, inPeer)
	rawOut := nstest.OpenRaw(t, r.Peer, outPeer)
	rawExtra := nstest.OpenRaw(t, r.Peer, extraPeer)

	// The loop forwards everything received on any receiving socket to
	// the socket in dst; both lists are the loop's.
	rxSocks := []*Socket{sIn}
	dst := sOut
	ctx, cancel := context.WithCancel(context.Background())
	ctl := NewControl()
	frames := make([]Frame, 64)
	batch := func() int {
		total := 0
		for _, s := range rxSocks {
			n := s.Receive(frames)
			if n > 0 {
				dst.Transmit(frames[:n])
			}
			total += n
		}
		return total
	}
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, LoopConfig{Ports: []Pollable{sIn, sOut}, Control: ctl, Mode: PollInterrupt}, batch)
		done <- err
	}()
	stopped := false
	t.Cleanup(func() { // before the UMEM closes
		if !stopped {
			cancel()
			<-done
		}
	})
	send := func(raw *nstest.Raw, payload string) {
		t.Helper()
		if err := raw.Send(udpFrame(t, "10.100.0.1", "10.200.0.9", 1000, 2000, []byte(payload))); err != nil {
			t.Fatal(err)
		}
	}
	send(rawIn, "before")
	if _, err := rawOut.Recv(2*time.Second, hasPrefix("before")); err != nil {
		t.Fatal("not forwarded before the change:", err)
	}

	// Attach the extra socket at runtime and send through it.
	var sx *Socket
	var ax *Attachment
	r.do(t, func() (err error) {
		if ax, err = st.Attach(extra, XDPAuto); err != nil {
			return err
		}
		sx, err = u.OpenSocket(SocketConfig{Interface: extra, Port: 2, RxSize: 512, TxSize: 512, FillSize: 512,
			CompletionSize: 512})
		return err
	})
	t.Cleanup(func() { ax.Close() })
	if err := ctl.Do(func(ps *PortSet) error {
		rxSocks = append(rxSocks, sx)
		dst = sx // everything now leaves through the extra veth
		ps.Add(sx)
		sx.Service()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := ax.Register(sx); err != nil {
		t.Fatal(err)
	}
	send(rawIn, "to-extra")
	if _, err := rawExtra.Recv(2*time.Second, hasPrefix("to-extra")); err != nil {
		t.Fatal("not forwarded to the runtime socket:", err)
	}
	send(rawExtra, "from-extra")
	if _, err := rawExtra.Recv(2*time.Second, hasPrefix("from-extra")); err != nil {
		t.Fatal("runtime socket did not receive:", err)
	}

	// Remove the extra socket and the UMEM's first socket (sIn).
	for _, s := range []*Socket{sx, sIn} {
		if err := ctl.Do(func(ps *PortSet) error {
			ps.Remove(s)
			for i, o := range rxSocks {
				if o == s {
					rxSocks = append(rxSocks[:i], rxSocks[i+1:]...)
				}
			}
			dst = sOut
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		for {
			var pending int
			ctl.Do(func(*PortSet) error { s.Service(); pending = s.TxOutstanding(); return nil })
			if pending == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := s.Shutdown(); err != nil {
			t.Fatal(err)
		}
		if err := ctl.Do(func(*PortSet) error { return u.Forget(s) }); err != nil {
			t.Fatal(err)
		}
	}
	if len(u.sockets) != 1 || u.sockets[0] != sOut {
		t.Fatalf("umem sockets after the removals: %d", len(u.sockets))
	}

	// A new socket on the first veth shares the UMEM with sOut.
	// The kernel releases the closed socket's queue asynchronously.
	var sIn2 *Socket
	for deadline := time.Now().Add(2 * time.Second); ; {
		err := r.DP.Do(func() (err error) {
			sIn2, err = u.OpenSocket(SocketConfig{Interface: in, Port: 0, RxSize: 512, TxSize: 512, FillSize: 512,
				CompletionSize: 512})
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := ctl.Do(func(ps *PortSet) error {
		ps.Add(sIn2)
		rxSocks = append(rxSocks, sIn2)
		sIn2.Service()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := aIn.Register(sIn2); err != nil {
		t.Fatal(err)
	}
	send(rawIn, "after")
	if _, err := rawOut.Recv(2*time.Second, hasPrefix("after")); err != nil {
		t.Fatal("not forwarded after re-adding the first veth:", err)
	}

	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c := checkCounts(t, u)
	if c.App != 0 || c.Tx != 0 || u.InvalidReleases() != 0 {
		t.Fatalf("after the loop: %+v, invalid %d", c, u.InvalidReleases())
	}
}
