package engine

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

// VTEP MACs of the VXLAN endpoints (as Calico's vxlan.calico devices).
var (
	vtep1 = header.MAC{0x66, 0x6a, 0, 0, 0, 0x01}
	vtep2 = header.MAC{0x66, 0x6a, 0, 0, 0, 0x02}
	vtep3 = header.MAC{0x66, 0x6a, 0, 0, 0, 0x03}
)

// underlay is the part shared by the encapsulation tests: gen, dut1 and a
// wire namespace whose bridge joins dut1's underlay veth to the other
// node(s); a packet socket on the bridge port facing dut1 taps the wire.
//
//	gen g0 ── a0 dut1 u0 (192.168.100.1/24) ── w1 wire:br0
type underlay struct {
	*lab
	gen, dut1, wire *topo.Netns
	g0, a0, u1      header.MAC // gen's g0, dut1's a0 and u0
	tables1         *datapath.Tables
}

const (
	nhTunnel = 1 // towards the other node, encapsulated
	nhLocal  = 2 // a local pod network (gen or sink)
)

var (
	node1 = netip.MustParseAddr("192.168.100.1")
	node2 = netip.MustParseAddr("192.168.100.2")
	node3 = netip.MustParseAddr("192.168.100.3")
)

func newUnderlay(t *testing.T) *underlay {
	u := &underlay{lab: newLab(t)}
	u.gen, u.wire = u.ns("gen"), u.ns("wire")
	u.dut1 = u.router("dut1")
	u.g0, u.a0 = u.veth(u.gen, "g0", u.dut1, "a0")
	u.u1, _ = u.veth(u.dut1, "u0", u.wire, "w1")
	u.addr(u.dut1, "u0", "192.168.100.1/24")
	u.tables1 = newTables(t, datapath.NodeConfig{TunnelIPv4: node1, DecapIPIP: true, DecapVXLAN: true})
	setNextHop(t, u.tables1, nhLocal, datapath.NextHop{Kind: datapath.NextHopLocal, Port: 0, SrcMAC: u.a0, DstMAC: u.g0},
		"10.244.1.0/24", "fd00:244:1::/64")
	return u
}

// nodeConfig is the engine configuration of a node with the given node
// address and interfaces.
func nodeConfig(kind PortKind, tables *datapath.Tables, node netip.Addr, ifs ...string) Config {
	cfg := Config{Tables: tables, PortKind: kind, PodCIDRs: prefixes("10.244.0.0/16", "fd00:244::/32"),
		NodeAddress: node, HostAddresses: []netip.Addr{node}}
	for _, i := range ifs {
		cfg.Interfaces = append(cfg.Interfaces, Interface{Name: i})
	}
	return cfg
}

func tunnel(t *testing.T, local, nextHop header.MAC, src, dst netip.Addr, vtep, remoteVTEP header.MAC) *encap.Tunnel {
	t.Helper()
	tun, err := encap.NewTunnel(encap.TunnelConfig{LocalMAC: local, NextHopMAC: nextHop, Src: src.As4(), Dst: dst.As4(),
		VTEPMAC: vtep, RemoteVTEPMAC: remoteVTEP})
	if err != nil {
		t.Fatal(err)
	}
	return tun
}

// TestEncapRoundTrip (tests 3 and 5): two Tabby nodes, each with its own
// engine, carry pod traffic over the underlay:
//
//	gen ── dut1 ══ wire ══ dut2 ── sink
//
// dut1 encapsulates (VXLAN, then IP-in-IP) towards dut2's node address,
// dut2 decapsulates and delivers to the sink, which receives the original
// packet with TTL decremented twice. The tap on the wire decodes the
// encapsulation: outer MACs and IPs, UDP 4789 / VNI 4096 or IP protocol 4.
func TestEncapRoundTrip(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind.String(), func(t *testing.T) {
			u := newUnderlay(t)
			sink := u.ns("sink")
			dut2 := u.router("dut2")
			u2, _ := u.veth(dut2, "u0", u.wire, "w2")
			b0, s0 := u.veth(dut2, "b0", sink, "s0")
			u.addr(dut2, "u0", "192.168.100.2/24")
			u.bridge(u.wire, "w1", "w2")

			tables2 := newTables(t, datapath.NodeConfig{TunnelIPv4: node2, DecapIPIP: true, DecapVXLAN: true})
			setNextHop(t, tables2, nhLocal, datapath.NextHop{Kind: datapath.NextHopLocal, Port: 1, SrcMAC: b0, DstMAC: s0},
				"10.244.2.0/24", "fd00:244:2::/64")
			setNextHop(t, tables2, nhTunnel, datapath.NextHop{Kind: datapath.NextHopRemote, Port: 0, Encap: datapath.EncapVXLAN,
				Tunnel: tunnel(t, u2, u.u1, node2, node1, vtep2, vtep1)}, "10.244.1.0/24")
			tun12 := tunnel(t, u.u1, u2, node1, node2, vtep1, vtep2)
			toNode2 := func(m datapath.EncapMode) datapath.NextHop {
				return datapath.NextHop{Kind: datapath.NextHopRemote, Port: 1, Encap: m, Tunnel: tun12}
			}
			setNextHop(t, u.tables1, nhTunnel, toNode2(datapath.EncapVXLAN), "10.244.2.0/24", "fd00:244:2::/64")

			genRaw := u.raw(u.gen, "g0")
			tap := u.raw(u.wire, "w1")
			sinkRaw := u.raw(sink, "s0")
			e1 := u.start(u.dut1, nodeConfig(kind, u.tables1, node1, "a0", "u0"))
			e2 := u.start(dut2, nodeConfig(kind, tables2, node2, "u0", "b0"))

			for _, mode := range []datapath.EncapMode{datapath.EncapVXLAN, datapath.EncapIPIP} {
				t.Run(mode.String(), func(t *testing.T) {
					if err := u.tables1.SetNextHop(nhTunnel, toNode2(mode)); err != nil {
						t.Fatal(err)
					}
					before1, before2 := e1.Counters(), e2.Counters()
					tag := mode.String() + "-"
					var sent []pkt
					const n = 12
					for i := range n {
						p := pkt{srcMAC: u.g0, dstMAC: u.a0, src: "10.244.1.10", dst: fmt.Sprintf("10.244.2.%d", 1+i),
							payload: fmt.Sprintf("%s%02d-%s", tag, i, strings.Repeat("y", 50*i))}
						if i%3 == 1 {
							p.proto = layers.IPProtocolTCP
						}
						if i%3 == 2 && mode == datapath.EncapVXLAN {
							p.src, p.dst = "fd00:244:1::10", fmt.Sprintf("fd00:244:2::%x", 1+i)
						}
						sent = append(sent, p)
						if err := genRaw.Send(p.frame(t)); err != nil {
							t.Fatal(err)
						}
					}
					for i, b := range capture(t, sinkRaw, n, hasPayload(tag)) {
						checkInner(t, b, sent[i], b0, s0, 62)
					}
					for i, b := range capture(t, tap, n, hasPayload(tag)) {
						checkUnderlay(t, b, mode, u.u1, u2, node1, node2, vtep1, vtep2)
						checkEncapsulated(t, b, mode, sent[i])
					}
					c1 := waitCounters(t, e1, "dut1", func(c datapath.Counters) bool { return c.TxPackets-before1.TxPackets == n })
					c2 := waitCounters(t, e2, "dut2", func(c datapath.Counters) bool { return c.TxPackets-before2.TxPackets == n })
					enc, dec := c1.EncapVXLAN-before1.EncapVXLAN, c2.DecapVXLAN-before2.DecapVXLAN
					if mode == datapath.EncapIPIP {
						enc, dec = c1.EncapIPIP-before1.EncapIPIP, c2.DecapIPIP-before2.DecapIPIP
					}
					if enc != n || c1.ToRemote-before1.ToRemote != n || dec != n || c2.ToLocal-before2.ToLocal != n ||
						c1.Dropped() != 0 || c2.Dropped() != 0 {
						t.Errorf("counters\ndut1 %s\ndut2 %s", fmtCounters(c1), fmtCounters(c2))
					}
				})
			}
		})
	}
}

// checkUnderlay checks the outer headers of a frame captured on the wire.
func checkUnderlay(t *testing.T, b []byte, mode datapath.EncapMode, srcMAC, dstMAC header.MAC, src, dst netip.Addr,
	vtep, remoteVTEP header.MAC) {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	ls := p.Layers()
	if len(ls) < 3 {
		t.Fatalf("underlay frame: %v", p)
	}
	eth, ok1 := ls[0].(*layers.Ethernet)
	outer, ok2 := ls[1].(*layers.IPv4)
	if !ok1 || !ok2 {
		t.Fatalf("underlay frame is not Ethernet/IPv4: %v", p)
	}
	if !bytes.Equal(eth.SrcMAC, hw(srcMAC)) || !bytes.Equal(eth.DstMAC, hw(dstMAC)) {
		t.Errorf("outer MACs %v -> %v, want %v -> %v", eth.SrcMAC, eth.DstMAC, hw(srcMAC), hw(dstMAC))
	}
	if outer.SrcIP.String() != src.String() || outer.DstIP.String() != dst.String() {
		t.Errorf("outer IPs %v -> %v, want %v -> %v", outer.SrcIP, outer.DstIP, src, dst)
	}
	if !ipv4HeaderOK(outer) || outer.Flags&layers.IPv4DontFragment == 0 || outer.TTL != encap.DefaultTTL {
		t.Errorf("outer IPv4 header: checksum ok %v, flags %v, TTL %d", ipv4HeaderOK(outer), outer.Flags, outer.TTL)
	}
	switch mode {
	case datapath.EncapIPIP:
		if outer.Protocol != layers.IPProtocolIPv4 {
			t.Errorf("outer protocol %v, want 4 (IP-in-IP)", outer.Protocol)
		}
		if _, ok := ls[2].(*layers.IPv4); !ok {
			t.Errorf("IP-in-IP payload is %v, want IPv4", ls[2].LayerType())
		}
	case datapath.EncapVXLAN:
		udp, ok := ls[2].(*layers.UDP)
		if !ok || len(ls) < 5 {
			t.Fatalf("VXLAN frame: %v", p)
		}
		if udp.DstPort != 4789 || udp.SrcPort < 49152 || udp.Checksum != 0 {
			t.Errorf("outer UDP %d -> %d checksum %#x, want 49152+ -> 4789, 0", udp.SrcPort, udp.DstPort, udp.Checksum)
		}
		vx, ok := ls[3].(*layers.VXLAN)
		if !ok || !vx.ValidIDFlag || vx.VNI != 4096 {
			t.Fatalf("VXLAN header %+v, want I flag and VNI 4096", ls[3])
		}
		inner, ok := ls[4].(*layers.Ethernet)
		if !ok || !bytes.Equal(inner.SrcMAC, hw(vtep)) || !bytes.Equal(inner.DstMAC, hw(remoteVTEP)) {
			t.Errorf("inner Ethernet %v, want %v -> %v", ls[4], hw(vtep), hw(remoteVTEP))
		}
	}
}

// checkEncapsulated checks the inner packet of an underlay frame: sent
// packet, TTL decremented once (by the encapsulating node).
func checkEncapsulated(t *testing.T, b []byte, mode datapath.EncapMode, sent pkt) {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	ls := p.Layers()
	innerAt := 2 // IP-in-IP: Ethernet, outer IPv4, inner IP
	if mode == datapath.EncapVXLAN {
		innerAt = 5 // Ethernet, IPv4, UDP, VXLAN, Ethernet, inner IP
	}
	if len(ls) <= innerAt {
		t.Fatalf("encapsulated frame: %v", p)
	}
	var ttl uint8
	switch ip := ls[innerAt].(type) {
	case *layers.IPv4:
		ttl = ip.TTL
		if !ipv4HeaderOK(ip) || ip.DstIP.String() != sent.dst {
			t.Errorf("inner IPv4 to %v, header checksum ok %v", ip.DstIP, ipv4HeaderOK(ip))
		}
	case *layers.IPv6:
		ttl = ip.HopLimit
	default:
		t.Fatalf("inner layer %v", ls[innerAt].LayerType())
	}
	if ttl != 63 {
		t.Errorf("inner TTL %d on the underlay, want 63", ttl)
	}
}

// TestKernelVXLANInterop (test 4): dut1's engine exchanges VXLAN with the
// kernel's VXLAN device in another namespace, programmed as Calico programs
// vxlan.calico (VNI 4096, port 4789, no learning, a permanent neighbour
// entry and an FDB entry for the remote VTEP, an onlink route per block):
// Tabby encapsulates and the kernel decapsulates to a UDP listener, and the
// kernel encapsulates and Tabby decapsulates to gen.
//
//	gen ── dut1 ══ wire ══ kvx (vx0)
func TestKernelVXLANInterop(t *testing.T) {
	u := newUnderlay(t)
	kvx := u.ns("kvx")
	k0, _ := u.veth(kvx, "k0", u.wire, "w2")
	u.addr(kvx, "k0", "192.168.100.3/24")
	u.bridge(u.wire, "w1", "w2")
	u.run(kvx, "ip", "link", "add", "vx0", "type", "vxlan", "id", "4096", "dstport", "4789",
		"local", node3.String(), "dev", "k0", "nolearning")
	u.run(kvx, "ip", "link", "set", "vx0", "address", hw(vtep3).String(), "up")
	u.run(kvx, "ip", "addr", "add", "10.244.3.0/32", "dev", "vx0")
	u.run(kvx, "ip", "addr", "add", "10.244.3.5/32", "dev", "lo") // the "pod" the listener is on
	u.run(kvx, "ip", "neigh", "add", "10.244.1.0", "lladdr", hw(vtep1).String(), "dev", "vx0", "nud", "permanent")
	u.run(kvx, "bridge", "fdb", "append", hw(vtep1).String(), "dev", "vx0", "dst", node1.String())
	u.run(kvx, "ip", "route", "add", "10.244.1.0/24", "via", "10.244.1.0", "dev", "vx0", "onlink")
	// With TX checksum offload on (the veth default) the kernel leaves the
	// outer UDP checksum (udpcsum is the default) and the inner one to
	// "hardware", which on a veth never computes them: Tabby would drop the
	// frames as bad_tunnel. See TestKernelSenderChecksumOffload.
	setTxChecksum(t, kvx, "k0", false)

	setNextHop(t, u.tables1, nhTunnel, datapath.NextHop{Kind: datapath.NextHopRemote, Port: 1, Encap: datapath.EncapVXLAN,
		Tunnel: tunnel(t, u.u1, k0, node1, node3, vtep1, vtep3)}, "10.244.3.0/24")
	genRaw := u.raw(u.gen, "g0")
	e := u.start(u.dut1, nodeConfig(PortAFXDP, u.tables1, node1, "a0", "u0"))

	var ln net.PacketConn
	if err := kvx.Do(func() (err error) {
		ln, err = net.ListenPacket("udp4", "10.244.3.5:7000")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	const n = 5
	t.Run("tabby_to_kernel", func(t *testing.T) {
		for i := range n {
			p := pkt{srcMAC: u.g0, dstMAC: u.a0, src: "10.244.1.10", dst: "10.244.3.5", payload: fmt.Sprintf("k-fwd-%d", i)}
			if err := genRaw.Send(p.frame(t)); err != nil {
				t.Fatal(err)
			}
		}
		buf := make([]byte, 2048)
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i := range n {
			m, from, err := ln.ReadFrom(buf)
			if err != nil {
				t.Fatalf("listener behind the kernel VXLAN device got %d of %d datagrams: %v (dut1 %s)", i, n, err,
					fmtCounters(e.Counters()))
			}
			if want := fmt.Sprintf("k-fwd-%d", i); string(buf[:m]) != want || from.String() != "10.244.1.10:40000" {
				t.Errorf("got %q from %v, want %q from 10.244.1.10:40000", buf[:m], from, want)
			}
		}
		waitCounters(t, e, "dut1", func(c datapath.Counters) bool { return c.EncapVXLAN == n })
	})

	t.Run("kernel_to_tabby", func(t *testing.T) {
		var conn *net.UDPConn
		if err := kvx.Do(func() (err error) {
			conn, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.244.3.5:7001")),
				net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.244.1.10:40000")))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for i := range n {
			if _, err := conn.Write(fmt.Appendf(nil, "k-rev-%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		got := capture(t, genRaw, n, hasPayload("k-rev-"))
		for i, b := range got {
			want := pkt{src: "10.244.3.5", dst: "10.244.1.10", payload: fmt.Sprintf("k-rev-%d", i)}
			checkInner(t, b, want, u.a0, u.g0, 63)
		}
		c := waitCounters(t, e, "dut1", func(c datapath.Counters) bool { return c.DecapVXLAN == n && c.ToLocal == n })
		if c.Dropped() != 0 {
			t.Errorf("dut1 dropped frames: %s", fmtCounters(c))
		}
	})
}
