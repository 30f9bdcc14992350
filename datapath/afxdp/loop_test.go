package afxdp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
)

func TestParsePollMode(t *testing.T) {
	for _, m := range []PollMode{PollAdaptive, PollBusy, PollInterrupt} {
		got, err := ParsePollMode(m.String())
		if err != nil || got != m {
			t.Errorf("%s: %v %v", m, got, err)
		}
	}
	if _, err := ParsePollMode("spin"); err == nil {
		t.Error("accepted spin")
	}
}

// TestLoopModesIdle runs each poll mode on an idle (fake) socket: busy
// never sleeps, interrupt sleeps at once, adaptive sleeps after its window.
func TestLoopModesIdle(t *testing.T) {
	for _, mode := range []PollMode{PollBusy, PollAdaptive, PollInterrupt} {
		t.Run(mode.String(), func(t *testing.T) {
			u := newFakeUMEM(64, 2048)
			s, _ := newFakeSocket(u, 0, 16)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			frames := make([]Frame, 16)
			st, err := Run(ctx, LoopConfig{Ports: []Pollable{s}, Mode: mode, PollTimeout: 10 * time.Millisecond},
				func() int { n := s.Receive(frames); s.Release(frames[:n]); return n })
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", st)
			switch mode {
			case PollBusy:
				if st.Sleeps != 0 || st.EmptyPolls < 1000 {
					t.Errorf("busy: %+v", st)
				}
			case PollInterrupt:
				if st.Sleeps == 0 || st.Sleeps != st.EmptyPolls {
					t.Errorf("interrupt: %+v", st)
				}
			case PollAdaptive:
				// About one window of spinning per 10ms sleep.
				if st.Sleeps == 0 || st.Sleeps > 20 || st.EmptyPolls <= st.Sleeps {
					t.Errorf("adaptive: %+v", st)
				}
			}
		})
	}
}

// TestLoopForward runs the worker loop on two real sockets sharing a UMEM,
// forwarding everything from one veth to the other, then stops it and
// checks that every frame is back in the UMEM.
func TestLoopForward(t *testing.T) {
	r := newRig(t)
	in, inPeer := r.link(t, "1", 1500, 0)
	out, outPeer := r.link(t, "2", 1500, 0)
	u := newTestUMEM(t, UMEMConfig{Frames: 4096, FrameSize: 2048})
	st := newTestSteering(t, "10.200.0.0/16")
	sIn, _ := setupSocket(t, r, u, st, in, 0, XDPAuto, 0)
	sOut, _ := setupSocket(t, r, u, st, out, 0, XDPAuto, 1)
	rawIn := nstest.OpenRaw(t, r.Peer, inPeer)
	rawOut := nstest.OpenRaw(t, r.Peer, outPeer)

	ctx, cancel := context.WithCancel(context.Background())
	frames := make([]Frame, 64)
	batch := func() int {
		n := sIn.Receive(frames)
		if n > 0 {
			sOut.Transmit(frames[:n])
		}
		return n
	}
	type result struct {
		st  LoopStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := Run(ctx, LoopConfig{Ports: []Pollable{sIn, sOut}}, batch)
		done <- result{st, err}
	}()
	// The loop owns the sockets until it returns: stop it before the
	// UMEM is closed, also when the test fails.
	var res result
	stopped := false
	stop := func() {
		if !stopped {
			cancel()
			res, stopped = <-done, true
		}
	}
	t.Cleanup(stop)
	// Bursts of 100: a veth in native XDP mode queues at most 256 frames
	// before its NAPI poll runs.
	const n, burst = 2000, 100
	for b := 0; b < n; b += burst {
		for i := b; i < b+burst; i++ {
			must(t, rawIn.Send(udpFrame(t, "10.100.0.1", "10.200.3.3", 1, 2, fmt.Appendf(nil, "loop-%04d", i))))
		}
		for i := b; i < b+burst; i++ {
			if _, err := rawOut.Recv(3*time.Second, hasPrefix("loop-")); err != nil {
				t.Fatalf("captured %d of %d: %v (in %+v)", i, n, err, sIn.Stats())
			}
		}
	}
	time.Sleep(150 * time.Millisecond) // idle: the adaptive loop goes to sleep
	stop()
	if res.err != nil {
		t.Fatal(res.err)
	}
	t.Logf("loop %+v; in %+v; out %+v", res.st, sIn.Stats(), sOut.Stats())
	if res.st.Sleeps == 0 {
		t.Error("adaptive loop never slept while idle")
	}
	c := checkCounts(t, u)
	if c.App != 0 || c.Tx != 0 {
		t.Fatalf("after stop: %+v", c)
	}
	must(t, sIn.Close())
	must(t, sOut.Close())
	if c := checkCounts(t, u); c.Free != c.Total {
		t.Fatalf("after close: %+v", c)
	}
}
