package datapath

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

// Ports of the test node.
const (
	portHost   PortID = 0
	portUplink PortID = 1
	portPods   PortID = 2
)

// Next-hop ids of the test node.
const (
	nhPod      = 1 // local pod 10.244.1.5 / fd00:244:1::5
	nhSender   = 2 // local pod 10.244.1.7 (senders of most test packets)
	nhVXLAN    = 3 // node 2 over VXLAN
	nhIPIP     = 4 // node 3 over IP-in-IP
	nhDirect   = 5 // node 4, same subnet, no encap
	nhHost     = 6
	nhBlack    = 7
	nhSmallMTU = 8 // a pod with MTU 1000
)

var (
	macNode    = header.MAC{0x02, 0, 0, 0, 0, 0x01}
	macPod     = header.MAC{0x02, 0, 0, 0, 1, 0x05}
	macSender  = header.MAC{0x02, 0, 0, 0, 1, 0x07}
	macRouter  = header.MAC{0x02, 0, 0, 0, 0, 0xfe}
	macNode4   = header.MAC{0x02, 0, 0, 0, 0, 0x04}
	macVTEP1   = header.MAC{0x66, 0, 0, 0, 0, 0x01}
	macVTEP2   = header.MAC{0x66, 0, 0, 0, 0, 0x02}
	nodeIP     = netip.MustParseAddr("192.168.0.1")
	node2IP    = netip.MustParseAddr("192.168.1.2")
	node3IP    = netip.MustParseAddr("192.168.1.3")
	routerIPv6 = netip.MustParseAddr("fd00::1")
)

type testNode struct {
	t        testing.TB
	compiler *acl.Compiler
	tables   *Tables
	pool     *MemPool
	ports    []*MemPort
	w        *Worker
}

func newTestNode(t testing.TB) *testNode {
	t.Helper()
	tables, err := NewTables(NodeConfig{
		TunnelIPv4: nodeIP, RouterIPv6: routerIPv6, HostPort: portHost,
		DecapIPIP: true, DecapVXLAN: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{t: t, tables: tables, pool: NewMemPool(512, 2048, 128)}
	var ports []Port
	for i, name := range []string{"host", "uplink", "pods"} {
		p := n.pool.NewPort(name, PortID(i))
		n.ports = append(n.ports, p)
		ports = append(ports, p)
	}
	n.w, err = NewWorker(tables, WorkerConfig{Ports: ports, BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	tun := func(dst netip.Addr) *encap.Tunnel {
		tun, err := encap.NewTunnel(encap.TunnelConfig{
			LocalMAC: macNode, NextHopMAC: macRouter,
			Src: nodeIP.As4(), Dst: dst.As4(),
			VTEPMAC: macVTEP1, RemoteVTEPMAC: macVTEP2,
		})
		if err != nil {
			t.Fatal(err)
		}
		return tun
	}
	nhs := map[uint32]NextHop{
		nhPod:      {Kind: NextHopLocal, Port: portPods, SrcMAC: macNode, DstMAC: macPod},
		nhSender:   {Kind: NextHopLocal, Port: portPods, SrcMAC: macNode, DstMAC: macSender},
		nhVXLAN:    {Kind: NextHopRemote, Port: portUplink, Encap: EncapVXLAN, Tunnel: tun(node2IP)},
		nhIPIP:     {Kind: NextHopRemote, Port: portUplink, Encap: EncapIPIP, Tunnel: tun(node3IP)},
		nhDirect:   {Kind: NextHopRemote, Port: portUplink, SrcMAC: macNode, DstMAC: macNode4},
		nhHost:     {Kind: NextHopHost, Port: NoPort},
		nhBlack:    {Kind: NextHopBlackhole},
		nhSmallMTU: {Kind: NextHopLocal, Port: portPods, SrcMAC: macNode, DstMAC: macPod, MTU: 1000},
	}
	for id, nh := range nhs {
		if err := tables.SetNextHop(id, nh); err != nil {
			t.Fatal(err)
		}
	}
	routes := map[string]uint32{
		"10.244.1.5/32":     nhPod,
		"10.244.1.7/32":     nhSender,
		"10.244.2.0/26":     nhVXLAN,
		"10.244.3.0/26":     nhIPIP,
		"10.244.4.0/26":     nhDirect,
		"10.244.9.0/24":     nhBlack,
		"10.244.8.8/32":     nhSmallMTU,
		"192.168.0.1/32":    nhHost,
		"fd00:244:1::5/128": nhPod,
		"fd00:244:1::7/128": nhSender,
		"fd00:244:2::/122":  nhVXLAN,
		"fd00:244:3::/122":  nhIPIP,
	}
	for p, id := range routes {
		if err := tables.AddRoute(netip.MustParsePrefix(p), id); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// run injects packets on port in and processes them; it returns what each
// port transmitted.
func (n *testNode) run(in PortID, pkts ...[]byte) [][][]byte {
	n.t.Helper()
	for _, p := range pkts {
		if err := n.ports[in].Inject(p); err != nil {
			n.t.Fatal(err)
		}
	}
	for n.w.Poll() > 0 {
	}
	out := make([][][]byte, len(n.ports))
	for i, p := range n.ports {
		out[i] = p.Sent()
	}
	if got := n.pool.FreeFrames(); got != 512 {
		n.t.Fatalf("frame leak: %d of 512 frames free after the run", got)
	}
	return out
}

type pktSpec struct {
	src, dst string
	ttl      uint8
	df       bool
	proto    string // udp, tcp, icmp
	sport    uint16
	dport    uint16
	payload  int
	vlan     uint16
	tos      uint8
	badCsum  bool
	dstMAC   header.MAC
	etherPad int
}

func buildPacket(t testing.TB, s pktSpec) []byte {
	t.Helper()
	if s.ttl == 0 {
		s.ttl = 64
	}
	if s.proto == "" {
		s.proto = "udp"
	}
	src, dst := netip.MustParseAddr(s.src), netip.MustParseAddr(s.dst)
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(macSender[:]), DstMAC: net.HardwareAddr(macNode[:]), EthernetType: layers.EthernetTypeIPv4}
	var ls []gopacket.SerializableLayer
	var netLayer gopacket.NetworkLayer
	if src.Is6() {
		eth.EthernetType = layers.EthernetTypeIPv6
	}
	if s.vlan != 0 {
		ls = append(ls, eth, &layers.Dot1Q{VLANIdentifier: s.vlan, Type: eth.EthernetType})
		eth.EthernetType = layers.EthernetTypeDot1Q
	} else {
		ls = append(ls, eth)
	}
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: s.ttl, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), TOS: s.tos, Id: 0x1234}
		if s.df {
			ip.Flags = layers.IPv4DontFragment
		}
		switch s.proto {
		case "udp":
			ip.Protocol = layers.IPProtocolUDP
		case "tcp":
			ip.Protocol = layers.IPProtocolTCP
		case "icmp":
			ip.Protocol = layers.IPProtocolICMPv4
		}
		netLayer = ip
		ls = append(ls, ip)
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: s.ttl, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), TrafficClass: s.tos}
		switch s.proto {
		case "udp":
			ip.NextHeader = layers.IPProtocolUDP
		case "tcp":
			ip.NextHeader = layers.IPProtocolTCP
		case "icmp":
			ip.NextHeader = layers.IPProtocolICMPv6
		}
		netLayer = ip
		ls = append(ls, ip)
	}
	switch s.proto {
	case "udp":
		u := &layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: layers.UDPPort(s.dport)}
		_ = u.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, u)
	case "tcp":
		tc := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), SYN: true, Window: 1000}
		_ = tc.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, tc)
	case "icmp":
		if src.Is4() {
			ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 7, Seq: 1})
		} else {
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
			_ = ic.SetNetworkLayerForChecksum(netLayer)
			ls = append(ls, ic, &layers.ICMPv6Echo{Identifier: 7, SeqNumber: 1})
		}
	}
	ls = append(ls, gopacket.Payload(bytes.Repeat([]byte{0xab}, s.payload)))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), buf.Bytes()...)
	if s.badCsum {
		b[len(b)-len(b)+14+10] ^= 0xff
	}
	b = append(b, make([]byte, s.etherPad)...)
	return b
}

func decode(t testing.TB, b []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode output: %v", el.Error())
	}
	return p
}

func mustIPv4(t testing.TB, p gopacket.Packet) *layers.IPv4 {
	t.Helper()
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip == nil {
		t.Fatalf("no IPv4 layer in %v", p)
	}
	if !header.IPv4(ip.Contents).HeaderChecksumOK() {
		t.Fatalf("IPv4 header checksum wrong in %v", p)
	}
	return ip
}

// only returns the single packet sent on port, failing if the others sent
// anything.
func only(t testing.TB, out [][][]byte, port PortID) []byte {
	t.Helper()
	for i, pkts := range out {
		want := 0
		if PortID(i) == port {
			want = 1
		}
		if len(pkts) != want {
			t.Fatalf("port %d sent %d packets, want %d", i, len(pkts), want)
		}
	}
	return out[port][0]
}

func TestForwardLocalPod(t *testing.T) {
	n := newTestNode(t)
	in := buildPacket(t, pktSpec{src: "10.244.2.9", dst: "10.244.1.5", sport: 40001, dport: 31337, payload: 18, ttl: 10, vlan: 12, etherPad: 6})
	out := only(t, n.run(portUplink, in), portPods)
	p := decode(t, out)
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if header.MAC(eth.DstMAC) != macPod || header.MAC(eth.SrcMAC) != macNode || eth.EthernetType != layers.EthernetTypeIPv4 {
		t.Fatalf("ethernet %v -> %v type %v: want rewritten MACs, untagged IPv4", eth.SrcMAC, eth.DstMAC, eth.EthernetType)
	}
	ip := mustIPv4(t, p)
	if ip.TTL != 9 {
		t.Fatalf("TTL %d, want 9", ip.TTL)
	}
	if len(out) != 14+int(ip.Length) {
		t.Fatalf("frame %d bytes, want %d (VLAN tag and padding stripped)", len(out), 14+int(ip.Length))
	}
	c := n.w.Counters()
	if c.RxPackets != 1 || c.TxPackets != 1 || c.ToLocal != 1 || c.Dropped() != 0 {
		t.Fatalf("counters %+v", c)
	}
}

func TestForwardIPv6LocalPod(t *testing.T) {
	n := newTestNode(t)
	in := buildPacket(t, pktSpec{src: "fd00:244:2::9", dst: "fd00:244:1::5", sport: 40001, dport: 31337, payload: 10, ttl: 5})
	out := only(t, n.run(portUplink, in), portPods)
	ip := decode(t, out).Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if ip.HopLimit != 4 {
		t.Fatalf("hop limit %d, want 4", ip.HopLimit)
	}
}

func TestForwardVXLANEncap(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		dst  string
	}{
		{"ipv4", "10.244.1.7", "10.244.2.10"},
		{"ipv6", "fd00:244:1::7", "fd00:244:2::10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t)
			in := buildPacket(t, pktSpec{src: tc.src, dst: tc.dst, sport: 40000, dport: 80, proto: "tcp", payload: 100})
			out := only(t, n.run(portPods, in), portUplink)
			p := decode(t, out)
			outer := mustIPv4(t, p)
			if netip.AddrFrom4([4]byte(outer.SrcIP.To4())) != nodeIP || netip.AddrFrom4([4]byte(outer.DstIP.To4())) != node2IP {
				t.Fatalf("outer %v -> %v", outer.SrcIP, outer.DstIP)
			}
			udp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if udp.DstPort != 4789 || udp.SrcPort < 49152 {
				t.Fatalf("outer UDP %d -> %d", udp.SrcPort, udp.DstPort)
			}
			vx := p.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
			if vx.VNI != 4096 {
				t.Fatalf("VNI %d", vx.VNI)
			}
			inner := gopacket.NewPacket(vx.Payload, layers.LayerTypeEthernet, gopacket.Default)
			ieth := inner.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if header.MAC(ieth.SrcMAC) != macVTEP1 || header.MAC(ieth.DstMAC) != macVTEP2 {
				t.Fatalf("inner MACs %v -> %v", ieth.SrcMAC, ieth.DstMAC)
			}
			if n.w.Counters().EncapVXLAN != 1 {
				t.Fatalf("counters %+v", n.w.Counters())
			}
		})
	}
}

func TestForwardIPIPEncap(t *testing.T) {
	n := newTestNode(t)
	in := buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.3.10", sport: 5, dport: 6, payload: 30, tos: 0xb8 | 1})
	out := only(t, n.run(portPods, in), portUplink)
	p := decode(t, out)
	ips := p.Layers()
	outer := mustIPv4(t, p)
	if outer.Protocol != layers.IPProtocolIPv4 || netip.AddrFrom4([4]byte(outer.DstIP.To4())) != node3IP {
		t.Fatalf("outer %v", outer)
	}
	if outer.TOS>>2 != 0xb8>>2 {
		t.Fatalf("outer DSCP %#x, want inner's %#x", outer.TOS>>2, 0xb8>>2)
	}
	var innerIP *layers.IPv4
	for _, l := range ips {
		if ip, ok := l.(*layers.IPv4); ok && ip != outer {
			innerIP = ip
		}
	}
	if innerIP == nil || innerIP.TTL != 63 || netip.AddrFrom4([4]byte(innerIP.DstIP.To4())).String() != "10.244.3.10" {
		t.Fatalf("inner %v", innerIP)
	}
}

func TestForwardIPv6OverIPIPUnsupported(t *testing.T) {
	n := newTestNode(t)
	in := buildPacket(t, pktSpec{src: "fd00:244:1::7", dst: "fd00:244:3::10", payload: 10})
	n.run(portPods, in)
	if c := n.w.Counters(); c.Drops[DropEncapUnsupported] != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestForwardDirect(t *testing.T) {
	n := newTestNode(t)
	in := buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.4.10", payload: 30})
	out := only(t, n.run(portPods, in), portUplink)
	eth := decode(t, out).Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if header.MAC(eth.DstMAC) != macNode4 {
		t.Fatalf("dst MAC %v", eth.DstMAC)
	}
}

// encapFrame encapsulates inner towards this node, as a remote node would.
func encapFrame(t testing.TB, inner []byte, mode EncapMode, vni uint32) []byte {
	t.Helper()
	buf := make([]byte, 256+len(inner))
	copy(buf[128:], inner)
	tun, err := encap.NewTunnel(encap.TunnelConfig{LocalMAC: macRouter, NextHopMAC: macNode, Src: node2IP.As4(), Dst: nodeIP.As4(),
		VTEPMAC: macVTEP2, RemoteVTEPMAC: macVTEP1, VNI: vni})
	if err != nil {
		t.Fatal(err)
	}
	var off, n int
	if mode == EncapVXLAN {
		off, n = encap.VXLANEncap(buf, 128, len(inner), tun, 12345)
	} else {
		off, n = encap.IPIPEncap(buf, 128, len(inner), tun)
	}
	return append([]byte(nil), buf[off:off+n]...)
}

func TestDecapToLocalPod(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode EncapMode
	}{{"vxlan", EncapVXLAN}, {"ipip", EncapIPIP}} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t)
			inner := buildPacket(t, pktSpec{src: "10.244.2.9", dst: "10.244.1.5", sport: 1, dport: 2, payload: 40, ttl: 63})
			out := only(t, n.run(portUplink, encapFrame(t, inner, tc.mode, 4096)), portPods)
			p := decode(t, out)
			ip := mustIPv4(t, p)
			if ip.TTL != 62 || p.Layer(layers.LayerTypeUDP) == nil {
				t.Fatalf("decapsulated packet %v", p)
			}
			if !bytes.Equal(out[14+20+8:], inner[14+20+8:]) {
				t.Fatal("payload changed by decap+forward")
			}
			c := n.w.Counters()
			if c.DecapVXLAN+c.DecapIPIP != 1 || c.ToLocal != 1 {
				t.Fatalf("counters %+v", c)
			}
		})
	}
}

// TestDecapPartialUDPChecksum: a VXLAN frame whose outer UDP checksum was
// left for offload (the pseudo-header sum only, as a Linux VXLAN device's
// frames arrive over a veth) is decapsulated by default and dropped when
// the node verifies VXLAN checksums.
func TestDecapPartialUDPChecksum(t *testing.T) {
	inner := buildPacket(t, pktSpec{src: "10.244.2.9", dst: "10.244.1.5", sport: 1, dport: 2, payload: 40, ttl: 63})
	frame := encapFrame(t, inner, EncapVXLAN, 4096)
	ip := frame[14:34]
	udpLen := len(frame) - 34
	s := header.PseudoHeaderChecksumIPv4(header.ProtoUDP, [4]byte(ip[12:16]), [4]byte(ip[16:20]), uint16(udpLen))
	partial := ^header.Checksum(nil, s) // what CHECKSUM_PARTIAL leaves in the field
	frame[34+6], frame[34+7] = byte(^partial>>8), byte(^partial)
	if header.Checksum(frame[34:], s) == 0xffff {
		t.Fatal("test frame has a valid checksum")
	}

	n := newTestNode(t)
	only(t, n.run(portUplink, append([]byte(nil), frame...)), portPods)
	if c := n.w.Counters(); c.DecapVXLAN != 1 {
		t.Fatalf("default: counters %+v", c)
	}

	v := newTestNode(t)
	cfg := v.tables.Load().Node
	cfg.VerifyVXLANChecksum = true
	if err := v.tables.SetNode(cfg); err != nil {
		t.Fatal(err)
	}
	v.run(portUplink, frame)
	if c := v.w.Counters(); c.Drops[DropBadTunnel] != 1 || c.TxPackets != 0 {
		t.Fatalf("verifying: counters %+v", c)
	}
}

func TestDecapWrongVNIDropped(t *testing.T) {
	n := newTestNode(t)
	inner := buildPacket(t, pktSpec{src: "10.244.2.9", dst: "10.244.1.5", payload: 40})
	n.run(portUplink, encapFrame(t, inner, EncapVXLAN, 77))
	if c := n.w.Counters(); c.Drops[DropBadTunnel] != 1 || c.TxPackets != 0 {
		t.Fatalf("counters %+v", c)
	}
}

func TestTTLExpiredSendsTimeExceeded(t *testing.T) {
	n := newTestNode(t)
	in := buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.2.10", ttl: 1, payload: 20})
	out := only(t, n.run(portPods, in), portPods)
	p := decode(t, out)
	ip := mustIPv4(t, p)
	if netip.AddrFrom4([4]byte(ip.SrcIP.To4())) != nodeIP || ip.DstIP.String() != "10.244.1.7" {
		t.Fatalf("ICMP %v -> %v", ip.SrcIP, ip.DstIP)
	}
	ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ic.TypeCode.Type() != 11 || ic.TypeCode.Code() != 0 {
		t.Fatalf("ICMP %v", ic.TypeCode)
	}
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if header.MAC(eth.DstMAC) != macSender {
		t.Fatalf("ICMP error sent to %v, want the sender's MAC", eth.DstMAC)
	}
	c := n.w.Counters()
	if c.Drops[DropTTLExpired] != 1 || c.ICMPSent != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestHopLimitExpiredIPv6(t *testing.T) {
	n := newTestNode(t)
	in := buildPacket(t, pktSpec{src: "fd00:244:1::7", dst: "fd00:244:2::10", ttl: 1, payload: 20})
	out := only(t, n.run(portPods, in), portPods)
	p := decode(t, out)
	ic, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if ic == nil || ic.TypeCode.Type() != 3 {
		t.Fatalf("want ICMPv6 time exceeded, got %v", p)
	}
}

func TestTooBigWithDFSendsFragNeeded(t *testing.T) {
	n := newTestNode(t)
	// VXLAN tunnel MTU is 1450: a 1472-byte IP packet with DF does not fit.
	in := buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.2.10", df: true, payload: 1444})
	out := only(t, n.run(portPods, in), portPods)
	p := decode(t, out)
	ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ic.TypeCode.Type() != 3 || ic.TypeCode.Code() != 4 {
		t.Fatalf("ICMP %v", ic.TypeCode)
	}
	if mtu := uint16(ic.Seq); mtu != 1450 {
		t.Fatalf("next-hop MTU %d, want 1450", mtu)
	}
	if c := n.w.Counters(); c.Drops[DropTooBig] != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestTooBigWithoutDFDropped(t *testing.T) {
	n := newTestNode(t)
	in := buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.8.8", payload: 1100})
	n.run(portPods, in)
	if c := n.w.Counters(); c.Drops[DropTooBigNoDF] != 1 || c.TxPackets != 0 {
		t.Fatalf("counters %+v", c)
	}
}

func TestToHostAndDrops(t *testing.T) {
	arp := make([]byte, 42)
	header.Ethernet(arp).Encode(header.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macSender, header.EtherTypeARP)
	header.ARP(arp[14:]).Encode(header.ARPRequest, macSender, [4]byte{10, 244, 1, 7}, header.MAC{}, [4]byte{169, 254, 1, 1})
	for _, tc := range []struct {
		name   string
		pkt    func(t *testing.T) []byte
		port   PortID // where it must go; NoPort: dropped
		reason DropReason
	}{
		{"arp to host", func(*testing.T) []byte { return arp }, portHost, DropNone},
		{"bgp to node", func(t *testing.T) []byte {
			return buildPacket(t, pktSpec{src: "192.168.1.2", dst: "192.168.0.1", proto: "tcp", sport: 40000, dport: 179})
		}, portHost, DropNone},
		{"vxlan port to node, decap disabled proto", func(t *testing.T) []byte {
			return buildPacket(t, pktSpec{src: "192.168.1.2", dst: "192.168.0.1", proto: "udp", sport: 1, dport: 31337})
		}, portHost, DropNone},
		{"no route", func(t *testing.T) []byte { return buildPacket(t, pktSpec{src: "10.244.1.7", dst: "8.8.8.8"}) }, NoPort, DropNoRoute},
		{"blackhole", func(t *testing.T) []byte { return buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.9.1"}) }, NoPort, DropBlackhole},
		{"bad checksum", func(t *testing.T) []byte {
			return buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.5", badCsum: true})
		}, NoPort, DropBadIPv4Checksum},
		{"loopback source", func(t *testing.T) []byte { return buildPacket(t, pktSpec{src: "127.0.0.1", dst: "10.244.1.5"}) }, NoPort, DropMartian},
		{"truncated", func(t *testing.T) []byte {
			return buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.5", payload: 20})[:30]
		}, NoPort, DropTruncated},
		{"ip length beyond frame", func(t *testing.T) []byte {
			return buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.5", payload: 20})[:50]
		}, NoPort, DropBadIPv4Header},
		{"runt", func(*testing.T) []byte { return []byte{1, 2, 3} }, NoPort, DropTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t)
			out := n.run(portPods, tc.pkt(t))
			c := n.w.Counters()
			if tc.port == NoPort {
				if c.TxPackets != 0 || c.Drops[tc.reason] != 1 || c.Dropped() != 1 {
					t.Fatalf("want one drop for %v, counters %+v", tc.reason, c)
				}
				return
			}
			only(t, out, tc.port)
			if c.ToHost != 1 || c.Dropped() != 0 {
				t.Fatalf("counters %+v", c)
			}
		})
	}
}

func TestNoHostPortDrops(t *testing.T) {
	n := newTestNode(t)
	node := n.tables.Load().Node
	node.HostPort = NoPort
	if err := n.tables.SetNode(node); err != nil {
		t.Fatal(err)
	}
	n.run(portUplink, buildPacket(t, pktSpec{src: "192.168.1.2", dst: "192.168.0.1", proto: "tcp", dport: 22}))
	if c := n.w.Counters(); c.Drops[DropNoHostPath] != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestTablesValidation(t *testing.T) {
	n := newTestNode(t)
	if err := n.tables.AddRoute(netip.MustParsePrefix("10.0.0.0/8"), 999); err == nil {
		t.Fatal("route to an unset next hop accepted")
	}
	if err := n.tables.RemoveNextHop(nhPod); err == nil {
		t.Fatal("next hop in use removed")
	}
	if err := n.tables.SetNextHop(50, NextHop{Kind: NextHopRemote, Encap: EncapVXLAN}); err == nil {
		t.Fatal("tunnel without addresses accepted")
	}
	if err := n.tables.SetNode(NodeConfig{TunnelIPv4: routerIPv6}); err == nil {
		t.Fatal("IPv6 tunnel address accepted")
	}
	// The last good state stays in force.
	if got := n.tables.Load().Node.TunnelIPv4; got != nodeIP {
		t.Fatalf("node config changed to %v by a rejected update", got)
	}
	for _, p := range []string{"10.244.1.5/32", "fd00:244:1::5/128"} {
		if err := n.tables.DeleteRoute(netip.MustParsePrefix(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.tables.RemoveNextHop(nhPod); err != nil {
		t.Fatal(err)
	}
	n.run(portPods, buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.5"}))
	if c := n.w.Counters(); c.Drops[DropNoRoute] != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestProcessAllocsZero(t *testing.T) {
	n := newTestNode(t)
	pkts := [][]byte{
		buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.2.10", payload: 18}),
		buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.3.10", payload: 18}),
		buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.1.5", payload: 18}),
		buildPacket(t, pktSpec{src: "fd00:244:1::7", dst: "fd00:244:2::10", payload: 18}),
		buildPacket(t, pktSpec{src: "10.244.1.7", dst: "10.244.2.10", ttl: 1}),
		encapFrame(t, buildPacket(t, pktSpec{src: "10.244.2.9", dst: "10.244.1.5"}), EncapVXLAN, 4096),
	}
	for _, p := range n.ports {
		p.SetSink(true)
	}
	n.ports[portPods].SetReplay(pkts)
	allocs := testing.AllocsPerRun(100, func() { n.w.Poll() })
	if allocs != 0 {
		t.Fatalf("Poll allocates %.1f times per batch", allocs)
	}
}

// FuzzPipeline feeds arbitrary frames through the whole pipeline: it must
// never panic, and every frame must go back to the pool.
func FuzzPipeline(f *testing.F) {
	f.Add(buildPacket(f, pktSpec{src: "10.244.1.7", dst: "10.244.2.10", payload: 18}))
	f.Add(buildPacket(f, pktSpec{src: "fd00:244:1::7", dst: "fd00:244:1::5", payload: 18}))
	f.Add(encapFrame(f, buildPacket(f, pktSpec{src: "10.244.2.9", dst: "10.244.1.5"}), EncapVXLAN, 4096))
	f.Add(encapFrame(f, buildPacket(f, pktSpec{src: "10.244.2.9", dst: "10.244.1.5"}), EncapIPIP, 0))
	f.Add(buildPacket(f, pktSpec{src: "10.244.1.7", dst: "10.244.2.10", ttl: 1, df: true, payload: 1460}))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) > 1900 {
			pkt = pkt[:1900]
		}
		n := newTestNode(t)
		out := n.run(portUplink, pkt)
		c := n.w.Counters()
		sent := 0
		for _, o := range out {
			sent += len(o)
		}
		if c.RxPackets != 1 || uint64(sent)+c.Dropped() < 1 {
			t.Fatalf("frame neither sent nor counted as dropped: %+v", c)
		}
	})
}
