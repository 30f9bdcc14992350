package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
	"github.com/tabbynet/tabby/internal/bgptable"
)

func init() {
	Register(Suite{
		Name: "pipeline",
		Doc:  "ns/packet through the whole mem-port pipeline (RX copy, parse, LPM on the full real table, TTL, MACs, encap, TX), 64 B IPv4 UDP; mem-port-replay is the port's own share",
		Run:  runPipeline,
	})
}

// Pipeline bench topology: port 0 is the host, port 1 the uplink, port 2 the
// pods. Traffic comes from a local pod and goes to random addresses inside
// random prefixes of the real table; every prefix leads to one of
// pipelineNodes remote nodes.
const (
	pipelineNodes     = 64
	pipelineTemplates = 16384
	pipelineBatch     = 256
	pipelineFrameLen  = 64 // Ethernet frame without FCS
)

var (
	benchNodeIP = netip.MustParseAddr("192.168.0.1")
	benchMACs   = [4]header.MAC{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 0xfe}, {0x66, 0, 0, 0, 0, 1}, {0x66, 0, 0, 0, 0, 2}}
)

type pipelineCase struct {
	name  string
	mode  datapath.EncapMode
	decap bool // traffic arrives VXLAN-encapsulated to this node, for a local pod
}

func runPipeline(_ context.Context, opt Options, emit func(Result)) error {
	v4, _, err := bgptable.Prefixes()
	if err != nil {
		return err
	}
	if opt.Quick {
		v4 = v4[:20000]
	}
	for _, pc := range []pipelineCase{
		{name: "v4-forward", mode: datapath.EncapNone},
		{name: "v4-vxlan-encap", mode: datapath.EncapVXLAN},
		{name: "v4-ipip-encap", mode: datapath.EncapIPIP},
		{name: "v4-vxlan-decap", decap: true},
	} {
		opt.Progressf("pipeline %s: loading %d routes", pc.name, len(v4))
		w, port, pool, err := pipelineSetup(v4, pc)
		if err != nil {
			return fmt.Errorf("%s: %w", pc.name, err)
		}
		m := Measure(opt, pipelineBatch, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w.Poll()
			}
		})
		c := w.Counters()
		if c.Dropped() != 0 || c.TxPackets != c.RxPackets || pool.FreeFrames() != pipelineBatch*2 {
			return fmt.Errorf("%s: pipeline did not forward every packet: %+v", pc.name, c)
		}
		_ = port
		emit(Result{Case: pc.name, Impl: "tabby", Metric: "ns_per_op", Value: m.NsPerOp, Unit: "ns"})
		emit(Result{Case: pc.name, Impl: "tabby", Metric: "mpps", Value: 1e3 / m.NsPerOp, Unit: "Mpps"})
		emit(Result{Case: pc.name, Impl: "tabby", Metric: "allocs_per_op", Value: m.AllocsPerOp, Unit: "allocs"})
	}
	// The mem port's own share of the figures above: receiving replayed
	// frames (one 64-byte copy each, as a NIC's DMA) and releasing them.
	_, port, _, err := pipelineSetup(v4[:1000], pipelineCase{name: "mem-port-replay"})
	if err != nil {
		return err
	}
	frames := make([]datapath.Frame, pipelineBatch)
	m := Measure(opt, pipelineBatch, func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n := port.Receive(frames)
			port.Release(frames[:n])
		}
	})
	emit(Result{Case: "mem-port-replay", Impl: "tabby", Metric: "ns_per_op", Value: m.NsPerOp, Unit: "ns"})
	return nil
}

// pipelineSetup builds tables with every prefix, the next hops of pc's
// mode, and a worker whose pod port replays pipelineTemplates packets.
func pipelineSetup(prefixes []netip.Prefix, pc pipelineCase) (*datapath.Worker, *datapath.MemPort, *datapath.MemPool, error) {
	tables, err := datapath.NewTables(datapath.NodeConfig{
		TunnelIPv4: benchNodeIP, HostPort: 0, DecapIPIP: true, DecapVXLAN: true,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	for i := range pipelineNodes {
		remote := netip.AddrFrom4([4]byte{192, 168, 1, byte(i + 2)})
		nh := datapath.NextHop{Kind: datapath.NextHopRemote, Port: 1, SrcMAC: benchMACs[0], DstMAC: benchMACs[1], Encap: pc.mode}
		if pc.decap {
			nh = datapath.NextHop{Kind: datapath.NextHopLocal, Port: 2, SrcMAC: benchMACs[0], DstMAC: benchMACs[1]}
		}
		if pc.mode != datapath.EncapNone {
			nh.Tunnel, err = encap.NewTunnel(encap.TunnelConfig{
				LocalMAC: benchMACs[0], NextHopMAC: benchMACs[1], Src: benchNodeIP.As4(), Dst: remote.As4(),
				VTEPMAC: benchMACs[2], RemoteVTEPMAC: benchMACs[3],
			})
			if err != nil {
				return nil, nil, nil, err
			}
		}
		if err := tables.SetNextHop(uint32(i), nh); err != nil {
			return nil, nil, nil, err
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i, p := range prefixes {
		if err := tables.AddRoute(p, uint32(i%pipelineNodes)); err != nil {
			return nil, nil, nil, err
		}
	}
	pool := datapath.NewMemPool(pipelineBatch*2, 2048, 256)
	ports := []datapath.Port{pool.NewPort("host", 0), pool.NewPort("uplink", 1), pool.NewPort("pods", 2)}
	for _, p := range ports {
		p.(*datapath.MemPort).SetSink(true)
	}
	templates := make([][]byte, pipelineTemplates)
	src := [4]byte{10, 244, 1, 7}
	var peer *encap.Tunnel
	if pc.decap {
		// A remote node's tunnel towards us, to encapsulate the templates.
		peer, err = encap.NewTunnel(encap.TunnelConfig{
			LocalMAC: benchMACs[1], NextHopMAC: benchMACs[0], Src: [4]byte{192, 168, 1, 2}, Dst: benchNodeIP.As4(),
			VTEPMAC: benchMACs[3], RemoteVTEPMAC: benchMACs[2],
		})
		if err != nil {
			return nil, nil, nil, err
		}
	}
	for i := range templates {
		p := prefixes[rng.IntN(len(prefixes))]
		a := p.Addr().As4()
		host := rng.Uint32() & (1<<(32-p.Bits()) - 1)
		dst := [4]byte{a[0] | byte(host>>24), a[1] | byte(host>>16), a[2] | byte(host>>8), a[3] | byte(host)}
		if pc.decap {
			// Forward direction reversed: a remote pod sends to a local pod
			// whose address is covered by the table.
			src, dst = dst, src
		}
		frame := udpFrame(src, dst, uint16(1024+i), 80, pipelineFrameLen)
		if pc.decap {
			buf := make([]byte, 128+len(frame))
			copy(buf[128:], frame)
			off, n := encap.VXLANEncap(buf, 128, len(frame), peer, uint32(i))
			frame = buf[off : off+n]
			src = [4]byte{10, 244, 1, 7}
		}
		templates[i] = frame
	}
	if pc.decap {
		// The local pod the decapsulated traffic is for.
		if err := tables.AddRoute(netip.MustParsePrefix("10.244.1.7/32"), 0); err != nil {
			return nil, nil, nil, err
		}
		ports[1].(*datapath.MemPort).SetReplay(templates)
	} else {
		ports[2].(*datapath.MemPort).SetReplay(templates)
	}
	w, err := datapath.NewWorker(tables, datapath.WorkerConfig{Ports: ports, BatchSize: pipelineBatch})
	if err != nil {
		return nil, nil, nil, err
	}
	return w, ports[2].(*datapath.MemPort), pool, nil
}

// udpFrame builds an Ethernet/IPv4/UDP frame of frameLen bytes.
func udpFrame(src, dst [4]byte, sport, dport uint16, frameLen int) []byte {
	b := make([]byte, frameLen)
	header.Ethernet(b).Encode(benchMACs[0], benchMACs[3], header.EtherTypeIPv4)
	ipLen := frameLen - header.EthernetLen
	header.IPv4(b[14:]).Encode(&header.IPv4Fields{
		TotalLen: uint16(ipLen), TTL: 64, Protocol: header.ProtoUDP, Src: src, Dst: dst,
	})
	u := header.UDP(b[34:])
	u.Encode(sport, dport, uint16(ipLen-header.IPv4MinLen), 0)
	sum := header.PseudoHeaderChecksumIPv4(header.ProtoUDP, src, dst, uint16(ipLen-header.IPv4MinLen))
	u.SetChecksum(^header.Checksum(b[34:], sum))
	return b
}
