package afxdp

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
)

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// rig is a dataplane namespace and a peer namespace joined by veth pairs.
type rig struct{ *nstest.Rig }

func newRig(t *testing.T) *rig {
	t.Helper()
	return &rig{nstest.NewRig(t)}
}

// link adds a veth pair: dp side "d<n><sfx>", peer side "p<n><sfx>".
func (r *rig) link(t *testing.T, n string, mtu, queues int) (dpIf, peerIf string) {
	t.Helper()
	return r.Link(t, n, mtu, queues, dpMAC, peerMAC)
}

// do runs fn in the dataplane namespace and fails the test on error.
func (r *rig) do(t testing.TB, fn func() error) {
	t.Helper()
	if err := r.DP.Do(fn); err != nil {
		t.Fatal(err)
	}
}

func newTestUMEM(t *testing.T, cfg UMEMConfig) *UMEM {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	u, err := NewUMEM(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func newTestSteering(t *testing.T, pods ...string) *Steering {
	t.Helper()
	s, err := NewSteering(SteeringConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var ps []netip.Prefix
	for _, p := range pods {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	if err := s.SetPodCIDRs(ps); err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	peerMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xbb, 0x01}
	dpMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x01}
)

// udpFrame builds an Ethernet/IPv4-or-IPv6/UDP frame.
func udpFrame(t testing.TB, src, dst string, sport, dport uint16, payload []byte) []byte {
	t.Helper()
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	eth := &layers.Ethernet{SrcMAC: peerMAC, DstMAC: dpMAC}
	var l3 gopacket.SerializableLayer
	if s.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		udp.SetNetworkLayerForChecksum(ip)
		l3 = ip
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		udp.SetNetworkLayerForChecksum(ip)
		l3 = ip
	}
	return serialize(t, eth, l3, udp, gopacket.Payload(payload))
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// ipipFrame builds Ethernet/IPv4(proto 4)/IPv4/UDP.
func ipipFrame(t testing.TB, outerSrc, outerDst, innerSrc, innerDst string) []byte {
	t.Helper()
	outer := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4,
		SrcIP: net.ParseIP(outerSrc).To4(), DstIP: net.ParseIP(outerDst).To4()}
	inner := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.ParseIP(innerSrc).To4(), DstIP: net.ParseIP(innerDst).To4()}
	udp := &layers.UDP{SrcPort: 1000, DstPort: 2000}
	udp.SetNetworkLayerForChecksum(inner)
	return serialize(t, &layers.Ethernet{SrcMAC: peerMAC, DstMAC: dpMAC, EthernetType: layers.EthernetTypeIPv4},
		outer, inner, udp, gopacket.Payload("ipip"))
}

// receive polls the sockets until want frames matching keep arrived or the
// timeout passed; it returns copies of the packets and releases the frames.
// A frame may start past the headroom (the kernel's XDP headroom).
func receive(t testing.TB, socks []*Socket, want int, timeout time.Duration, keep func([]byte) bool) [][]byte {
	t.Helper()
	return nstest.Receive(t, socks, want, timeout, keep, false)
}

var hasPrefix = nstest.HasUDPPrefix

// settle waits until the counts show no frame held by the dataplane or in
// flight, servicing the sockets (completions) meanwhile.
func settle(t testing.TB, u *UMEM, socks ...*Socket) FrameCounts {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		for _, s := range socks {
			s.Service()
		}
		c := checkCounts(t, u)
		if c.App == 0 && c.Tx == 0 {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("frames not returned: %+v", c)
		}
		time.Sleep(time.Millisecond)
	}
}
