package afxdp

import (
	"bytes"
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
)

// setupSocket attaches steering (pod CIDR 10.200.0.0/16, fd00:200::/64) to
// dpIf and binds a socket on queue q, registered in the XSKMAP.
// oneSocket is the single-port layout: a veth pair with the given MTU, a
// UMEM of frames 2048-byte frames, steering for 10.200.0.0/16, one socket
// (queue 0, XDPAuto, port 0) on the dataplane end and a raw socket on the
// peer end.
func oneSocket(t *testing.T, mtu, frames int) (*UMEM, *Socket, *Attachment, *nstest.Raw) {
	t.Helper()
	r := newRig(t)
	dpIf, peerIf := r.link(t, "0", mtu, 0)
	u := newTestUMEM(t, UMEMConfig{Frames: frames, FrameSize: 2048})
	st := newTestSteering(t, "10.200.0.0/16")
	s, a := setupSocket(t, r, u, st, dpIf, 0, XDPAuto, 0)
	return u, s, a, nstest.OpenRaw(t, r.Peer, peerIf)
}

func setupSocket(t *testing.T, r *rig, u *UMEM, st *Steering, dpIf string, queue int, xdp XDPMode, port PortID) (*Socket, *Attachment) {
	t.Helper()
	var s *Socket
	var a *Attachment
	r.do(t, func() (err error) {
		if a == nil {
			if a, err = st.Attach(dpIf, xdp); err != nil {
				return err
			}
			t.Cleanup(func() { a.Close() })
		}
		if s, err = u.NewSocket(SocketConfig{Interface: dpIf, Queue: queue, Port: port, RxSize: 512, TxSize: 512,
			FillSize: 512, CompletionSize: 512}); err != nil {
			return err
		}
		return a.Register(s)
	})
	t.Logf("%s: XDP %s, socket %s (%s), tx budget %d", dpIf, a.Mode(), s.Mode(), s.ModeReason(), s.TxBudget())
	return s, a
}

// TestSocketReceiveTransmit: frames written into the veth from the peer
// namespace arrive on our socket intact; frames we transmit arrive on the
// peer; every frame is back in the UMEM afterwards.
func TestSocketReceiveTransmit(t *testing.T) {
	for _, xdp := range []XDPMode{XDPDriver, XDPGeneric} {
		for _, fs := range []int{2048, 4096} {
			t.Run(fmt.Sprintf("%s/frame%d", xdp, fs), func(t *testing.T) {
				r := newRig(t)
				dpIf, peerIf := r.link(t, "0", 1500, 0)
				u := newTestUMEM(t, UMEMConfig{Frames: 2048, FrameSize: fs})
				st := newTestSteering(t, "10.200.0.0/16", "fd00:200::/64")
				s, _ := setupSocket(t, r, u, st, dpIf, 0, xdp, 7)
				if s.Mode() != ModeCopy && s.Mode() != ModeZeroCopy {
					t.Fatalf("mode %v", s.Mode())
				}
				raw := nstest.OpenRaw(t, r.Peer, peerIf)

				// Receive.
				const n = 200
				var sent [][]byte
				for i := range n {
					dst := fmt.Sprintf("10.200.%d.%d", i/200, 1+i%200)
					payload := fmt.Appendf(nil, "rx-%03d-%s", i, bytes.Repeat([]byte{'x'}, i*5))
					if i%10 == 9 {
						dst = fmt.Sprintf("fd00:200::%x", i)
						sent = append(sent, udpFrame(t, "fd00:100::1", dst, 5000, 6000, payload))
					} else {
						sent = append(sent, udpFrame(t, "10.100.0.1", dst, 5000, 6000, payload))
					}
					if err := raw.Send(sent[i]); err != nil {
						t.Fatal(err)
					}
				}
				got := receive(t, []*Socket{s}, n, 5*time.Second, hasPrefix("rx-"))
				if len(got) != n {
					t.Fatalf("received %d of %d frames (stats %+v)", len(got), n, s.Stats())
				}
				for i := range got {
					if !bytes.Equal(got[i], sent[i]) {
						t.Fatalf("frame %d differs:\n got %x\nwant %x", i, got[i], sent[i])
					}
				}
				p := gopacket.NewPacket(got[0], layers.LayerTypeEthernet, gopacket.Default)
				if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); !ok || ip.DstIP.String() != "10.200.0.1" {
					t.Fatalf("decoded %v", p)
				}

				// Transmit: allocated frames and received frames sent back
				// with encapsulation space used (Off moved into headroom).
				frames := make([]Frame, 64)
				var want [][]byte
				for round := range 4 {
					k := u.Alloc(frames, 7)
					if k != 64 {
						t.Fatalf("alloc %d", k)
					}
					for i := range frames {
						pkt := udpFrame(t, "10.200.0.1", "10.100.0.1", 6000, 5000, fmt.Appendf(nil, "tx-%d-%02d", round, i))
						frames[i].Off -= 40 // as if an encap stage had prepended a header
						frames[i].Len = copy(frames[i].Buf[frames[i].Off:], pkt)
						want = append(want, pkt)
					}
					if q := s.Transmit(frames); q != 64 {
						t.Fatalf("transmit queued %d of 64 (stats %+v)", q, s.Stats())
					}
				}
				raw.ExpectFrames(t, want, 3*time.Second, hasPrefix("tx-"), func() string { return fmt.Sprintf("(stats %+v)", s.Stats()) })
				c := settle(t, u, s)
				if c.Free+c.Fill != c.Total {
					t.Fatalf("counts %+v", c)
				}
				stats := s.Stats()
				t.Logf("stats %+v", stats)
				if stats.TxPackets != 256 || stats.RxPackets < n || stats.KickErrors != 0 {
					t.Fatalf("stats %+v", stats)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if c := checkCounts(t, u); c.Free != c.Total {
					t.Fatalf("after close: %+v, want every frame free", c)
				}
			})
		}
	}
}

// TestSocketTxBudget queues far more frames than one copy-mode sendto
// sends by default (32) in one Transmit, with the budget raised by
// XDP_MAX_TX_SKB_BUDGET and with the kernel's default; all must leave.
func TestSocketTxBudget(t *testing.T) {
	for _, budget := range []uint32{0, copyModeTxBatch} {
		t.Run(fmt.Sprintf("budget%d", budget), func(t *testing.T) {
			u, s, _, raw := oneSocket(t, 1500, 2048)
			if budget != 0 {
				must(t, setsockopt(s.fd, unix.SOL_XDP, xdpMaxTxSkbBudget, unsafe.Pointer(&budget), unsafe.Sizeof(budget)))
				s.txBudget = int(budget)
			}
			frames := make([]Frame, 256)
			u.Alloc(frames, 0)
			for i := range frames {
				pkt := udpFrame(t, "10.200.0.1", "10.100.0.1", 1, 2, fmt.Appendf(nil, "bud-%03d", i))
				frames[i].Len = copy(frames[i].Buf[frames[i].Off:], pkt)
			}
			if q := s.Transmit(frames); q != 256 {
				t.Fatalf("queued %d", q)
			}
			for i := range 256 {
				if _, err := raw.Recv(3*time.Second, hasPrefix("bud-")); err != nil {
					t.Fatalf("captured %d of 256: %v (stats %+v)", i, err, s.Stats())
				}
			}
			settle(t, u, s)
			kicks := s.Stats().Kicks
			t.Logf("tx budget %d: %d sendto kicks for 256 frames", s.TxBudget(), kicks)
			if kicks < uint64(256/s.TxBudget()) {
				t.Fatalf("%d kicks cannot have sent 256 frames at %d per kick", kicks, s.TxBudget())
			}
		})
	}
}

// TestSharedUMEMAcrossInterfaces receives on one veth and transmits the
// very same frames (no copy) on another veth, both sockets on one UMEM.
func TestSharedUMEMAcrossInterfaces(t *testing.T) {
	r := newRig(t)
	in, inPeer := r.link(t, "1", 1500, 0)
	out, outPeer := r.link(t, "2", 1500, 0)
	u := newTestUMEM(t, UMEMConfig{Frames: 2048, FrameSize: 2048})
	st := newTestSteering(t, "10.200.0.0/16")
	sIn, _ := setupSocket(t, r, u, st, in, 0, XDPAuto, 0)
	sOut, _ := setupSocket(t, r, u, st, out, 0, XDPAuto, 1)
	if sOut.ModeReason() != "inherited from the umem's first socket" {
		t.Fatalf("second socket: %s", sOut.ModeReason())
	}
	rawIn := nstest.OpenRaw(t, r.Peer, inPeer)
	rawOut := nstest.OpenRaw(t, r.Peer, outPeer)

	const n = 200
	for i := range n {
		if err := rawIn.Send(udpFrame(t, "10.100.0.1", "10.200.1.1", 1, 2, fmt.Appendf(nil, "fwd-%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	frames := make([]Frame, 64)
	forwarded := 0
	deadline := time.Now().Add(5 * time.Second)
	for forwarded < n && time.Now().Before(deadline) {
		k := sIn.Receive(frames)
		for i := range frames[:k] {
			if frames[i].Port != 0 {
				t.Fatalf("port %d", frames[i].Port)
			}
		}
		forwarded += sOut.Transmit(frames[:k])
		if k == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if forwarded != n {
		t.Fatalf("forwarded %d of %d", forwarded, n)
	}
	rawOut.ExpectUDPPayloads(t, n, "fwd-%03d", 3*time.Second, hasPrefix("fwd-"))
	c := settle(t, u, sIn, sOut)
	t.Logf("counts %+v in %+v out %+v", c, sIn.Stats(), sOut.Stats())
	sIn.Close()
	sOut.Close()
	if c := checkCounts(t, u); c.Free != c.Total {
		t.Fatalf("after close: %+v", c)
	}
}

// TestSocketQueues binds one socket per queue of a two-queue veth on one
// UMEM; traffic arrives on whichever queue the kernel picks (queue 0 on
// veth) and all of it is received.
func TestSocketQueues(t *testing.T) {
	r := newRig(t)
	dpIf, peerIf := r.link(t, "0", 1500, 2)
	u := newTestUMEM(t, UMEMConfig{Frames: 4096, FrameSize: 2048})
	st := newTestSteering(t, "10.200.0.0/16")
	s0, a := setupSocket(t, r, u, st, dpIf, 0, XDPGeneric, 0)
	var s1 *Socket
	r.do(t, func() (err error) {
		if s1, err = u.NewSocket(SocketConfig{Interface: dpIf, Queue: 1, Port: 0}); err != nil {
			return err
		}
		return a.Register(s1)
	})
	r.do(t, func() error {
		if _, err := u.NewSocket(SocketConfig{Interface: dpIf, Queue: 1}); err == nil {
			return fmt.Errorf("a second socket on queue 1 was accepted")
		}
		return nil
	})
	raw := nstest.OpenRaw(t, r.Peer, peerIf)
	const n = 100
	for i := range n {
		raw.Send(udpFrame(t, "10.100.0.1", "10.200.0.9", uint16(1000+i), 2, fmt.Appendf(nil, "q-%03d", i)))
	}
	got := receive(t, []*Socket{s0, s1}, n, 5*time.Second, hasPrefix("q-"))
	if len(got) != n {
		t.Fatalf("received %d of %d", len(got), n)
	}
	t.Logf("queue 0: %d, queue 1: %d frames", s0.Stats().RxPackets, s1.Stats().RxPackets)
	settle(t, u, s0, s1)
}

// TestSocketBadInput: truncated frames are passed by the steering program
// (counted), oversize frames are dropped by the kernel (counted in
// XDP_STATISTICS) and bad TX frames are refused (counted); no frame leaks.
func TestSocketBadInput(t *testing.T) {
	u, s, a, raw := oneSocket(t, 3400, 1024)

	good := udpFrame(t, "10.100.0.1", "10.200.0.1", 1, 2, []byte("good"))
	// Ethernet header announcing IPv4 with 10 bytes of it; a bare
	// Ethernet header; a VLAN tag with nothing after it.
	runts := [][]byte{good[:24], good[:14], append(append(append([]byte(nil), good[:12]...), 0x81, 0x00, 0, 5), 0x08)}
	for _, b := range runts {
		if err := raw.Send(b); err != nil {
			t.Fatal(err)
		}
	}
	// Oversize: a 3000-byte frame does not fit a 2048-byte UMEM frame.
	big := udpFrame(t, "10.100.0.1", "10.200.0.1", 1, 2, append([]byte("big-"), make([]byte, 2950)...))
	for range 5 {
		if err := raw.Send(big); err != nil {
			t.Fatal(err)
		}
	}
	raw.Send(good)
	got := receive(t, []*Socket{s}, 1, 3*time.Second, nil)
	time.Sleep(50 * time.Millisecond)
	got = append(got, receive(t, []*Socket{s}, 10, 100*time.Millisecond, nil)...)
	if len(got) != 1 || !bytes.Equal(got[0], good) {
		t.Fatalf("received %d frames, want only the good one", len(got))
	}
	sst, err := a.Stats()
	if err != nil {
		t.Fatal(err)
	}
	kst := s.Stats()
	t.Logf("steering %v, socket %+v", sst, kst)
	if sst[StatPassTruncated] < 2 {
		t.Errorf("truncated count %d, want >= 2", sst[StatPassTruncated])
	}
	if kst.KernelRxDropped < 5 {
		t.Errorf("kernel rx_dropped %d, want >= 5 oversize frames", kst.KernelRxDropped)
	}

	// TX: a runt and a frame running past its buffer are refused.
	frames := make([]Frame, 3)
	u.Alloc(frames, 0)
	frames[0].Len = 10
	frames[1].Len = 2048
	frames[2].Len = copy(frames[2].Buf[frames[2].Off:], good)
	if q := s.Transmit(frames); q != 1 {
		t.Fatalf("queued %d, want 1", q)
	}
	if kst := s.Stats(); kst.TxInvalid != 2 {
		t.Fatalf("tx invalid %d", kst.TxInvalid)
	}
	c := settle(t, u, s)
	if c.Free+c.Fill != c.Total || u.InvalidReleases() != 0 {
		t.Fatalf("counts %+v invalid %d", c, u.InvalidReleases())
	}
}

// TestSocketZeroAllocs pins 0 allocations per Receive and Transmit (with
// its sendto kick) on a real socket in steady state.
func TestSocketZeroAllocs(t *testing.T) {
	u, s, _, raw := oneSocket(t, 1500, 2048)
	pkt := udpFrame(t, "10.100.0.1", "10.200.0.1", 1, 2, []byte("alloc"))
	for range 200 {
		raw.Send(pkt)
	}
	time.Sleep(20 * time.Millisecond)
	frames := make([]Frame, 16)
	total := 0
	allocs := testing.AllocsPerRun(10, func() {
		n := s.Receive(frames)
		total += n
		s.Transmit(frames[:n])
		s.Service()
	})
	if total == 0 {
		t.Fatal("nothing received")
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per Receive+Transmit", allocs)
	}
	settle(t, u, s)
}
