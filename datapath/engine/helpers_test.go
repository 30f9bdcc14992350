package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/internal/ethtool"
)

// requireRoot skips integration tests when not root (or without iproute2).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root for network namespaces, XDP and AF_XDP/AF_PACKET sockets")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: iproute2 (ip) not installed")
	}
}

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

var kinds = []PortKind{PortAFXDP, PortAFPacket}

// lab is a topology of namespaces built for one test and removed in
// t.Cleanup (the topology's Close deletes every namespace, which deletes
// their links).
type lab struct {
	t  *testing.T
	tp *topo.Topology
}

func newLab(t *testing.T) *lab {
	t.Helper()
	requireRoot(t)
	return &lab{t: t, tp: topo.ForTest(t, "tbeng")}
}

func (l *lab) ns(node string) *topo.Netns {
	l.t.Helper()
	n, err := l.tp.Namespace(node)
	if err != nil {
		l.t.Fatal(err)
	}
	return n
}

// router is a namespace where an engine runs: the kernel must not forward
// (it would duplicate or mask what the engine does).
func (l *lab) router(node string) *topo.Netns {
	l.t.Helper()
	n := l.ns(node)
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if err := n.Sysctl(k, "0"); err != nil {
			l.t.Fatal(err)
		}
	}
	return n
}

// veth links a/aIf to b/bIf and returns their MACs.
func (l *lab) veth(a *topo.Netns, aIf string, b *topo.Netns, bIf string) (aMAC, bMAC header.MAC) {
	l.t.Helper()
	if _, _, err := l.tp.Veth(a, aIf, b, bIf, 1500); err != nil {
		l.t.Fatal(err)
	}
	return l.mac(a, aIf), l.mac(b, bIf)
}

func (l *lab) mac(n *topo.Netns, ifname string) header.MAC {
	l.t.Helper()
	hw, err := n.MAC(ifname)
	if err != nil {
		l.t.Fatal(err)
	}
	var m header.MAC
	copy(m[:], hw)
	return m
}

func (l *lab) addr(n *topo.Netns, ifname, prefix string) {
	l.t.Helper()
	if err := n.AddAddr(ifname, netip.MustParsePrefix(prefix)); err != nil {
		l.t.Fatal(err)
	}
}

// bridge creates br0 in n, enslaves ports, and brings it up.
func (l *lab) bridge(n *topo.Netns, ports ...string) {
	l.t.Helper()
	nl := n.Netlink()
	la := netlink.NewLinkAttrs()
	la.Name = "br0"
	if err := nl.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		l.t.Fatal(err)
	}
	br, err := nl.LinkByName("br0")
	if err != nil {
		l.t.Fatal(err)
	}
	for _, p := range ports {
		link, err := nl.LinkByName(p)
		if err != nil {
			l.t.Fatal(err)
		}
		if err := nl.LinkSetMaster(link, br); err != nil {
			l.t.Fatal(err)
		}
	}
	if err := nl.LinkSetUp(br); err != nil {
		l.t.Fatal(err)
	}
}

func (l *lab) run(n *topo.Netns, name string, args ...string) {
	l.t.Helper()
	if _, err := n.Run(name, args...); err != nil {
		l.t.Fatal(err)
	}
}

// raw opens a packet socket on ifname in n (closed in t.Cleanup).
func (l *lab) raw(n *topo.Netns, ifname string) *nstest.Raw {
	l.t.Helper()
	return nstest.OpenRaw(l.t, &nstest.NS{Name: n.Name}, ifname)
}

// xdpAttached reports whether ifname in n has an XDP program.
func (l *lab) xdpAttached(n *topo.Netns, ifname string) bool {
	l.t.Helper()
	link, err := n.Link(ifname)
	if err != nil {
		l.t.Fatal(err)
	}
	x := link.Attrs().Xdp
	return x != nil && (x.Attached || x.ProgId != 0)
}

// start runs an engine in n; it is closed in t.Cleanup (before the
// topology), and a failing Close fails the test.
func (l *lab) start(n *topo.Netns, cfg Config) *Engine {
	l.t.Helper()
	cfg.Netns = n.Handle()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(l.t)
	}
	e, err := Start(context.Background(), cfg)
	if err != nil {
		l.t.Fatalf("start engine in %s: %v", n.Node, err)
	}
	l.t.Cleanup(func() {
		if err := e.Close(); err != nil {
			l.t.Errorf("close engine in %s: %v", n.Node, err)
		}
	})
	st := e.Stats()
	if st.PortKind == PortAFXDP {
		for _, i := range st.Interfaces {
			l.t.Logf("%s/%s: XDP %s (%s)", n.Node, i.Name, i.XDPMode, i.XDPModeReason)
		}
		for _, p := range st.Ports {
			l.t.Logf("%s/%s q%d: socket %s (%s), tx budget %d", n.Node, p.Interface, p.Queue, p.SocketMode,
				p.SocketModeReason, p.TxBudget)
		}
	}
	return e
}

// newTables returns tables with the node config; HostPort 0 becomes NoPort.
func newTables(t *testing.T, node datapath.NodeConfig) *datapath.Tables {
	t.Helper()
	if node.HostPort == 0 {
		node.HostPort = datapath.NoPort
	}
	tb, err := datapath.NewTables(node)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func setNextHop(t *testing.T, tb *datapath.Tables, id uint32, nh datapath.NextHop, prefixes ...string) {
	t.Helper()
	if err := tb.SetNextHop(id, nh); err != nil {
		t.Fatal(err)
	}
	for _, p := range prefixes {
		if err := tb.AddRoute(netip.MustParsePrefix(p), id); err != nil {
			t.Fatal(err)
		}
	}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// waitCounters polls the engine's counters until ok accepts them.
func waitCounters(t *testing.T, e *Engine, what string, ok func(c datapath.Counters) bool) datapath.Counters {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := e.Counters()
		if ok(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: counters %s", what, fmtCounters(c))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fmtCounters(c datapath.Counters) string {
	s := fmt.Sprintf("rx %d tx %d local %d remote %d host %d decap ipip/vxlan %d/%d encap ipip/vxlan %d/%d icmp %d",
		c.RxPackets, c.TxPackets, c.ToLocal, c.ToRemote, c.ToHost, c.DecapIPIP, c.DecapVXLAN, c.EncapIPIP,
		c.EncapVXLAN, c.ICMPSent)
	for _, r := range datapath.DropReasons() {
		if c.Drops[r] != 0 {
			s += fmt.Sprintf(" drop %s %d", r, c.Drops[r])
		}
	}
	return s
}

// capture receives n frames accepted by keep from raw.
func capture(t *testing.T, raw *nstest.Raw, n int, keep func([]byte) bool) [][]byte {
	t.Helper()
	var out [][]byte
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n {
		b, err := raw.Recv(time.Until(deadline), keep)
		if err != nil {
			t.Fatalf("captured %d of %d frames: %v", len(out), n, err)
		}
		out = append(out, b)
	}
	return out
}

// quiet checks that no frame accepted by keep arrives within d.
func quiet(t *testing.T, raw *nstest.Raw, d time.Duration, keep func([]byte) bool) {
	t.Helper()
	if b, err := raw.Recv(d, keep); err == nil {
		t.Fatalf("unexpected frame: %v", gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default))
	}
}

// hasPayload keeps frames whose innermost application payload starts with
// prefix.
func hasPayload(prefix string) func([]byte) bool {
	return func(b []byte) bool {
		p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
		if app := p.ApplicationLayer(); app != nil {
			return bytes.HasPrefix(app.Payload(), []byte(prefix))
		}
		return false
	}
}

func hw(m header.MAC) net.HardwareAddr { return net.HardwareAddr(m[:]) }

// pkt describes a test packet sent into the dataplane.
type pkt struct {
	srcMAC, dstMAC header.MAC
	src, dst       string
	proto          layers.IPProtocol // UDP (default) or TCP
	ttl            uint8             // default 64
	payload        string
}

func (p pkt) frame(t testing.TB) []byte {
	t.Helper()
	src, dst := netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	ttl := p.ttl
	if ttl == 0 {
		ttl = 64
	}
	eth := &layers.Ethernet{SrcMAC: hw(p.srcMAC), DstMAC: hw(p.dstMAC)}
	var l3 gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	proto := p.proto
	if proto == 0 {
		proto = layers.IPProtocolUDP
	}
	if src.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, TTL: ttl, Protocol: proto, Flags: layers.IPv4DontFragment, Id: 0x1234,
			SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		l3, nl = ip, ip
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: ttl, NextHeader: proto, FlowLabel: 0x12345,
			SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		l3, nl = ip, ip
	}
	var l4 gopacket.SerializableLayer
	if proto == layers.IPProtocolTCP {
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 8080, Seq: 1000, Ack: 2000, ACK: true, PSH: true, Window: 512,
			Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)}}}
		tcp.SetNetworkLayerForChecksum(nl)
		l4 = tcp
	} else {
		udp := &layers.UDP{SrcPort: 40000, DstPort: 7000}
		udp.SetNetworkLayerForChecksum(nl)
		l4 = udp
	}
	return serialize(t, eth, l3, l4, gopacket.Payload(p.payload))
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// sum16 is the RFC 1071 one's-complement sum of b, folded, starting at
// initial.
func sum16(b []byte, initial uint32) uint32 {
	s := initial
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return s
}

// ipv4HeaderOK verifies an IPv4 header checksum.
func ipv4HeaderOK(ip *layers.IPv4) bool { return sum16(ip.Contents, 0) == 0xffff }

// l4ChecksumOK verifies the TCP or UDP checksum of the transport layer
// following the network layer nl (pseudo-header included).
func l4ChecksumOK(nl gopacket.NetworkLayer, proto layers.IPProtocol, seg []byte) bool {
	var pseudo []byte
	switch ip := nl.(type) {
	case *layers.IPv4:
		pseudo = append(append(pseudo, ip.SrcIP.To4()...), ip.DstIP.To4()...)
		pseudo = append(pseudo, 0, byte(proto), byte(len(seg)>>8), byte(len(seg)))
	case *layers.IPv6:
		pseudo = append(append(pseudo, ip.SrcIP.To16()...), ip.DstIP.To16()...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
		pseudo = append(pseudo, 0, 0, 0, byte(proto))
	default:
		return false
	}
	return sum16(seg, sum16(pseudo, 0)) == 0xffff
}

// checkInner decodes a delivered frame and checks it against the packet
// that was sent: addresses, MACs, TTL, checksums and payload.
func checkInner(t *testing.T, b []byte, sent pkt, srcMAC, dstMAC header.MAC, ttl uint8) {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decode: %v", el.Error())
	}
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !bytes.Equal(eth.SrcMAC, hw(srcMAC)) || !bytes.Equal(eth.DstMAC, hw(dstMAC)) {
		t.Errorf("MACs %v -> %v, want %v -> %v", eth.SrcMAC, eth.DstMAC, hw(srcMAC), hw(dstMAC))
	}
	nl := p.NetworkLayer()
	if nl == nil {
		t.Fatalf("no network layer in %v", p)
	}
	src, dst := nl.NetworkFlow().Endpoints()
	if src.String() != netip.MustParseAddr(sent.src).String() || dst.String() != netip.MustParseAddr(sent.dst).String() {
		t.Errorf("addresses %v -> %v, want %s -> %s", src, dst, sent.src, sent.dst)
	}
	var gotTTL uint8
	var proto layers.IPProtocol
	var seg []byte
	switch ip := nl.(type) {
	case *layers.IPv4:
		gotTTL, proto, seg = ip.TTL, ip.Protocol, ip.Payload
		if !ipv4HeaderOK(ip) {
			t.Errorf("IPv4 header checksum %#04x does not verify", ip.Checksum)
		}
	case *layers.IPv6:
		gotTTL, proto, seg = ip.HopLimit, ip.NextHeader, ip.Payload
	}
	if gotTTL != ttl {
		t.Errorf("TTL/hop limit %d, want %d", gotTTL, ttl)
	}
	if !l4ChecksumOK(nl, proto, seg) {
		t.Errorf("%v checksum does not verify", proto)
	}
	app := p.ApplicationLayer()
	if app == nil || string(app.Payload()) != sent.payload {
		t.Errorf("payload %q, want %q", app, sent.payload)
	}
}

// setTxChecksum turns TX checksum offload of ifname in n on or off
// (SIOCETHTOOL ETHTOOL_STXCSUM, what `ethtool -K dev tx off` does; no
// ethtool binary is needed).
func setTxChecksum(t *testing.T, n *topo.Netns, ifname string, on bool) {
	t.Helper()
	err := n.Do(func() error { return ethtool.SetTxChecksum(ifname, on) })
	if err != nil {
		t.Fatalf("%s: set tx checksum offload of %s to %v: %v", n.Node, ifname, on, err)
	}
}
