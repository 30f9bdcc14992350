package afpacket

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
)

var (
	peerMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xbb, 0x02}
	dpMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x02}
)

func udpFrame(t testing.TB, src, dst string, payload []byte) []byte {
	t.Helper()
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
	udp := &layers.UDP{SrcPort: 1, DstPort: 2}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: peerMAC, DstMAC: dpMAC, EthernetType: layers.EthernetTypeIPv4}, ip, udp, gopacket.Payload(payload))
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

var hasPrefix = nstest.HasUDPPrefix

// rig is a dataplane namespace and a peer namespace joined by veth pairs.
type rig struct{ *nstest.Rig }

func newRig(t *testing.T) *rig { return &rig{nstest.NewRig(t)} }

// link adds a veth pair: dp side "d<n><sfx>", peer side "p<n><sfx>".
func (r *rig) link(t *testing.T, n string, mtu int) (string, string) {
	t.Helper()
	return r.Link(t, n, mtu, 0, dpMAC, peerMAC)
}

func openPort(t *testing.T, r *rig, pool *Pool, ifname string, id PortID) *Port {
	t.Helper()
	var pt *Port
	if err := r.DP.Do(func() (err error) {
		pt, err = pool.Open(Config{Interface: ifname, Port: id})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pt.Close() })
	return pt
}

func newPool(t *testing.T, n, size, headroom int) *Pool {
	p, err := NewPool(n, size, headroom)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// receive polls the ports until want packets matching keep arrived. Every
// frame starts exactly at the headroom.
func receive(t testing.TB, ports []*Port, want int, timeout time.Duration, keep func([]byte) bool) [][]byte {
	t.Helper()
	return nstest.Receive(t, ports, want, timeout, keep, true)
}

// TestPortReceiveTransmit: frames from the peer arrive intact with
// headroom; frames we transmit arrive on the peer; the pool is full after.
func TestPortReceiveTransmit(t *testing.T) {
	r := newRig(t)
	dpIf, peerIf := r.link(t, "0", 1500)
	pool := newPool(t, 1024, 2048, 256)
	pt := openPort(t, r, pool, dpIf, 4)
	raw := nstest.OpenRaw(t, r.Peer, peerIf)

	const n = 300
	var sent [][]byte
	for i := range n {
		sent = append(sent, udpFrame(t, "10.100.0.1", fmt.Sprintf("10.200.0.%d", 1+i%250),
			fmt.Appendf(nil, "rx-%03d-%s", i, bytes.Repeat([]byte{'y'}, i*4))))
	}
	// Send while receiving: the ring retires a block every millisecond
	// (RetireTimeout), so a receiver that waited for the whole burst would
	// find all 16 blocks handed out and the kernel dropping (it did, in CI,
	// when the burst took longer than 16 ms on a loaded machine).
	sendErr := make(chan error, 1)
	go func() {
		for i := range sent {
			if err := raw.Send(sent[i]); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	got := receive(t, []*Port{pt}, n, 5*time.Second, hasPrefix("rx-"))
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("received %d of %d (stats %+v)", len(got), n, pt.Stats())
	}
	for i := range got {
		if !bytes.Equal(got[i], sent[i]) {
			t.Fatalf("frame %d differs", i)
		}
	}

	frames := make([]Frame, 64)
	var want [][]byte
	for round := range 4 {
		if k := pool.Alloc(frames, 4); k != 64 {
			t.Fatalf("alloc %d", k)
		}
		for i := range frames {
			pkt := udpFrame(t, "10.200.0.1", "10.100.0.1", fmt.Appendf(nil, "tx-%d-%02d", round, i))
			frames[i].Off -= 20 // encapsulation space
			frames[i].Len = copy(frames[i].Buf[frames[i].Off:], pkt)
			want = append(want, pkt)
		}
		if s := pt.Transmit(frames); s != 64 {
			t.Fatalf("sent %d of 64 (stats %+v)", s, pt.Stats())
		}
	}
	raw.ExpectFrames(t, want, 3*time.Second, hasPrefix("tx-"), nil)
	// Our own transmissions are not received back.
	if echo := receive(t, []*Port{pt}, 1, 100*time.Millisecond, hasPrefix("tx-")); len(echo) != 0 {
		t.Fatalf("received %d of our own frames", len(echo))
	}
	st := pt.Stats()
	t.Logf("stats %+v", st)
	if st.TxPackets != 256 || st.RxPackets < n {
		t.Fatalf("stats %+v", st)
	}
	if pool.FreeFrames() != pool.Frames() || pool.InvalidReleases() != 0 {
		t.Fatalf("pool has %d of %d frames free (invalid %d)", pool.FreeFrames(), pool.Frames(), pool.InvalidReleases())
	}
}

// TestPortSharedPool receives on one interface and transmits the same pool
// frames on another.
func TestPortSharedPool(t *testing.T) {
	r := newRig(t)
	in, inPeer := r.link(t, "1", 1500)
	out, outPeer := r.link(t, "2", 1500)
	pool := newPool(t, 512, 2048, 128)
	pIn := openPort(t, r, pool, in, 0)
	pOut := openPort(t, r, pool, out, 1)
	rawIn := nstest.OpenRaw(t, r.Peer, inPeer)
	rawOut := nstest.OpenRaw(t, r.Peer, outPeer)
	const n = 200
	for i := range n {
		if err := rawIn.Send(udpFrame(t, "10.100.0.1", "10.200.1.1", fmt.Appendf(nil, "fwd-%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	frames := make([]Frame, 64)
	fwd := 0
	deadline := time.Now().Add(5 * time.Second)
	for fwd < n && time.Now().Before(deadline) {
		k := pIn.Receive(frames)
		var mine []Frame
		for _, f := range frames[:k] {
			if hasPrefix("fwd-")(f.Packet()) {
				mine = append(mine, f)
			} else {
				pIn.Release([]Frame{f})
			}
		}
		fwd += pOut.Transmit(mine)
		if k == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if fwd != n {
		t.Fatalf("forwarded %d of %d", fwd, n)
	}
	rawOut.ExpectUDPPayloads(t, n, "fwd-%03d", 3*time.Second, hasPrefix("fwd-"))
	if pool.FreeFrames() != pool.Frames() {
		t.Fatalf("leak: %d of %d free", pool.FreeFrames(), pool.Frames())
	}
}

// TestPortBadInput: oversize frames (larger than a pool frame) are counted
// and dropped, runt and out-of-frame TX frames are refused, a double
// release is ignored; no frame leaks.
func TestPortBadInput(t *testing.T) {
	r := newRig(t)
	dpIf, peerIf := r.link(t, "0", 3000)
	pool := newPool(t, 64, 1024, 128)
	pt := openPort(t, r, pool, dpIf, 0)
	raw := nstest.OpenRaw(t, r.Peer, peerIf)
	big := udpFrame(t, "10.100.0.1", "10.200.0.1", append([]byte("big-"), make([]byte, 2000)...))
	for range 3 {
		if err := raw.Send(big); err != nil {
			t.Fatal(err)
		}
	}
	good := udpFrame(t, "10.100.0.1", "10.200.0.1", []byte("good"))
	raw.Send(good)
	got := receive(t, []*Port{pt}, 1, 3*time.Second, hasPrefix("good"))
	if len(got) != 1 {
		t.Fatalf("good frame not received")
	}
	receive(t, []*Port{pt}, 10, 50*time.Millisecond, nil)
	if st := pt.Stats(); st.RxTruncated != 3 {
		t.Fatalf("oversize count %d, want 3 (%+v)", st.RxTruncated, st)
	}
	frames := make([]Frame, 3)
	pool.Alloc(frames, 0)
	frames[0].Len = 5
	frames[1].Len = 1000
	frames[2].Len = copy(frames[2].Buf[frames[2].Off:], good)
	kept := frames[2]
	if s := pt.Transmit(frames); s != 1 {
		t.Fatalf("sent %d", s)
	}
	if st := pt.Stats(); st.TxInvalid != 2 {
		t.Fatalf("tx invalid %d", st.TxInvalid)
	}
	pt.Release([]Frame{kept})
	if pool.InvalidReleases() != 1 || pool.FreeFrames() != pool.Frames() {
		t.Fatalf("invalid %d free %d/%d", pool.InvalidReleases(), pool.FreeFrames(), pool.Frames())
	}
}

// TestPortZeroAllocs pins 0 allocations per Receive and Transmit in
// steady state.
func TestPortZeroAllocs(t *testing.T) {
	r := newRig(t)
	dpIf, peerIf := r.link(t, "0", 1500)
	pool := newPool(t, 1024, 2048, 128)
	pt := openPort(t, r, pool, dpIf, 0)
	raw := nstest.OpenRaw(t, r.Peer, peerIf)
	pkt := udpFrame(t, "10.100.0.1", "10.200.0.1", []byte("alloc"))
	for range 500 {
		raw.Send(pkt)
	}
	time.Sleep(20 * time.Millisecond)
	frames := make([]Frame, 32)
	total := 0
	allocs := testing.AllocsPerRun(20, func() {
		n := pt.Receive(frames)
		total += n
		pt.Transmit(frames[:n])
	})
	if total == 0 {
		t.Fatal("nothing received")
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per Receive+Transmit", allocs)
	}
}
