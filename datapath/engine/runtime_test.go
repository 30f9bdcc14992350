package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afxdp"
	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
	"github.com/tabbynet/tabby/datapath/header"
)

const nhRuntime = 10 // 10.244.3.0/24: the pod behind the runtime interface d2

// flow is steady traffic gen → sink (10.244.2.0/24) through the engine,
// every frame numbered, counted at the sink.
type flow struct {
	sent     atomic.Uint64
	received atomic.Uint64
	dups     atomic.Uint64
	stop     chan struct{}
	wg       sync.WaitGroup
}

const flowPrefix = "flow-"

// startFlow sends bursts of frames from gen to sink pods (about 5,000
// frames a second) until stopFlow, and counts the distinct ones the sink
// receives.
func startFlow(t *testing.T, l *line) *flow {
	t.Helper()
	f := &flow{stop: make(chan struct{})}
	genRaw, sinkRaw := l.raw(l.gen, "g0"), l.raw(l.sink, "s0")
	seen := map[uint64]bool{}
	var mu sync.Mutex
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for seq := uint64(0); ; {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			for range 5 {
				p := pkt{srcMAC: l.g0, dstMAC: l.d0, src: "10.244.1.10", dst: fmt.Sprintf("10.244.2.%d", 1+seq%200),
					payload: fmt.Sprintf("%s%08d", flowPrefix, seq)}
				if err := genRaw.Send(p.frame(t)); err != nil {
					t.Errorf("send: %v", err)
					return
				}
				seq++
				f.sent.Add(1)
			}
		}
	}()
	go func() {
		defer f.wg.Done()
		for {
			b, err := sinkRaw.Recv(300*time.Millisecond, hasPayload(flowPrefix))
			if err != nil {
				select {
				case <-f.stop:
					return // quiet after the stop: everything arrived
				default:
					continue
				}
			}
			i := strings.Index(string(b), flowPrefix)
			seq, _ := strconv.ParseUint(string(b[i+len(flowPrefix):i+len(flowPrefix)+8]), 10, 64)
			mu.Lock()
			if seen[seq] {
				f.dups.Add(1)
			}
			seen[seq] = true
			mu.Unlock()
			f.received.Add(1)
		}
	}()
	return f
}

func (f *flow) finish() {
	close(f.stop)
	f.wg.Wait()
}

// kernelDrops sums what the kernel dropped at the engine's d0 socket
// (AF_XDP: no fill buffer or a full RX ring; AF_PACKET: a full ring).
func kernelDrops(st Stats) uint64 {
	var n uint64
	for _, p := range st.Ports {
		if p.Interface == "d0" {
			n += p.XDP.KernelRxDropped + p.XDP.KernelRxRingFull + p.Packet.KernelDrops
		}
	}
	return n
}

// TestRuntimeInterfaces: an engine forwarding a steady flow between two
// interfaces gets a third one attached at runtime (a pod's veth); frames
// routed to it arrive with correct headers and frames from it are
// forwarded; it is removed again (every fifth time after its veth was
// deleted, as when a pod's namespace goes first); fifty times. The flow on
// the first two interfaces loses nothing, no frame leaks, the port slot is
// reused, and Close leaves every frame back in the UMEM or pool.
func TestRuntimeInterfaces(t *testing.T) {
	for _, kind := range kinds {
		for _, mode := range []afxdp.PollMode{afxdp.PollBusy, afxdp.PollAdaptive} {
			t.Run(kind.String()+"/"+mode.String(), func(t *testing.T) {
				testRuntimeInterfaces(t, kind, mode)
			})
		}
	}
}

func testRuntimeInterfaces(t *testing.T, kind PortKind, mode afxdp.PollMode) {
	l := newLine(t)
	pod := l.ns("pod")
	cfg := l.config(kind)
	cfg.PollMode = mode
	cfg.RuntimeInterfaces = 1
	e := l.start(l.dut, cfg)
	f := startFlow(t, l)
	defer func() {
		select {
		case <-f.stop:
		default:
			f.finish()
		}
	}()
	waitCounters(t, e, "flow running", func(c datapath.Counters) bool { return c.TxPackets > 100 })

	const rounds = 50
	var podFrames uint64 // frames gen sent to the runtime interface's pod
	t0 := time.Now()
	var attach, detach time.Duration
	for i := range rounds {
		d2, p0 := l.veth(l.dut, "d2", pod, "p0")
		a0 := time.Now()
		port, err := e.AddInterface(context.Background(), Interface{Name: "d2", Workload: true})
		attach += time.Since(a0)
		if err != nil {
			t.Fatalf("round %d: add: %v", i, err)
		}
		if port != 2 {
			t.Fatalf("round %d: d2 got port %d, want the free slot 2", i, port)
		}
		if _, err := e.AddInterface(context.Background(), Interface{Name: "d2"}); err == nil {
			t.Fatalf("round %d: second add of d2 succeeded", i)
		}
		is, ok := e.Interface("d2")
		if !ok || !is.Runtime || !is.Workload || is.Port != port {
			t.Fatalf("round %d: stats of d2: %+v %v", i, is, ok)
		}
		if kind == PortAFXDP && (is.XDPMode != afxdp.XDPDriver || is.SocketMode != afxdp.ModeCopy ||
			is.SocketModeReason == "" || !l.xdpAttached(l.dut, "d2")) {
			t.Fatalf("round %d: d2 attached with XDP %v (%s), socket %v (%s)", i, is.XDPMode, is.XDPModeReason,
				is.SocketMode, is.SocketModeReason)
		}
		setNextHop(t, l.tables, nhRuntime, datapath.NextHop{Kind: datapath.NextHopLocal, Port: port, SrcMAC: d2, DstMAC: p0},
			"10.244.3.0/24")

		// To the pod: headers rewritten for the new port.
		podRaw := nstest.OpenRaw(t, &nstest.NS{Name: pod.Name}, "p0")
		in := pkt{srcMAC: l.g0, dstMAC: l.d0, src: "10.244.1.10", dst: "10.244.3.7", proto: protoOf(i),
			payload: fmt.Sprintf("to-pod-%02d", i)}
		if err := l.raw(l.gen, "g0").Send(in.frame(t)); err != nil {
			t.Fatal(err)
		}
		podFrames++
		checkInner(t, capture(t, podRaw, 1, hasPayload(in.payload))[0], in, d2, p0, 63)
		// From the pod to the sink.
		out := pkt{srcMAC: p0, dstMAC: d2, src: "10.244.3.7", dst: "10.244.2.250", payload: fmt.Sprintf("from-pod-%02d", i)}
		sinkRaw := l.raw(l.sink, "s0")
		if err := podRaw.Send(out.frame(t)); err != nil {
			t.Fatal(err)
		}
		checkInner(t, capture(t, sinkRaw, 1, hasPayload(out.payload))[0], out, l.d1, l.s0, 63)
		if i == 0 {
			// A workload's own IP-in-IP to the node address is not the
			// dataplane's to decapsulate.
			if err := podRaw.Send(ipipFromPod(t, p0, d2, "10.244.3.7", "192.168.10.1", "10.244.1.10", "10.244.2.77",
				"ipip-from-pod")); err != nil {
				t.Fatal(err)
			}
			quiet(t, sinkRaw, 200*time.Millisecond, hasPayload("ipip-from-pod"))
		}

		// Remove: route first, then the interface; every fifth time the
		// veth is gone already.
		if err := l.tables.DeleteRoute(netip.MustParsePrefix("10.244.3.0/24")); err != nil {
			t.Fatal(err)
		}
		if err := l.tables.RemoveNextHop(nhRuntime); err != nil {
			t.Fatal(err)
		}
		vanished := i%5 == 4
		if vanished {
			link, err := l.dut.Link("d2")
			if err != nil {
				t.Fatal(err)
			}
			if err := l.dut.Netlink().LinkDel(link); err != nil {
				t.Fatal(err)
			}
		}
		r0 := time.Now()
		if err := e.RemoveInterface("d2"); err != nil {
			t.Fatalf("round %d (veth deleted first: %v): remove: %v", i, vanished, err)
		}
		detach += time.Since(r0)
		if _, ok := e.Interface("d2"); ok {
			t.Fatalf("round %d: d2 still in the stats", i)
		}
		if err := e.RemoveInterface("d2"); !errors.Is(err, ErrNotAttached) {
			t.Fatalf("round %d: second remove: %v, want ErrNotAttached", i, err)
		}
		if !vanished {
			if kind == PortAFXDP && l.xdpAttached(l.dut, "d2") {
				t.Fatalf("round %d: XDP program left on d2", i)
			}
			link, err := l.dut.Link("d2")
			if err != nil {
				t.Fatal(err)
			}
			if err := l.dut.Netlink().LinkDel(link); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d rounds in %v: attach %v, detach %v on average", rounds, time.Since(t0),
		attach/rounds, detach/rounds)

	f.finish()
	st := e.Stats()
	c := e.Counters()
	drops := kernelDrops(st)
	t.Logf("flow: sent %d, received %d (duplicates %d), kernel drops at d0 %d; engine %s", f.sent.Load(),
		f.received.Load(), f.dups.Load(), drops, fmtCounters(c))
	if c.Dropped() != 0 || c.DecapIPIP != 0 {
		t.Errorf("the engine dropped or decapsulated frames: %s", fmtCounters(c))
	}
	want := f.sent.Load() + 2*rounds // the flow, and the pod's frames both ways
	if c.RxPackets != want || c.TxPackets != want {
		t.Errorf("engine received %d and sent %d frames, want %d each", c.RxPackets, c.TxPackets, want)
	}
	if f.received.Load() != f.sent.Load() || f.dups.Load() != 0 || drops != 0 {
		t.Errorf("flow interrupted: %d sent, %d received (%d duplicates), %d dropped by the kernel at d0",
			f.sent.Load(), f.received.Load(), f.dups.Load(), drops)
	}
	if len(st.Interfaces) != 2 || len(st.Ports) != 2 {
		t.Errorf("after the rounds: %d interfaces, %d ports, want 2 each", len(st.Interfaces), len(st.Ports))
	}
	if fr := st.Frames; fr.App != 0 || fr.Tx != 0 || fr.Free+fr.Fill != fr.Total || st.InvalidReleases != 0 {
		t.Errorf("frames after the rounds: %+v, invalid releases %d", fr, st.InvalidReleases)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if fr := e.Stats().Frames; fr.App != 0 || fr.Tx != 0 {
		t.Errorf("frames at close: %+v", fr)
	}
}

// ipipFromPod builds an IP-in-IP frame a pod sends to the node address.
func ipipFromPod(t *testing.T, src, dst header.MAC, outerSrc, outerDst, innerSrc, innerDst, payload string) []byte {
	t.Helper()
	outer := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4,
		SrcIP: netip.MustParseAddr(outerSrc).AsSlice(), DstIP: netip.MustParseAddr(outerDst).AsSlice()}
	inner := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: netip.MustParseAddr(innerSrc).AsSlice(), DstIP: netip.MustParseAddr(innerDst).AsSlice()}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 7000}
	udp.SetNetworkLayerForChecksum(inner)
	return serialize(t, &layers.Ethernet{SrcMAC: hw(src), DstMAC: hw(dst), EthernetType: layers.EthernetTypeIPv4},
		outer, inner, udp, gopacket.Payload(payload))
}

// protoOf alternates UDP and TCP test packets.
func protoOf(i int) layers.IPProtocol {
	if i%2 == 1 {
		return layers.IPProtocolTCP
	}
	return layers.IPProtocolUDP
}

// TestRuntimeInterfaceErrors: AddInterface names what is wrong and leaves
// nothing behind: an unknown interface, one with an XDP program already
// (AF_XDP), a full frame memory; RemoveInterface of an unknown name; both
// after Close.
func TestRuntimeInterfaceErrors(t *testing.T) {
	l := newLine(t)
	pod := l.ns("pod")
	l.veth(l.dut, "d2", pod, "p0")
	l.veth(l.dut, "d3", pod, "p1")
	cfg := l.config(PortAFXDP)
	cfg.RuntimeInterfaces = 1
	e := l.start(l.dut, cfg)
	ctx := context.Background()
	// The worker loop opens its eventfd when it starts: count after.
	if err := e.workers[0].ctl.Do(func(*afxdp.PortSet) error { return nil }); err != nil {
		t.Fatal(err)
	}
	fds := openFDs(t)
	if _, err := e.AddInterface(ctx, Interface{Name: "nosuch0"}); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("unknown interface: %v", err)
	}
	if _, err := e.AddInterface(ctx, Interface{Name: "bad/name"}); err == nil {
		t.Error("bad name accepted")
	}
	// Another program on d3: refused (after the retry window, shortened
	// here), and left alone.
	defer func(w time.Duration) { attachBusyWindow = w }(attachBusyWindow)
	attachBusyWindow = 200 * time.Millisecond
	other := cfg
	other.Interfaces = []Interface{{Name: "d3"}}
	o := l.start(l.dut, other)
	if _, err := e.AddInterface(ctx, Interface{Name: "d3"}); err == nil || !strings.Contains(err.Error(), "d3") {
		t.Errorf("interface with an XDP program: %v", err)
	}
	if !l.xdpAttached(l.dut, "d3") {
		t.Error("the failed add detached the other engine's program")
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if leaked := leakedFDs(t, fds); len(leaked) > 0 {
		t.Errorf("file descriptors left open by failed adds: %v", leaked)
	}
	// The frame memory backs one runtime port (rings of 256), not two
	// with rings of 1024.
	if _, err := e.AddInterface(ctx, Interface{Name: "d3", RingSize: 2048}); err == nil ||
		!errors.Is(err, ErrFrameMemoryFull) {
		t.Errorf("oversized rings: %v", err)
	}
	// A slot a next hop still names is not given to another interface,
	// even when it was the last one.
	p2, err := e.AddInterface(ctx, Interface{Name: "d2"})
	if err != nil {
		t.Fatal(err)
	}
	setNextHop(t, l.tables, nhRuntime, datapath.NextHop{Kind: datapath.NextHopLocal, Port: p2}, "10.244.3.0/24")
	if err := e.RemoveInterface("d2"); err != nil {
		t.Fatal(err)
	}
	if p, err := e.AddInterface(ctx, Interface{Name: "d2"}); err != nil || p == p2 {
		t.Fatalf("re-added d2 as port %d (%v); port %d is still routed to", p, err, p2)
	}
	if err := e.RemoveInterface("nosuch0"); !errors.Is(err, ErrNotAttached) {
		t.Errorf("remove unknown: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if l.xdpAttached(l.dut, "d2") {
		t.Error("Close left the runtime interface's XDP program")
	}
	if _, err := e.AddInterface(ctx, Interface{Name: "d3"}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("add after close: %v", err)
	}
	if err := e.RemoveInterface("d2"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("remove after close: %v", err)
	}
	if st := e.Stats(); st.Frames.App != 0 || st.Frames.Tx != 0 || len(st.Interfaces) != 3 {
		t.Errorf("stats at close: %+v, %d interfaces (want the runtime one listed)", st.Frames, len(st.Interfaces))
	}
}
