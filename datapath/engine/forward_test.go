package engine

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afxdp"
	"github.com/tabbynet/tabby/datapath/header"
)

// line is the test topology gen —veth— dut —veth— sink:
//
//	gen  g0 192.168.10.2/24  (pods 10.244.1.0/24, fd00:244:1::/64 behind it)
//	dut  d0 192.168.10.1/24, d1 192.168.20.1/24  (the engine: ports 0, 1)
//	sink s0 192.168.20.2/24  (pods 10.244.2.0/24, fd00:244:2::/64)
type line struct {
	*lab
	gen, dut, sink *topo.Netns
	// MACs: g0, d0 (gen side); d1, s0 (sink side).
	g0, d0, d1, s0 header.MAC
	tables         *datapath.Tables
}

const (
	nhToSink    = 1 // 10.244.2.0/24: a local pod behind d1
	nhToSink6   = 2 // fd00:244:2::/64: a router behind d1 (remote, no encap)
	nhToGen     = 3 // 10.244.1.0/24, fd00:244:1::/64 behind d0
	nhBlackhole = 4 // 10.244.9.0/24
)

func newLine(t *testing.T) *line {
	l := &line{lab: newLab(t)}
	l.gen, l.sink = l.ns("gen"), l.ns("sink")
	l.dut = l.router("dut")
	l.g0, l.d0 = l.veth(l.gen, "g0", l.dut, "d0")
	l.d1, l.s0 = l.veth(l.dut, "d1", l.sink, "s0")
	l.addr(l.gen, "g0", "192.168.10.2/24")
	l.addr(l.dut, "d0", "192.168.10.1/24")
	l.addr(l.dut, "d1", "192.168.20.1/24")
	l.addr(l.sink, "s0", "192.168.20.2/24")
	l.tables = newTables(t, datapath.NodeConfig{TunnelIPv4: netip.MustParseAddr("192.168.10.1")})
	setNextHop(t, l.tables, nhToSink, datapath.NextHop{Kind: datapath.NextHopLocal, Port: 1, SrcMAC: l.d1, DstMAC: l.s0},
		"10.244.2.0/24")
	setNextHop(t, l.tables, nhToSink6, datapath.NextHop{Kind: datapath.NextHopRemote, Port: 1, SrcMAC: l.d1, DstMAC: l.s0},
		"fd00:244:2::/64")
	setNextHop(t, l.tables, nhToGen, datapath.NextHop{Kind: datapath.NextHopLocal, Port: 0, SrcMAC: l.d0, DstMAC: l.g0},
		"10.244.1.0/24", "fd00:244:1::/64")
	setNextHop(t, l.tables, nhBlackhole, datapath.NextHop{Kind: datapath.NextHopBlackhole}, "10.244.9.0/24")
	return l
}

func (l *line) config(kind PortKind) Config {
	return Config{
		Interfaces:    []Interface{{Name: "d0"}, {Name: "d1"}},
		Tables:        l.tables,
		PortKind:      kind,
		PodCIDRs:      prefixes("10.244.0.0/16", "fd00:244::/32"),
		NodeAddress:   netip.MustParseAddr("192.168.10.1"),
		HostAddresses: addrs("192.168.10.1", "192.168.20.1"),
	}
}

// TestForward (tests 1 and 5): IPv4 UDP and TCP and IPv6 UDP frames sent
// from gen to pods behind the sink are forwarded by the engine (the dut's
// kernel does not forward): TTL/hop limit decremented, checksums valid, MACs
// rewritten to the next hop's, payload intact, and the counters agree,
// including drops and an ICMP error sent back to gen.
func TestForward(t *testing.T) {
	variants := []struct {
		name string
		kind PortKind
		xdp  afxdp.XDPMode
	}{
		{"afxdp", PortAFXDP, afxdp.XDPAuto},
		{"afxdp-generic", PortAFXDP, afxdp.XDPGeneric},
		{"afpacket", PortAFPacket, afxdp.XDPAuto},
	}
	for _, v := range variants {
		kind := v.kind
		t.Run(v.name, func(t *testing.T) {
			l := newLine(t)
			sinkRaw := l.raw(l.sink, "s0")
			genRaw := l.raw(l.gen, "g0")
			cfg := l.config(kind)
			for i := range cfg.Interfaces {
				cfg.Interfaces[i].XDPMode = v.xdp
			}
			e := l.start(l.dut, cfg)

			var sent []pkt
			const n = 30
			for i := range n {
				p := pkt{srcMAC: l.g0, dstMAC: l.d0, src: "10.244.1.10", dst: fmt.Sprintf("10.244.2.%d", 1+i),
					payload: fmt.Sprintf("fwd-%02d-%s", i, strings.Repeat("x", i*37))}
				switch i % 3 {
				case 1:
					p.proto = layers.IPProtocolTCP
				case 2:
					p.src, p.dst = "fd00:244:1::10", fmt.Sprintf("fd00:244:2::%x", 1+i)
				}
				sent = append(sent, p)
			}
			// Dropped by the engine: no route, blackhole. Expired: an ICMP
			// time exceeded goes back to gen.
			drops := []pkt{
				{srcMAC: l.g0, dstMAC: l.d0, src: "10.244.1.10", dst: "10.244.7.7", payload: "drop-noroute"},
				{srcMAC: l.g0, dstMAC: l.d0, src: "10.244.1.10", dst: "10.244.9.9", payload: "drop-blackhole"},
				{srcMAC: l.g0, dstMAC: l.d0, src: "fd00:244:1::10", dst: "fd00:244:7::7", payload: "drop-noroute6"},
			}
			expired := pkt{srcMAC: l.g0, dstMAC: l.d0, src: "10.244.1.10", dst: "10.244.2.99", ttl: 1, payload: "ttl-1"}
			for _, p := range append(append(sent, drops...), expired) {
				if err := genRaw.Send(p.frame(t)); err != nil {
					t.Fatal(err)
				}
			}

			got := capture(t, sinkRaw, n, hasPayload("fwd-"))
			for i, b := range got {
				// Frames come out in order: one socket, one worker.
				checkInner(t, b, sent[i], l.d1, l.s0, 63)
			}
			quiet(t, sinkRaw, 100*time.Millisecond, func(b []byte) bool {
				return hasPayload("drop-")(b) || hasPayload("ttl-")(b) || hasPayload("fwd-")(b)
			})

			// ICMP time exceeded from the node address back to gen.
			icmp := capture(t, genRaw, 1, func(b []byte) bool {
				p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
				ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
				return ok && ic.TypeCode.Type() == layers.ICMPv4TypeTimeExceeded
			})[0]
			ip := gopacket.NewPacket(icmp, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if ip.SrcIP.String() != "192.168.10.1" || ip.DstIP.String() != "10.244.1.10" || !ipv4HeaderOK(ip) {
				t.Errorf("ICMP error %v -> %v (header checksum ok %v)", ip.SrcIP, ip.DstIP, ipv4HeaderOK(ip))
			}

			total := uint64(n + len(drops) + 1)
			c := waitCounters(t, e, "after forwarding", func(c datapath.Counters) bool {
				return c.RxPackets == total && c.TxPackets == n+1
			})
			want := datapath.Counters{RxPackets: total, TxPackets: n + 1, ToLocal: 2*n/3 + 1, ToRemote: n / 3, ICMPSent: 1}
			want.Drops[datapath.DropNoRoute] = 2
			want.Drops[datapath.DropBlackhole] = 1
			want.Drops[datapath.DropTTLExpired] = 1
			c.RxBytes, c.TxBytes, c.Batches = 0, 0, 0
			if c != want {
				t.Errorf("counters\n got %s\nwant %s", fmtCounters(c), fmtCounters(want))
			}
			st := e.Stats()
			if kind == PortAFXDP {
				if r := st.Interfaces[0].Steering.RedirectPod; r != total {
					t.Errorf("steering redirected %d frames on d0, want %d", r, total)
				}
				for _, i := range st.Interfaces {
					want := afxdp.XDPDriver // veth supports native XDP
					if v.xdp == afxdp.XDPGeneric {
						want = afxdp.XDPGeneric
					}
					if i.XDPMode != want || i.XDPModeReason == "" {
						t.Errorf("%s: XDP mode %v (%q), want %v with a reason", i.Name, i.XDPMode, i.XDPModeReason, want)
					}
				}
				for _, p := range st.Ports {
					if p.SocketMode != afxdp.ModeCopy || p.SocketModeReason == "" {
						t.Errorf("%s: socket mode %v (%q), want copy mode (veth) with a reason", p.Interface, p.SocketMode,
							p.SocketModeReason)
					}
					if p.XDP.KernelRxDropped != 0 || p.XDP.KernelRxInvalidDescs != 0 || p.XDP.KernelTxInvalidDescs != 0 {
						t.Errorf("%s: kernel socket counters %+v", p.Interface, p.XDP)
					}
				}
				if f := st.Frames; f.Total == 0 || f.Free+f.Fill+f.App+f.Tx != f.Total {
					t.Errorf("frame counts %+v", f)
				}
			} else if rx := st.Ports[0].Packet.RxPackets; rx != total {
				t.Errorf("af_packet port d0 received %d frames, want %d (the filter lets other frames in)", rx, total)
			}
		})
	}
}

// TestHostTrafficPassesToKernel (test 2): ARP and BGP (TCP 179 to the dut's
// own addresses: the node address, and a host address inside a pod CIDR)
// reach the dut's kernel while the engine runs, and the engine never sees
// those frames; a pod frame sent afterwards shows the engine was live.
func TestHostTrafficPassesToKernel(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind.String(), func(t *testing.T) {
			l := newLine(t)
			// A host address inside the pod CIDR, as Calico's tunnel address.
			l.addr(l.dut, "lo", "10.244.0.1/32")
			if err := l.gen.AddRoute(netip.MustParsePrefix("10.244.0.0/16"), netip.MustParseAddr("192.168.10.1"), "g0"); err != nil {
				t.Fatal(err)
			}
			cfg := l.config(kind)
			cfg.HostAddresses = append(cfg.HostAddresses, netip.MustParseAddr("10.244.0.1"))
			e := l.start(l.dut, cfg)

			for _, addr := range []string{"192.168.10.1", "10.244.0.1"} {
				bgpSession(t, l.gen, l.dut, addr)
			}
			// The kernel answered ARP: gen has the dut's MAC.
			neigh, err := l.gen.Run("ip", "neigh", "show", "192.168.10.1", "dev", "g0")
			if err != nil || !strings.Contains(neigh, net.HardwareAddr(l.d0[:]).String()) {
				t.Errorf("gen has no neighbour entry for the dut: %q %v", neigh, err)
			}
			if c := e.Counters(); c.RxPackets != 0 {
				t.Fatalf("the engine saw host traffic: %s", fmtCounters(c))
			}
			if kind == PortAFXDP {
				s := e.Stats().Interfaces[0].Steering
				t.Logf("steering on d0: %+v", s)
				if s.PassOther == 0 || s.PassHost < 6 || s.Redirected() != 0 {
					t.Errorf("steering counters %+v: want ARP passed (other), TCP passed (host), nothing redirected", s)
				}
			}

			// The engine is live: a pod frame to gen's pods comes back to gen.
			genRaw := l.raw(l.gen, "g0")
			p := pkt{srcMAC: l.g0, dstMAC: l.d0, src: "10.244.1.10", dst: "10.244.1.20", payload: "live"}
			if err := genRaw.Send(p.frame(t)); err != nil {
				t.Fatal(err)
			}
			checkInner(t, capture(t, genRaw, 1, hasPayload("live"))[0], p, l.d0, l.g0, 63)
			waitCounters(t, e, "after the pod frame", func(c datapath.Counters) bool { return c.RxPackets == 1 && c.ToLocal == 1 })
		})
	}
}

// bgpSession opens a TCP connection from gen to addr:179, where a listener
// in dut accepts it, and exchanges a message each way.
func bgpSession(t *testing.T, gen, dut *topo.Netns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := dut.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, "179"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			accepted <- err
			return
		}
		_, err = c.Write([]byte("KEEP"))
		accepted <- err
	}()
	var conn net.Conn
	if err := gen.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(addr, "179"), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect to %s:179: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("OPEN")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "KEEP" {
		t.Fatalf("read from %s:179: %q %v", addr, buf, err)
	}
	if err := <-accepted; err != nil {
		t.Fatalf("listener on %s:179: %v", addr, err)
	}
}

// TestKernelSenderChecksumOffload pins a pitfall of veth labs. A kernel
// socket sending through a veth with TX checksum offload on (the default)
// leaves its TCP/UDP checksum unfinished (CHECKSUM_PARTIAL: only the
// pseudo-header sum is in the packet). A kernel receiver trusts the skb's
// metadata, but AF_XDP and AF_PACKET hand over the raw bytes, and once the
// engine has forwarded them the receiver sees a bad checksum and drops the
// packet. Turning TX checksum offload off on the sender's veth (ethtool -K
// dev tx off) makes the kernel finish the checksum.
func TestKernelSenderChecksumOffload(t *testing.T) {
	l := newLine(t)
	if err := l.gen.AddRoute(netip.MustParsePrefix("10.244.0.0/16"), netip.MustParseAddr("192.168.10.1"), "g0"); err != nil {
		t.Fatal(err)
	}
	sinkRaw := l.raw(l.sink, "s0")
	l.start(l.dut, l.config(PortAFXDP))
	send := func(payload string) []byte {
		t.Helper()
		if err := l.gen.Do(func() error {
			c, err := net.Dial("udp4", "10.244.2.5:7000")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(payload))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return capture(t, sinkRaw, 1, hasPayload(payload))[0]
	}

	b := send("csum-offload-on")
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if ip, ok := p.NetworkLayer().(*layers.IPv4); ok {
		if l4ChecksumOK(ip, ip.Protocol, ip.Payload) {
			t.Logf("TX checksum offload on: the kernel sent a complete UDP checksum (veth behaviour changed?)")
		} else {
			t.Logf("TX checksum offload on: the forwarded UDP checksum does not verify, as expected on veth")
		}
	}

	setTxChecksum(t, l.gen, "g0", false)
	b = send("csum-offload-off")
	src, _ := p.NetworkLayer().NetworkFlow().Endpoints()
	checkInner(t, b, pkt{src: src.String(), dst: "10.244.2.5", payload: "csum-offload-off"}, l.d1, l.s0, 63)
}

// TestXDPFallbackToGeneric: native XDP on a veth needs the peer's MTU to fit
// a page (at most 3506 on kernel 6.18); with a jumbo peer the engine falls
// back to generic mode on that interface, says why, and still forwards.
func TestXDPFallbackToGeneric(t *testing.T) {
	l := newLine(t)
	for _, n := range []struct {
		ns     *topo.Netns
		ifname string
	}{{l.gen, "g0"}, {l.dut, "d0"}} {
		link, err := n.ns.Link(n.ifname)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.ns.Netlink().LinkSetMTU(link, 9000); err != nil {
			t.Fatal(err)
		}
	}
	sinkRaw := l.raw(l.sink, "s0")
	genRaw := l.raw(l.gen, "g0")
	e := l.start(l.dut, l.config(PortAFXDP))
	st := e.Stats()
	if i := st.Interfaces[0]; i.XDPMode != afxdp.XDPGeneric || !strings.Contains(i.XDPModeReason, "native attach failed") {
		t.Errorf("d0 (peer MTU 9000): XDP %v (%q), want generic after a failed native attach", i.XDPMode, i.XDPModeReason)
	}
	if i := st.Interfaces[1]; i.XDPMode != afxdp.XDPDriver {
		t.Errorf("d1: XDP %v, want native", i.XDPMode)
	}
	p := pkt{srcMAC: l.g0, dstMAC: l.d0, src: "10.244.1.10", dst: "10.244.2.1", payload: "generic-" + strings.Repeat("z", 3000)}
	if err := genRaw.Send(p.frame(t)); err != nil {
		t.Fatal(err)
	}
	// 3000 bytes fit the frame but not the sink's 1500-byte MTU: the
	// engine answers with fragmentation needed (DF is set).
	c := waitCounters(t, e, "big frame", func(c datapath.Counters) bool { return c.RxPackets == 1 })
	if c.Drops[datapath.DropTooBig] != 1 || c.ICMPSent != 1 {
		t.Errorf("3000-byte packet to a 1500-byte next hop: %s", fmtCounters(c))
	}
	// 5000 bytes do not fit a 4096-byte UMEM frame: the kernel drops it
	// at the socket (XDP_STATISTICS rx_dropped); the engine never sees it.
	p.payload = "generic-" + strings.Repeat("z", 5000)
	if err := genRaw.Send(p.frame(t)); err != nil {
		t.Fatal(err)
	}
	p.payload = "generic-small"
	if err := genRaw.Send(p.frame(t)); err != nil {
		t.Fatal(err)
	}
	checkInner(t, capture(t, sinkRaw, 1, hasPayload("generic-"))[0], p, l.d1, l.s0, 63)
	c = waitCounters(t, e, "small frame", func(c datapath.Counters) bool { return c.TxPackets == 2 })
	if c.RxPackets != 2 {
		t.Errorf("counters %s: want 2 frames received (the 5000-byte one never reaches the engine)", fmtCounters(c))
	}
	if d := e.Stats().Ports[0].XDP.KernelRxDropped; d != 1 {
		t.Errorf("kernel rx_dropped on d0 = %d, want 1 (the 5000-byte frame)", d)
	}
}
