package afxdp

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/unix"
)

// checkCounts verifies the published counts against the per-frame states:
// every frame is in exactly one state and the counters agree.
func checkCounts(t testing.TB, u *UMEM) FrameCounts {
	t.Helper()
	c := u.Counts()
	var byState [4]int
	for _, st := range u.state {
		byState[st]++
	}
	want := FrameCounts{Total: u.nframes, Free: byState[stateFree], Fill: byState[stateFill],
		App: byState[stateApp], Tx: byState[stateTx]}
	if c != want {
		t.Fatalf("counts %+v, frame states say %+v", c, want)
	}
	if c.Free+c.Fill+c.App+c.Tx != c.Total {
		t.Fatalf("counts %+v do not add up to %d", c, c.Total)
	}
	return c
}

func testPacket(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i)
	}
	return p
}

func TestFakeReceiveTransmitRelease(t *testing.T) {
	u := newFakeUMEM(256, 2048)
	s, k := newFakeSocket(u, 3, 64)
	c := checkCounts(t, u)
	if c.Fill != 64 || c.Free != 192 {
		t.Fatalf("after setup: %+v, want 64 in the fill ring", c)
	}
	pkts := [][]byte{testPacket(60, 1), testPacket(1500, 2), testPacket(14, 3)}
	if n := k.deliver(pkts...); n != 3 {
		t.Fatalf("delivered %d", n)
	}
	frames := make([]Frame, 8)
	n := s.Receive(frames)
	if n != 3 {
		t.Fatalf("received %d, want 3", n)
	}
	for i, f := range frames[:n] {
		if !bytes.Equal(f.Packet(), pkts[i]) {
			t.Errorf("frame %d: wrong bytes", i)
		}
		if f.Off != xdpPacketHeadroom || f.Off < s.Headroom() || f.Port != 3 || len(f.Buf) != 2048 {
			t.Errorf("frame %d: off %d port %d buf %d", i, f.Off, f.Port, len(f.Buf))
		}
		if f.Handle%2048 != 0 {
			t.Errorf("frame %d: handle %#x not a frame start", i, f.Handle)
		}
	}
	if c := checkCounts(t, u); c.App != 3 || c.Fill != 64 {
		t.Fatalf("after receive: %+v (fill ring should be topped up)", c)
	}
	// Encapsulate in place: grow the first frame into its headroom.
	frames[0].Off -= 50
	frames[0].Len += 50
	copy(frames[0].Packet(), testPacket(50, 9))
	if sent := s.Transmit(frames[:2]); sent != 2 {
		t.Fatalf("transmitted %d, want 2", sent)
	}
	s.Release(frames[2:3])
	if c := checkCounts(t, u); c.App != 0 || c.Tx != 2 {
		t.Fatalf("after transmit: %+v", c)
	}
	out := k.complete(true)
	if len(out) != 2 || len(out[0]) != 110 || !bytes.Equal(out[1], pkts[1]) {
		t.Fatalf("kernel saw %d packets (lens %d)", len(out), len(out[0]))
	}
	s.Service()
	c = checkCounts(t, u)
	if c.Tx != 0 || c.App != 0 || c.Free+c.Fill != 256 {
		t.Fatalf("after completion: %+v", c)
	}
	st := s.Stats()
	if st.RxPackets != 3 || st.TxPackets != 2 || st.TxBytes != 110+1500 {
		t.Fatalf("stats %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c := checkCounts(t, u); c.Free != 256 {
		t.Fatalf("after close: %+v, want every frame free", c)
	}
}

func TestFakeBadInput(t *testing.T) {
	u := newFakeUMEM(64, 2048)
	s, k := newFakeSocket(u, 0, 16)
	frames := make([]Frame, 16)

	// Runt descriptor, descriptor crossing its frame, address outside the
	// UMEM, and an address the kernel was never lent.
	a := k.takeFill()
	k.deliverDesc(unix.XDPDesc{Addr: a + 256, Len: 10})
	b := k.takeFill()
	k.deliverDesc(unix.XDPDesc{Addr: b + 256, Len: 1900})
	k.deliverDesc(unix.XDPDesc{Addr: 1 << 40, Len: 60})
	k.deliverDesc(unix.XDPDesc{Addr: u.free[0] + 256, Len: 60})
	if n := s.Receive(frames); n != 0 {
		t.Fatalf("received %d bad frames", n)
	}
	if st := s.Stats(); st.RxInvalid != 4 {
		t.Fatalf("rx invalid %d, want 4", st.RxInvalid)
	}
	if u.InvalidReleases() != 2 {
		t.Fatalf("invalid %d, want 2 (foreign addresses)", u.InvalidReleases())
	}
	checkCounts(t, u)

	// TX: runt, past the frame end, negative offset, then a good one.
	if n := k.deliver(testPacket(60, 1), testPacket(60, 2), testPacket(60, 3), testPacket(60, 4)); n != 4 {
		t.Fatal("deliver")
	}
	if n := s.Receive(frames); n != 4 {
		t.Fatalf("received %d", n)
	}
	good := frames[3]
	frames[0].Len = 13
	frames[1].Len = 2048
	frames[2].Off = -1
	if n := s.Transmit(frames[:4]); n != 1 || frames[0].Handle != good.Handle {
		t.Fatalf("transmit queued %d (first %#x, want %#x)", n, frames[0].Handle, good.Handle)
	}
	if st := s.Stats(); st.TxInvalid != 3 {
		t.Fatalf("tx invalid %d, want 3", st.TxInvalid)
	}
	// Releasing a frame twice, or one that is on the TX ring, is refused.
	before := u.InvalidReleases()
	s.Release([]Frame{good, {Handle: 12345}})
	if got := u.InvalidReleases() - before; got != 2 {
		t.Fatalf("double/foreign release counted %d, want 2", got)
	}
	k.complete(false)
	s.Service()
	c := checkCounts(t, u)
	if c.App != 0 || c.Tx != 0 || c.Free+c.Fill != 64 {
		t.Fatalf("leak: %+v", c)
	}
}

func TestFakeTxRingFull(t *testing.T) {
	u := newFakeUMEM(128, 2048)
	s, _ := newFakeSocket(u, 0, 16)
	frames := make([]Frame, 40)
	n := u.Alloc(frames, 0)
	if n != 40 {
		t.Fatalf("alloc %d", n)
	}
	for i := range frames {
		frames[i].Len = 60
	}
	if q := s.Transmit(frames); q != 16 {
		t.Fatalf("queued %d, want 16 (ring size)", q)
	}
	if st := s.Stats(); st.TxRingFull != 24 {
		t.Fatalf("ring full %d", st.TxRingFull)
	}
	if c := checkCounts(t, u); c.App != 0 || c.Tx != 16 {
		t.Fatalf("counts %+v", c)
	}
}

// TestFakeSharedUMEM moves frames received on one socket out through
// another socket of the same UMEM, at random, and checks that no frame is
// lost or duplicated.
func TestFakeSharedUMEM(t *testing.T) {
	u := newFakeUMEM(512, 4096)
	a, ka := newFakeSocket(u, 0, 64)
	b, kb := newFakeSocket(u, 1, 64)
	rng := rand.New(rand.NewPCG(1, 2))
	frames := make([]Frame, 64)
	socks := []*Socket{a, b}
	kernels := []*fakeKernel{ka, kb}
	var sent, received int
	for range 2000 {
		i := rng.IntN(2)
		for range rng.IntN(40) {
			received += kernels[i].deliver(testPacket(64+rng.IntN(1400), byte(i)))
		}
		n := socks[i].Receive(frames)
		// Half go out of the other socket, a quarter are dropped, the
		// rest go back out the same way.
		var tx, drop []Frame
		for _, f := range frames[:n] {
			switch rng.IntN(4) {
			case 0:
				drop = append(drop, f)
			case 1:
				tx = append(tx, f)
			default:
				frames2 := []Frame{f}
				sent += socks[1-i].Transmit(frames2)
			}
		}
		socks[i].Release(drop)
		sent += socks[i].Transmit(tx)
		if rng.IntN(3) == 0 {
			kernels[rng.IntN(2)].complete(false)
		}
		checkCounts(t, u)
	}
	ka.complete(false)
	kb.complete(false)
	a.Service()
	b.Service()
	c := checkCounts(t, u)
	if c.App != 0 || c.Tx != 0 || u.InvalidReleases() != 0 {
		t.Fatalf("after run: %+v invalid %d", c, u.InvalidReleases())
	}
	if sent == 0 || received == 0 {
		t.Fatal("no traffic")
	}
	a.Close()
	b.Close()
	if c := checkCounts(t, u); c.Free != 512 {
		t.Fatalf("after close %+v", c)
	}
}

func TestFakeZeroAllocs(t *testing.T) {
	u, s, k, pkts := newFakeBatch(1024, 256)
	frames := make([]Frame, 64)
	allocs := testing.AllocsPerRun(200, func() {
		k.deliver(pkts...)
		n := s.Receive(frames)
		s.Transmit(frames[:n/2])
		s.Release(frames[n/2 : n])
		k.complete(false)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch, want 0", allocs)
	}
	checkCounts(t, u)
}

// TestFakeElasticFill: a socket lending FillBase frames at rest doubles its
// lending while bursts leave a backlog in the RX ring, up to the fill ring's
// size and only while half the UMEM stays free; after a long calm it comes
// back down. Frames are never lost or double-counted on the way.
func TestFakeElasticFill(t *testing.T) {
	// run delivers bursts of 600 frames, 40 at a time, with the worker
	// reading 32 between deliveries (the kernel outpaces it), and returns
	// the socket and the frames the kernel could not deliver (fill ring
	// empty).
	run := func(t *testing.T, umemFrames int, size uint32, base int) (*Socket, int) {
		u := newFakeUMEM(umemFrames, 2048)
		s, k := newElasticFakeSocket(u, 0, size, base)
		frames := make([]Frame, 32)
		pkt := testPacket(60, 1)
		lost := 0
		for range 20 {
			for left := 600; left > 0; left -= 40 {
				lost += 40 - k.deliver(repeatPkt(pkt, 40)...)
				if n := s.Receive(frames); n > 0 {
					s.Release(frames[:n])
				}
			}
			for n := s.Receive(frames); n > 0; n = s.Receive(frames) {
				s.Release(frames[:n])
			}
			if c := checkCounts(t, u); c.App != 0 || c.Tx != 0 || c.Fill != s.nFill {
				t.Fatalf("frames after a burst: %+v (socket lends %d)", c, s.nFill)
			}
		}
		return s, lost
	}
	t.Run("elastic", func(t *testing.T) {
		s, lost := run(t, 8192, 1024, 64)
		_, fixedLost := run(t, 8192, 64, 64)
		t.Logf("lending 64 at rest: elastic grew to %d (%d doublings) and lost %d frames, fixed lost %d",
			s.fillTarget, s.Stats().FillGrows, lost, fixedLost)
		if s.fillTarget < 256 || s.Stats().FillGrows == 0 {
			t.Fatalf("lending %d after bursts (grows %d), want it grown from 64", s.fillTarget, s.Stats().FillGrows)
		}
		if lost*4 > fixedLost {
			t.Fatalf("elastic lending lost %d frames, fixed %d: no better", lost, fixedLost)
		}
		// Calm: receive calls with no backlog bring it back to the base.
		for range 3 * fillCalmBatches {
			s.adaptFill(0)
		}
		if s.fillTarget != 64 {
			t.Fatalf("lending %d after a long calm, want the base 64", s.fillTarget)
		}
	})
	t.Run("fixed", func(t *testing.T) {
		s, _ := run(t, 8192, 1024, 1024)
		if s.Stats().FillGrows != 0 || s.fillTarget != 1024 {
			t.Fatalf("a fixed socket changed its lending to %d (grows %d)", s.fillTarget, s.Stats().FillGrows)
		}
	})
	t.Run("pool-bound", func(t *testing.T) {
		// A UMEM of 1,200 frames: lending stops growing once less than
		// half of it would stay free.
		s, _ := run(t, 1200, 1024, 64)
		if s.fillTarget > 512 || s.fillTarget <= 64 {
			t.Fatalf("lending %d of a 1,200-frame UMEM, want it grown but bounded", s.fillTarget)
		}
	})
}

func repeatPkt(p []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = p
	}
	return out
}
