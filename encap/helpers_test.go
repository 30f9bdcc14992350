package encap_test

import (
	"bytes"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

var (
	localMAC      = header.MAC{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	nextHopMAC    = header.MAC{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	vtepMAC       = header.MAC{0x66, 0x00, 0x00, 0x00, 0x0a, 0x01}
	remoteVTEPMAC = header.MAC{0x66, 0x00, 0x00, 0x00, 0x0b, 0x02}
	podMAC        = header.MAC{0xee, 0xee, 0xee, 0xee, 0xee, 0x01}
	gwMAC         = header.MAC{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}

	nodeA = [4]byte{192, 168, 10, 1}
	nodeB = [4]byte{192, 168, 20, 2}

	pod4A = net.IP{10, 65, 0, 2}
	pod4B = net.IP{10, 65, 1, 3}
	pod6A = net.ParseIP("fd00:10:65::2")
	pod6B = net.ParseIP("fd00:10:65:1::3")
)

const testHeadroom = 128

// newTunnel returns a tunnel from node A to node B, with cfg changes.
func newTunnel(tb testing.TB, mod func(*encap.TunnelConfig)) *encap.Tunnel {
	tb.Helper()
	cfg := encap.TunnelConfig{
		LocalMAC: localMAC, NextHopMAC: nextHopMAC,
		Src: nodeA, Dst: nodeB,
		UnderlayMTU:   9000,
		VTEPMAC:       vtepMAC,
		RemoteVTEPMAC: remoteVTEPMAC,
	}
	if mod != nil {
		mod(&cfg)
	}
	t, err := encap.NewTunnel(cfg)
	if err != nil {
		tb.Fatalf("NewTunnel: %v", err)
	}
	return t
}

// innerSpec describes an inner frame to build.
type innerSpec struct {
	kind  string // udp4 tcp4 icmp4 udp6 tcp6 icmp6 arp
	ipLen int    // IP packet length (header included); 0: no payload
	tos   uint8  // IPv4 TOS / IPv6 traffic class
	ttl   uint8  // 0: 64
	df    bool
	seed  uint64
}

func (s innerSpec) v6() bool { return s.kind == "udp6" || s.kind == "tcp6" || s.kind == "icmp6" }

// buildInner serializes the inner Ethernet frame of s with gopacket, all
// checksums computed.
func buildInner(tb testing.TB, s innerSpec) []byte {
	tb.Helper()
	rng := rand.New(rand.NewPCG(s.seed, 7))
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(podMAC[:]), DstMAC: net.HardwareAddr(gwMAC[:])}
	var ls []gopacket.SerializableLayer
	var hdrs int
	var nl gopacket.NetworkLayer
	switch {
	case s.kind == "arp":
		eth.EthernetType = layers.EthernetTypeARP
		arp := &layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
			SourceHwAddress: podMAC[:], SourceProtAddress: pod4A,
			DstHwAddress: make([]byte, 6), DstProtAddress: pod4B,
		}
		return serialize(tb, eth, arp)
	case s.v6():
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, TrafficClass: s.tos, FlowLabel: 0x12345, HopLimit: ttl, SrcIP: pod6A, DstIP: pod6B}
		ls, nl, hdrs = append(ls, eth, ip), ip, header.IPv6Len
	default:
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, IHL: 5, TOS: s.tos, Id: uint16(rng.Uint32()), TTL: ttl, SrcIP: pod4A, DstIP: pod4B}
		if s.df {
			ip.Flags = layers.IPv4DontFragment
		}
		ls, nl, hdrs = append(ls, eth, ip), ip, header.IPv4MinLen
	}
	var l4 gopacket.SerializableLayer
	switch s.kind {
	case "udp4", "udp6":
		u := &layers.UDP{SrcPort: layers.UDPPort(40000 + rng.IntN(1000)), DstPort: 7777}
		u.SetNetworkLayerForChecksum(nl)
		l4, hdrs = u, hdrs+header.UDPLen
	case "tcp4", "tcp6":
		t := &layers.TCP{SrcPort: layers.TCPPort(40000 + rng.IntN(1000)), DstPort: 8443, Seq: rng.Uint32(), Ack: rng.Uint32(), ACK: true, PSH: true, Window: 65535, DataOffset: 5}
		t.SetNetworkLayerForChecksum(nl)
		l4, hdrs = t, hdrs+header.TCPMinLen
	case "icmp4":
		l4, hdrs = &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 7, Seq: 1}, hdrs+header.ICMPv4MinLen
	case "icmp6":
		i := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
		i.SetNetworkLayerForChecksum(nl)
		l4, hdrs = i, hdrs+4 // the echo id/seq are part of the payload here
	default:
		tb.Fatalf("unknown inner kind %q", s.kind)
	}
	proto := map[string]layers.IPProtocol{
		"udp4": layers.IPProtocolUDP, "udp6": layers.IPProtocolUDP,
		"tcp4": layers.IPProtocolTCP, "tcp6": layers.IPProtocolTCP,
		"icmp4": layers.IPProtocolICMPv4, "icmp6": layers.IPProtocolICMPv6,
	}[s.kind]
	switch ip := ls[1].(type) {
	case *layers.IPv4:
		ip.Protocol = proto
	case *layers.IPv6:
		ip.NextHeader = proto
	}
	plen := max(0, s.ipLen-hdrs)
	if s.kind == "icmp6" {
		plen = max(4, plen)
	}
	payload := make([]byte, plen)
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	ls = append(ls, l4, gopacket.Payload(payload))
	return serialize(tb, ls...)
}

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	sb := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), sb.Bytes()...)
}

// place copies frame into a new buffer with the given headroom and 32 bytes
// of tailroom, and returns the buffer, offset and length.
func place(frame []byte, headroom int) (buf []byte, off, n int) {
	buf = make([]byte, headroom+len(frame)+32)
	copy(buf[headroom:], frame)
	return buf, headroom, len(frame)
}

// decode decodes an Ethernet frame with gopacket and fails on any decoding
// error.
func decode(tb testing.TB, frame []byte) gopacket.Packet {
	tb.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		tb.Fatalf("gopacket decode: %v\n%s", el.Error(), p.Dump())
	}
	return p
}

// verifyChecksums checks every checksum gopacket can verify in p, giving
// transport layers the enclosing network layer for their pseudo-header.
func verifyChecksums(tb testing.TB, p gopacket.Packet) {
	tb.Helper()
	var netl gopacket.NetworkLayer
	for _, l := range p.Layers() {
		switch l := l.(type) {
		case *layers.IPv4:
			netl = l
		case *layers.IPv6:
			netl = l
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(netl)
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(netl)
		case *layers.ICMPv6:
			l.SetNetworkLayerForChecksum(netl)
		}
		lc, ok := l.(gopacket.LayerWithChecksum)
		if !ok {
			continue
		}
		err, res := lc.VerifyChecksum()
		if err != nil {
			tb.Fatalf("%v checksum: %v", l.LayerType(), err)
		}
		if !res.Valid {
			tb.Errorf("%v checksum %#04x, want %#04x", l.LayerType(), res.Actual, res.Correct)
		}
	}
}

// ipv4OK reports whether the IPv4 header at b verifies.
func ipv4OK(b []byte) bool { return header.IPv4(b).HeaderChecksumOK() }

func setMACs(frame []byte, dst, src header.MAC) []byte {
	out := append([]byte(nil), frame...)
	copy(out[0:6], dst[:])
	copy(out[6:12], src[:])
	return out
}

// tunnelTTL is the outer TTL a tunnel configured with ttl writes.
func tunnelTTL(ttl uint8) uint8 {
	if ttl == 0 {
		return encap.DefaultTTL
	}
	return ttl
}

// checkOuterIPv4 checks the outer Ethernet and IPv4 headers every
// encapsulation writes: node A's MAC to the next hop's, IPv4 from node A
// to node B carrying proto, with DF set and the given TOS, TTL and total
// length.
func checkOuterIPv4(t *testing.T, eth *layers.Ethernet, ip *layers.IPv4, proto layers.IPProtocol, tos, ttl uint8, wantLen int) {
	t.Helper()
	if !bytes.Equal(eth.SrcMAC, localMAC[:]) || !bytes.Equal(eth.DstMAC, nextHopMAC[:]) || eth.EthernetType != layers.EthernetTypeIPv4 {
		t.Errorf("outer Ethernet %v > %v type %v", eth.SrcMAC, eth.DstMAC, eth.EthernetType)
	}
	if ip.Version != 4 || ip.IHL != 5 || ip.TOS != tos || int(ip.Length) != wantLen ||
		ip.Flags != layers.IPv4DontFragment || ip.FragOffset != 0 || ip.TTL != ttl ||
		ip.Protocol != proto || !ip.SrcIP.Equal(net.IP(nodeA[:])) || !ip.DstIP.Equal(net.IP(nodeB[:])) {
		t.Errorf("outer IPv4: ver %d ihl %d tos %#x len %d flags %v frag %d ttl %d proto %v %v > %v; want tos %#x len %d ttl %d proto %v DF",
			ip.Version, ip.IHL, ip.TOS, ip.Length, ip.Flags, ip.FragOffset, ip.TTL, ip.Protocol, ip.SrcIP, ip.DstIP, tos, wantLen, ttl, proto)
	}
}

// checkEncapRejects runs an encapsulation on buf that must refuse: return
// newLen 0 and leave buf as it was.
func checkEncapRejects(t *testing.T, buf []byte, encapsulate func() (newLen int)) {
	t.Helper()
	before := append([]byte(nil), buf...)
	if l := encapsulate(); l != 0 {
		t.Fatalf("newLen %d, want 0", l)
	}
	if !bytes.Equal(buf, before) {
		t.Fatalf("buffer modified")
	}
}

// checkVerdict runs fn, which works in place on buf, and checks its
// verdict is want; when fn declines or drops (any verdict but the OK ones)
// buf must be as it was. It returns what fn returned.
func checkVerdict(t *testing.T, buf []byte, want encap.Verdict, fn func() (off, n int, v encap.Verdict)) (off, n int, v encap.Verdict) {
	t.Helper()
	before := append([]byte(nil), buf...)
	off, n, v = fn()
	if v != want {
		t.Fatalf("verdict %v, want %v", v, want)
	}
	if !v.IsOK() && !bytes.Equal(buf, before) {
		t.Fatalf("buffer modified by verdict %v", v)
	}
	return off, n, v
}

// decapInput places the frame inner with testHeadroom, encapsulates it
// and lets mod (if not nil) change the outer frame and the offset and
// length the decapsulation is to be given.
func decapInput(inner []byte, encapsulate, mod func(buf []byte, off, n int) (int, int)) (buf []byte, off, n int) {
	buf, off, n = place(inner, testHeadroom)
	off, n = encapsulate(buf, off, n)
	if mod != nil {
		off, n = mod(buf, off, n)
	}
	return buf, off, n
}

// outerIPAt returns the IPv4 header of the untagged Ethernet frame at
// buf[off:].
func outerIPAt(buf []byte, off int) header.IPv4 { return header.IPv4(buf[off+14:]) }
