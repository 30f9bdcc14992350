package bench

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

func init() {
	Register(Suite{
		Name: "encap",
		Doc: "VXLAN and IP-in-IP encap/decap in place on 64 B and 1500 B IPv4 UDP frames (ns per frame); " +
			"encap compared with gopacket serializing the same frame into a reused buffer",
		Run: runEncap,
	})
}

// Encap bench parameters: frames are untagged IPv4/UDP Ethernet frames of
// encapFrameSizes bytes (without FCS) starting encapHeadroom bytes into a
// frame buffer, as on the AF_XDP port.
const (
	encapHeadroom = 256
	encapFlowHash = 0x9e3779b9
)

var (
	encapFrameSizes = []int{64, 1500}
	encapPodA       = [4]byte{10, 65, 0, 2}
	encapPodB       = [4]byte{10, 65, 1, 3}
	encapNodeA      = [4]byte{192, 168, 0, 1}
	encapNodeB      = [4]byte{192, 168, 0, 2}
	encapMACs       = [6]header.MAC{
		{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}, // underlay local, next hop
		{0x66, 0, 0, 0, 0, 1}, {0x66, 0, 0, 0, 0, 2}, // VTEPs local, remote
		{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}, {0xee, 0, 0, 0, 0, 1}, // pod gateway, pod
	}
)

// encapSink keeps benchmark results alive.
var encapSink int

func encapTunnel() (*encap.Tunnel, error) {
	return encap.NewTunnel(encap.TunnelConfig{
		LocalMAC: encapMACs[0], NextHopMAC: encapMACs[1],
		Src: encapNodeA, Dst: encapNodeB,
		VTEPMAC: encapMACs[2], RemoteVTEPMAC: encapMACs[3],
	})
}

// encapFrame returns a buffer holding an IPv4/UDP frame of size bytes at
// offset encapHeadroom.
func encapFrame(size int) []byte {
	buf := make([]byte, encapHeadroom+size)
	f := buf[encapHeadroom:]
	header.Ethernet(f).Encode(encapMACs[4], encapMACs[5], header.EtherTypeIPv4)
	header.IPv4(f[header.EthernetLen:]).Encode(&header.IPv4Fields{
		TOS: 0xb8 | 2, TotalLen: uint16(size - header.EthernetLen), ID: 1, TTL: 63,
		Protocol: header.ProtoUDP, Src: encapPodA, Dst: encapPodB,
	})
	header.UDP(f[34:]).Encode(40000, 7777, uint16(size-34), 0)
	for i := 42; i < len(f); i++ {
		f[i] = byte(i)
	}
	return buf
}

// gopacketEncap builds the frames Tabby's encapsulation builds with gopacket:
// the layers are set up once, and each call updates the per-packet fields
// and serializes into a reused buffer. gopacket cannot leave the UDP
// checksum 0 while computing the IPv4 one, so the IPv4 checksum is computed
// with gopacket's checksum helper after serialization.
type gopacketEncap struct {
	mode  encap.Mode
	inner []byte // the inner frame (VXLAN) or IP packet (IP-in-IP)
	sb    gopacket.SerializeBuffer
	eth   layers.Ethernet
	ip    layers.IPv4
	udp   layers.UDP
	vx    layers.VXLAN
	pl    gopacket.Payload
	ls    []gopacket.SerializableLayer
	opts  gopacket.SerializeOptions
}

func newGopacketEncap(mode encap.Mode, frame []byte) *gopacketEncap {
	g := &gopacketEncap{mode: mode, sb: gopacket.NewSerializeBufferExpectedSize(64, len(frame)),
		opts: gopacket.SerializeOptions{FixLengths: true}}
	g.eth = layers.Ethernet{SrcMAC: net.HardwareAddr(encapMACs[0][:]), DstMAC: net.HardwareAddr(encapMACs[1][:]),
		EthernetType: layers.EthernetTypeIPv4}
	g.ip = layers.IPv4{Version: 4, IHL: 5, TTL: encap.DefaultTTL, Flags: layers.IPv4DontFragment,
		SrcIP: net.IP(encapNodeA[:]), DstIP: net.IP(encapNodeB[:])}
	if mode == encap.ModeVXLAN {
		g.inner = append([]byte(nil), frame...)
		g.ip.Protocol = layers.IPProtocolUDP
		g.udp = layers.UDP{DstPort: layers.UDPPort(encap.DefaultVXLANPort)}
		g.vx = layers.VXLAN{ValidIDFlag: true, VNI: encap.DefaultVNI}
		g.pl = gopacket.Payload(g.inner)
		g.ls = []gopacket.SerializableLayer{&g.eth, &g.ip, &g.udp, &g.vx, &g.pl}
	} else {
		tl := int(header.IPv4(frame[header.EthernetLen:]).TotalLen())
		g.inner = append([]byte(nil), frame[header.EthernetLen:header.EthernetLen+tl]...)
		g.ip.Protocol = layers.IPProtocolIPv4
		g.pl = gopacket.Payload(g.inner)
		g.ls = []gopacket.SerializableLayer{&g.eth, &g.ip, &g.pl}
	}
	return g
}

// encap builds one outer frame with IPv4 ID id and returns it (valid until
// the next call).
func (g *gopacketEncap) encap(id uint16, flowHash uint32) ([]byte, error) {
	var tos uint8
	if g.mode == encap.ModeVXLAN {
		copy(g.inner[0:6], encapMACs[3][:])
		copy(g.inner[6:12], encapMACs[2][:])
		tos = g.inner[header.EthernetLen+1]
		g.udp.SrcPort = layers.UDPPort(encap.SourcePort(flowHash))
	} else {
		tos = g.inner[1]
	}
	if tos&3 == 3 { // RFC 6040 normal mode: CE goes out as ECT(0)
		tos = tos&^3 | 2
	}
	g.ip.TOS, g.ip.Id = tos, id
	if err := gopacket.SerializeLayers(g.sb, g.opts, g.ls...); err != nil {
		return nil, err
	}
	out := g.sb.Bytes()
	ip := out[header.EthernetLen : header.EthernetLen+header.IPv4MinLen]
	csum := gopacket.FoldChecksum(gopacket.ComputeChecksum(ip, 0))
	ip[10], ip[11] = byte(csum>>8), byte(csum)
	return out, nil
}

// encapCase is one measured operation of the suite.
type encapCase struct {
	name string
	impl string
	run  func(b *testing.B)
}

func encapCases(tun *encap.Tunnel) []encapCase {
	var cs []encapCase
	for _, size := range encapFrameSizes {
		size := size
		cs = append(cs,
			encapCase{fmt.Sprintf("vxlan-encap-%d", size), "tabby", func(b *testing.B) {
				buf := encapFrame(size)
				b.ReportAllocs()
				for b.Loop() {
					_, l := encap.VXLANEncap(buf, encapHeadroom, size, tun, encapFlowHash)
					encapSink += l
				}
			}},
			encapCase{fmt.Sprintf("vxlan-encap-%d", size), "gopacket", gopacketEncapBench(encap.ModeVXLAN, size)},
			encapCase{fmt.Sprintf("vxlan-decap-%d", size), "tabby", func(b *testing.B) {
				buf := encapFrame(size)
				o, l := encap.VXLANEncap(buf, encapHeadroom, size, tun, encapFlowHash)
				b.ReportAllocs()
				for b.Loop() {
					_, n, _ := encap.VXLANDecap(buf, o, l, encap.DefaultVNI)
					encapSink += n
				}
			}},
			encapCase{fmt.Sprintf("ipip-encap-%d", size), "tabby", func(b *testing.B) {
				buf := encapFrame(size)
				var eth [header.EthernetLen]byte
				copy(eth[:], buf[encapHeadroom:])
				b.ReportAllocs()
				for b.Loop() {
					// Encapsulation writes over the inner Ethernet header;
					// put it back (a 14-byte copy, counted in the figure).
					copy(buf[encapHeadroom:], eth[:])
					_, l := encap.IPIPEncap(buf, encapHeadroom, size, tun)
					encapSink += l
				}
			}},
			encapCase{fmt.Sprintf("ipip-encap-%d", size), "gopacket", gopacketEncapBench(encap.ModeIPIP, size)},
			encapCase{fmt.Sprintf("ipip-decap-%d", size), "tabby", func(b *testing.B) {
				buf := encapFrame(size)
				o, l := encap.IPIPEncap(buf, encapHeadroom, size, tun)
				var outer [34]byte
				copy(outer[:], buf[o:])
				b.ReportAllocs()
				for b.Loop() {
					// Decapsulation writes the inner Ethernet header over
					// the outer IPv4 header; put it back (a 34-byte copy,
					// counted in the figure).
					copy(buf[o:], outer[:])
					_, n, _ := encap.IPIPDecap(buf, o, l)
					encapSink += n
				}
			}},
		)
	}
	return cs
}

func gopacketEncapBench(mode encap.Mode, size int) func(b *testing.B) {
	return func(b *testing.B) {
		buf := encapFrame(size)
		g := newGopacketEncap(mode, buf[encapHeadroom:])
		var id uint16
		b.ReportAllocs()
		for b.Loop() {
			id++
			out, err := g.encap(id, encapFlowHash)
			if err != nil {
				b.Fatal(err)
			}
			encapSink += len(out)
		}
	}
}

func runEncap(ctx context.Context, opt Options, emit func(Result)) error {
	tun, err := encapTunnel()
	if err != nil {
		return err
	}
	for _, c := range encapCases(tun) {
		if err := ctx.Err(); err != nil {
			return err
		}
		opt.Progressf("encap %s %s", c.name, c.impl)
		m := Measure(opt, 1, c.run)
		if m.N == 0 {
			return fmt.Errorf("%s %s: benchmark did not run", c.name, c.impl)
		}
		emit(Result{Case: c.name, Impl: c.impl, Metric: "ns_per_op", Value: m.NsPerOp, Unit: "ns"})
		emit(Result{Case: c.name, Impl: c.impl, Metric: "allocs_per_op", Value: m.AllocsPerOp, Unit: "allocs"})
	}
	return nil
}
