package e2e

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

// The marker the generator writes at the start of every UDP payload (of the
// innermost packet) and the sink reads back:
//
//	 0      2      4                    12                   20
//	+------+------+--------------------+--------------------+
//	| magic| phase|  sequence (LE u64) | send time (LE i64) |
//	+------+------+--------------------+--------------------+
//
// The send time is nanoseconds of the monotonic clock since the traffic
// endpoint's origin. phase tells the frames of one phase from stragglers of
// the previous one.
const (
	markerMagic = 0x7ab1
	// markerMagicDenied marks the frames of flows the policy denies (the
	// sink counts those that arrive as leaked).
	markerMagicDenied = 0x7ab2
	markerLen         = 20
	// plainHdrLen is Ethernet + IPv4 + UDP: where the payload starts.
	plainHdrLen = header.EthernetLen + header.IPv4MinLen + header.UDPLen
	// minFrameLen and maxFrameLen bound the pod frame size: the marker must
	// fit, and the VXLAN-encapsulated frame must fit the 1600-byte
	// underlay MTU (and a 2048-byte UMEM frame after the 256-byte
	// headroom).
	minFrameLen = 64
	maxFrameLen = 1514
	// udpDstPort is the destination port of the generated traffic
	// (discard).
	udpDstPort = 9
)

// flowSet is the frames the generator cycles through for one case: every
// template is a complete frame of frameLen bytes whose marker sits at
// markOff; only the first markOff+markerLen bytes differ between templates
// or get written per packet.
type flowSet struct {
	templates [][]byte
	frameLen  int
	markOff   int
	// wireLen is the length of the frame as the sink receives it (after
	// the dut's encapsulation or decapsulation).
	wireLen int
	// denied marks the templates of flows the case's policy denies (nil:
	// none). Their frames carry markerMagicDenied.
	denied []bool
}

// split returns the flow set's allowed flows and its denied flows as two
// flow sets.
func (fs *flowSet) split() (allowed, denied *flowSet) {
	allowed = &flowSet{frameLen: fs.frameLen, markOff: fs.markOff, wireLen: fs.wireLen}
	denied = &flowSet{frameLen: fs.frameLen, markOff: fs.markOff, wireLen: fs.wireLen}
	for i, t := range fs.templates {
		if fs.denied != nil && fs.denied[i] {
			denied.templates = append(denied.templates, t)
			denied.denied = append(denied.denied, true)
		} else {
			allowed.templates = append(allowed.templates, t)
		}
	}
	return allowed, denied
}

// macs are the link-layer addresses the frames need.
type macs struct {
	gen, dutIn header.MAC
}

// buildFlows returns n flows for case cs. forwardDst are the prefixes
// forward-case destinations are drawn from. The templates are deterministic
// for a given seed.
func buildFlows(cs caseSpec, n int, m macs, forwardDst []netip.Prefix, seed uint64) (*flowSet, error) {
	if cs.size < minFrameLen || cs.size > maxFrameLen {
		return nil, fmt.Errorf("frame size %d out of range %d..%d", cs.size, minFrameLen, maxFrameLen)
	}
	rng := rand.New(rand.NewPCG(seed, uint64(cs.size)))
	fs := &flowSet{frameLen: cs.size, markOff: plainHdrLen, wireLen: cs.size}
	var tun *encap.Tunnel
	switch cs.family {
	case FamilyForward:
		if len(forwardDst) == 0 {
			return nil, fmt.Errorf("%s: no destination prefixes", cs.name())
		}
	case FamilyVXLANEncap:
		fs.wireLen = cs.size + encap.VXLANOverhead
	case FamilyIPIPEncap:
		fs.wireLen = cs.size + encap.IPIPOverhead
	case FamilyPolicy1k, FamilyPolicy10k:
		fs.denied = make([]bool, n)
	case FamilyVXLANDecap:
		// The generator is a remote node: its tunnel to the dut.
		var err error
		tun, err = encap.NewTunnel(encap.TunnelConfig{
			LocalMAC: m.gen, NextHopMAC: m.dutIn, Src: genIP.As4(), Dst: dutInIP.As4(),
			UnderlayMTU: linkMTU, VTEPMAC: genVTEPMAC, RemoteVTEPMAC: dutVTEPMAC,
		})
		if err != nil {
			return nil, err
		}
		fs.frameLen = cs.size + encap.VXLANOverhead
		fs.markOff = plainHdrLen + encap.VXLANOverhead
	default:
		return nil, fmt.Errorf("unknown case family %q", cs.family)
	}
	for i := range n {
		sport := uint16(1024 + i%64000)
		var src, dst [4]byte
		switch cs.family {
		case FamilyForward:
			src, dst = genIP.As4(), randomIn(rng, forwardDst[rng.IntN(len(forwardDst))])
		case FamilyVXLANEncap, FamilyIPIPEncap:
			src = randomIn(rng, genPods)
			dst = randomIn(rng, remotePods)
		case FamilyVXLANDecap:
			src = randomIn(rng, genNodePods)
			dst = randomIn(rng, sinkPods)
		case FamilyPolicy1k, FamilyPolicy10k:
			// Clients behind gen to servers behind the sink; every
			// policyDenyEvery-th flow is an intruder's.
			from := policyClients
			if i%policyDenyEvery == policyDenyEvery-1 {
				from = policyIntruders
				fs.denied[i] = true
			}
			src, dst = from[rng.IntN(len(from))].As4(), policyServers[rng.IntN(len(policyServers))].As4()
		}
		frame := udpFrame(m.dutIn, m.gen, src, dst, sport, cs.size)
		if tun != nil {
			buf := make([]byte, encap.VXLANOverhead+len(frame))
			copy(buf[encap.VXLANOverhead:], frame)
			h := encap.FlowHashIPv4(src, dst, header.ProtoUDP, sport, udpDstPort, 0)
			off, l := encap.VXLANEncap(buf, encap.VXLANOverhead, len(frame), tun, h)
			if l == 0 {
				return nil, fmt.Errorf("%s: vxlan encapsulation of the template failed", cs.name())
			}
			frame = buf[off : off+l]
		}
		fs.templates = append(fs.templates, frame)
	}
	return fs, nil
}

// randomIn returns a random address inside p, avoiding the all-zeros and
// all-ones host parts where p has room for that.
func randomIn(rng *rand.Rand, p netip.Prefix) [4]byte {
	a := p.Masked().Addr().As4()
	base := binary.BigEndian.Uint32(a[:])
	hostBits := 32 - p.Bits()
	var host uint32
	switch {
	case hostBits == 0:
	case hostBits == 1:
		host = rng.Uint32() & 1
	case hostBits >= 32:
		host = 1 + rng.Uint32N(1<<31)
	default:
		size := uint32(1) << hostBits
		host = 1 + rng.Uint32N(size-2)
	}
	var out [4]byte
	binary.BigEndian.PutUint32(out[:], base|host)
	return out
}

// udpFrame builds an Ethernet/IPv4/UDP frame of frameLen bytes with a zero
// UDP checksum (allowed for IPv4, and the payload changes per packet) and a
// zeroed payload.
func udpFrame(dstMAC, srcMAC header.MAC, src, dst [4]byte, sport uint16, frameLen int) []byte {
	b := make([]byte, frameLen)
	header.Ethernet(b).Encode(dstMAC, srcMAC, header.EtherTypeIPv4)
	ipLen := frameLen - header.EthernetLen
	header.IPv4(b[header.EthernetLen:]).Encode(&header.IPv4Fields{
		TotalLen: uint16(ipLen), TTL: 64, Protocol: header.ProtoUDP, Src: src, Dst: dst,
	})
	header.UDP(b[header.EthernetLen+header.IPv4MinLen:]).Encode(sport, udpDstPort, uint16(ipLen-header.IPv4MinLen), 0)
	return b
}

// putMarker writes the marker at b[0:markerLen] (magic: markerMagic or
// markerMagicDenied).
func putMarker(b []byte, magic, phase uint16, seq uint64, ts int64) {
	_ = b[markerLen-1]
	binary.BigEndian.PutUint16(b[0:], magic)
	binary.BigEndian.PutUint16(b[2:], phase)
	binary.LittleEndian.PutUint64(b[4:], seq)
	binary.LittleEndian.PutUint64(b[12:], uint64(ts))
}

// readMarker finds the marker in a received frame: Ethernet, IPv4, then UDP
// to the VXLAN port (an inner Ethernet frame follows), IP-in-IP (an inner
// IPv4 packet follows) or plain UDP (the payload starts with the marker).
// It does not allocate; ok is false for anything else. denied is set for
// a frame of a denied flow (markerMagicDenied).
func readMarker(frame []byte) (phase uint16, seq uint64, ts int64, denied, ok bool) {
	if len(frame) < header.EthernetLen || binary.BigEndian.Uint16(frame[12:]) != header.EtherTypeIPv4 {
		return 0, 0, 0, false, false
	}
	ip := frame[header.EthernetLen:]
	for depth := 0; depth < 3; depth++ {
		if len(ip) < header.IPv4MinLen || ip[0]>>4 != 4 {
			return 0, 0, 0, false, false
		}
		ihl := int(ip[0]&0x0f) * 4
		if ihl < header.IPv4MinLen || len(ip) < ihl {
			return 0, 0, 0, false, false
		}
		l4 := ip[ihl:]
		switch ip[9] {
		case header.ProtoIPIP:
			ip = l4
			continue
		case header.ProtoUDP:
		default:
			return 0, 0, 0, false, false
		}
		if len(l4) < header.UDPLen {
			return 0, 0, 0, false, false
		}
		if binary.BigEndian.Uint16(l4[2:]) == header.VXLANPort {
			inner := l4[header.UDPLen:]
			if len(inner) < header.VXLANLen+header.EthernetLen ||
				binary.BigEndian.Uint16(inner[header.VXLANLen+12:]) != header.EtherTypeIPv4 {
				return 0, 0, 0, false, false
			}
			ip = inner[header.VXLANLen+header.EthernetLen:]
			continue
		}
		p := l4[header.UDPLen:]
		if len(p) < markerLen {
			return 0, 0, 0, false, false
		}
		switch binary.BigEndian.Uint16(p[0:]) {
		case markerMagic:
		case markerMagicDenied:
			denied = true
		default:
			return 0, 0, 0, false, false
		}
		return binary.BigEndian.Uint16(p[2:]), binary.LittleEndian.Uint64(p[4:]),
			int64(binary.LittleEndian.Uint64(p[12:])), denied, true
	}
	return 0, 0, 0, false, false
}
