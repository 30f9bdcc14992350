package encap_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/encap"
)

var (
	router4 = [4]byte{10, 65, 0, 1}
	router6 = [16]byte(net.ParseIP("fd00:10:65::1"))
)

// ipv4Frame builds an IPv4 frame from pod A to pod B with gopacket, with
// the given IP header changes, protocol layers and payload.
func ipv4Frame(t *testing.T, mod func(*layers.IPv4), ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 4242, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolUDP, SrcIP: pod4A, DstIP: pod4B}
	if mod != nil {
		mod(ip)
	}
	for _, l := range ls {
		if u, ok := l.(*layers.UDP); ok {
			u.SetNetworkLayerForChecksum(ip)
		}
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(podMAC[:]), DstMAC: net.HardwareAddr(gwMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	return serialize(t, append([]gopacket.SerializableLayer{eth, ip}, ls...)...)
}

func udpPayload(n int) []gopacket.SerializableLayer {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return []gopacket.SerializableLayer{&layers.UDP{SrcPort: 40000, DstPort: 7777}, gopacket.Payload(p)}
}

// icmpBuilder writes an ICMP error message in place of the frame at
// buf[off:off+n], as FragNeededIPv4 and its kin do.
type icmpBuilder func(buf []byte, off, n int) (newOff, newLen int, v encap.Verdict)

// The ICMP error builders under test, with an MTU of 1450 where they
// announce one.
func fragNeeded1450(buf []byte, off, n int) (int, int, encap.Verdict) {
	return encap.FragNeededIPv4(buf, off, n, 1450, router4)
}

func timeExceeded4(buf []byte, off, n int) (int, int, encap.Verdict) {
	return encap.TimeExceededIPv4(buf, off, n, router4)
}

func packetTooBig1450(buf []byte, off, n int) (int, int, encap.Verdict) {
	return encap.PacketTooBigIPv6(buf, off, n, 1450, router6)
}

func timeExceeded6(buf []byte, off, n int) (int, int, encap.Verdict) {
	return encap.TimeExceededIPv6(buf, off, n, router6)
}

// buildICMPError runs build on frame placed with testHeadroom and checks it
// succeeds with a message of hdrLen header bytes (IP and ICMP) in front of
// quote bytes of the original packet, written over the Ethernet header and
// into the headroom, with the frame's MACs swapped. It returns the message
// frame, decoded.
func buildICMPError(t *testing.T, frame []byte, hdrLen, quote int, build icmpBuilder) gopacket.Packet {
	t.Helper()
	buf, off, n := place(frame, testHeadroom)
	o, l, v := build(buf, off, n)
	if v != encap.OK {
		t.Fatalf("verdict %v", v)
	}
	if o != off-hdrLen || l != 14+hdrLen+quote {
		t.Fatalf("(%d, %d), want (%d, %d)", o, l, off-hdrLen, 14+hdrLen+quote)
	}
	p := decode(t, buf[o:o+l])
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !bytes.Equal(eth.DstMAC, podMAC[:]) || !bytes.Equal(eth.SrcMAC, gwMAC[:]) {
		t.Errorf("Ethernet %v > %v, want MACs swapped", eth.SrcMAC, eth.DstMAC)
	}
	return p
}

func TestFragNeededIPv4(t *testing.T) {
	for _, c := range []struct {
		name      string
		frame     []byte
		wantQuote int
		timeExc   bool
	}{
		{"udp 1500", ipv4Frame(t, nil, udpPayload(1472)...), 28, false},
		{"udp without payload", ipv4Frame(t, nil, udpPayload(0)...), 28, false},
		{"4-byte ip payload", ipv4Frame(t, func(ip *layers.IPv4) { ip.Protocol = 253 }, gopacket.Payload([]byte{1, 2, 3, 4})), 24, false},
		{"ip options", ipv4Frame(t, func(ip *layers.IPv4) {
			ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}} // router alert
		}, udpPayload(1000)...), 24 + 8, false},
		{"icmp echo", ipv4Frame(t, func(ip *layers.IPv4) { ip.Protocol = layers.IPProtocolICMPv4 },
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 2}, gopacket.Payload(make([]byte, 1400))), 28, false},
		{"first fragment", ipv4Frame(t, func(ip *layers.IPv4) { ip.Flags = layers.IPv4MoreFragments }, udpPayload(1000)...), 28, false},
		{"time exceeded", ipv4Frame(t, func(ip *layers.IPv4) { ip.TTL = 1 }, udpPayload(100)...), 28, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			orig := append([]byte(nil), c.frame...)
			build := icmpBuilder(fragNeeded1450)
			if c.timeExc {
				build = timeExceeded4
			}
			p := buildICMPError(t, c.frame, 28, c.wantQuote, build)
			ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			icmp := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if !ip.SrcIP.Equal(net.IP(router4[:])) || !ip.DstIP.Equal(pod4A) || ip.Protocol != layers.IPProtocolICMPv4 ||
				ip.TTL != 64 || ip.TOS != 0xc0 || int(ip.Length) != 28+c.wantQuote {
				t.Errorf("IPv4 %v > %v proto %v ttl %d tos %#x len %d", ip.SrcIP, ip.DstIP, ip.Protocol, ip.TTL, ip.TOS, ip.Length)
			}
			wantType, wantCode, wantMTU := uint8(3), uint8(4), uint16(1450)
			if c.timeExc {
				wantType, wantCode, wantMTU = 11, 0, 0
			}
			if icmp.TypeCode.Type() != wantType || icmp.TypeCode.Code() != wantCode || icmp.Id != 0 || icmp.Seq != wantMTU {
				t.Errorf("ICMP %v rest %d/%d, want %d/%d MTU %d", icmp.TypeCode, icmp.Id, icmp.Seq, wantType, wantCode, wantMTU)
			}
			if !bytes.Equal(icmp.Payload, orig[14:14+c.wantQuote]) {
				t.Errorf("quote differs from the original header + 8 bytes")
			}
			verifyChecksums(t, p)
		})
	}
}

func TestICMPv4Declined(t *testing.T) {
	icmpErr := func(typ uint8) []byte {
		return ipv4Frame(t, func(ip *layers.IPv4) { ip.Protocol = layers.IPProtocolICMPv4 },
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0)}, gopacket.Payload(make([]byte, 1400)))
	}
	withSrc := func(a net.IP) []byte {
		return ipv4Frame(t, func(ip *layers.IPv4) { ip.SrcIP = a }, udpPayload(1400)...)
	}
	withDst := func(a net.IP) []byte {
		return ipv4Frame(t, func(ip *layers.IPv4) { ip.DstIP = a }, udpPayload(1400)...)
	}
	good := ipv4Frame(t, nil, udpPayload(1400)...)
	bcastMAC := append([]byte(nil), good...)
	copy(bcastMAC, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	truncatedICMP := ipv4Frame(t, func(ip *layers.IPv4) { ip.Protocol = layers.IPProtocolICMPv4 })
	for _, c := range []struct {
		name     string
		frame    []byte
		headroom int
		mtu      int
		want     encap.Verdict
	}{
		{"dest unreachable", icmpErr(3), testHeadroom, 1450, encap.NoICMPToICMPError},
		{"time exceeded", icmpErr(11), testHeadroom, 1450, encap.NoICMPToICMPError},
		{"parameter problem", icmpErr(12), testHeadroom, 1450, encap.NoICMPToICMPError},
		{"redirect", icmpErr(5), testHeadroom, 1450, encap.NoICMPToICMPError},
		{"echo request is fine", icmpErr(8), testHeadroom, 1450, encap.OK},
		{"non-first fragment", ipv4Frame(t, func(ip *layers.IPv4) { ip.Flags = 0; ip.FragOffset = 185 }, gopacket.Payload(make([]byte, 1480))), testHeadroom, 1450, encap.NoICMPToFragment},
		{"last fragment", ipv4Frame(t, func(ip *layers.IPv4) { ip.Flags = layers.IPv4MoreFragments; ip.FragOffset = 185 }, gopacket.Payload(make([]byte, 1480))), testHeadroom, 1450, encap.NoICMPToFragment},
		{"source 0.0.0.0", withSrc(net.IPv4zero), testHeadroom, 1450, encap.NoICMPNotUnicast},
		{"source loopback", withSrc(net.IP{127, 0, 0, 1}), testHeadroom, 1450, encap.NoICMPNotUnicast},
		{"source multicast", withSrc(net.IP{224, 0, 0, 5}), testHeadroom, 1450, encap.NoICMPNotUnicast},
		{"source class E", withSrc(net.IP{240, 0, 0, 1}), testHeadroom, 1450, encap.NoICMPNotUnicast},
		{"source broadcast", withSrc(net.IPv4bcast), testHeadroom, 1450, encap.NoICMPNotUnicast},
		{"destination broadcast", withDst(net.IPv4bcast), testHeadroom, 1450, encap.NoICMPNotUnicast},
		{"destination multicast", withDst(net.IP{239, 1, 2, 3}), testHeadroom, 1450, encap.NoICMPNotUnicast},
		{"link-layer broadcast", bcastMAC, testHeadroom, 1450, encap.NoICMPNotUnicast},
		{"headroom", good, 27, 1450, encap.NoHeadroom},
		{"headroom exact", good, 28, 1450, encap.OK},
		{"mtu too small", good, testHeadroom, 67, encap.BadArgs},
		{"mtu too large", good, testHeadroom, 65536, encap.BadArgs},
		{"not ipv4", buildInner(t, innerSpec{kind: "udp6"}), testHeadroom, 1450, encap.NoICMPMalformed},
		{"arp", buildInner(t, innerSpec{kind: "arp"}), testHeadroom, 1450, encap.NoICMPMalformed},
		{"truncated", good[:30], testHeadroom, 1450, encap.NoICMPMalformed},
		{"icmp without type", truncatedICMP[:34], testHeadroom, 1450, encap.NoICMPMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			buf, off, n := place(c.frame, c.headroom)
			checkVerdict(t, buf, c.want, func() (int, int, encap.Verdict) { return encap.FragNeededIPv4(buf, off, n, c.mtu, router4) })
			if c.mtu == 1450 {
				buf, off, n = place(c.frame, c.headroom)
				checkVerdict(t, buf, c.want, func() (int, int, encap.Verdict) { return encap.TimeExceededIPv4(buf, off, n, router4) })
			}
		})
	}
	if _, _, v := encap.FragNeededIPv4(make([]byte, 10), 5, 6, 1450, router4); v != encap.BadArgs {
		t.Fatalf("bounds: %v", v)
	}
}

// ipv6Frame builds an IPv6 frame from pod A to pod B with gopacket.
func ipv6Frame(t *testing.T, mod func(*layers.IPv6), ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: pod6A, DstIP: pod6B}
	if mod != nil {
		mod(ip)
	}
	for _, l := range ls {
		switch l := l.(type) {
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.ICMPv6:
			l.SetNetworkLayerForChecksum(ip)
		}
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(podMAC[:]), DstMAC: net.HardwareAddr(gwMAC[:]), EthernetType: layers.EthernetTypeIPv6}
	return serialize(t, append([]gopacket.SerializableLayer{eth, ip}, ls...)...)
}

func TestPacketTooBigIPv6(t *testing.T) {
	for _, c := range []struct {
		name      string
		frame     []byte
		wantQuote int
		timeExc   bool
	}{
		{"udp 1500", ipv6Frame(t, nil, udpPayload(1452)...), 1232, false},
		{"udp 1300", ipv6Frame(t, nil, udpPayload(1252)...), 1232, false},
		{"small", ipv6Frame(t, nil, udpPayload(100)...), 148, false},
		{"multicast destination", ipv6Frame(t, func(ip *layers.IPv6) { ip.DstIP = net.ParseIP("ff0e::1") }, udpPayload(1452)...), 1232, false},
		{"time exceeded", ipv6Frame(t, func(ip *layers.IPv6) { ip.HopLimit = 1 }, udpPayload(1452)...), 1232, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			orig := append([]byte(nil), c.frame...)
			build := icmpBuilder(packetTooBig1450)
			if c.timeExc {
				build = timeExceeded6
			}
			p := buildICMPError(t, c.frame, 48, c.wantQuote, build)
			if l := len(p.Data()) - 14; l > 1280 {
				t.Fatalf("ICMPv6 packet %d bytes, over 1280", l)
			}
			ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			icmp := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			if !ip.SrcIP.Equal(net.IP(router6[:])) || !ip.DstIP.Equal(pod6A) || ip.NextHeader != layers.IPProtocolICMPv6 ||
				ip.HopLimit != 64 || int(ip.Length) != 8+c.wantQuote {
				t.Errorf("IPv6 %v > %v next %v hop %d len %d", ip.SrcIP, ip.DstIP, ip.NextHeader, ip.HopLimit, ip.Length)
			}
			wantType, wantMTU := uint8(2), uint32(1450)
			if c.timeExc {
				wantType, wantMTU = 3, 0
			}
			if icmp.TypeCode.Type() != wantType || icmp.TypeCode.Code() != 0 || binary.BigEndian.Uint32(icmp.Payload) != wantMTU {
				t.Errorf("ICMPv6 %v MTU %d, want type %d MTU %d", icmp.TypeCode, binary.BigEndian.Uint32(icmp.Payload), wantType, wantMTU)
			}
			if !bytes.Equal(icmp.Payload[4:], orig[14:14+c.wantQuote]) {
				t.Errorf("quote differs from the original packet")
			}
			verifyChecksums(t, p)
		})
	}
}

func TestICMPv6Declined(t *testing.T) {
	icmpMsg := func(typ uint8) []byte {
		return ipv6Frame(t, func(ip *layers.IPv6) { ip.NextHeader = layers.IPProtocolICMPv6 },
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}, gopacket.Payload(make([]byte, 1400)))
	}
	withSrc := func(a string) []byte {
		return ipv6Frame(t, func(ip *layers.IPv6) { ip.SrcIP = net.ParseIP(a) }, udpPayload(1400)...)
	}
	// A fragment header (next header 44) in front of the UDP payload.
	frag := func(offset uint16, next uint8, payload []byte) []byte {
		f := ipv6Frame(t, func(ip *layers.IPv6) { ip.NextHeader = layers.IPProtocolIPv6Fragment },
			gopacket.Payload(append([]byte{next, 0, byte(offset >> 5), byte(offset << 3), 0, 0, 0, 1}, payload...)))
		return f
	}
	// A hop-by-hop header (8 bytes) in front of an ICMPv6 error.
	hbhICMPErr := ipv6Frame(t, func(ip *layers.IPv6) { ip.NextHeader = layers.IPProtocolIPv6HopByHop },
		gopacket.Payload(append([]byte{58, 0, 1, 4, 0, 0, 0, 0}, append([]byte{1, 4, 0, 0}, make([]byte, 100)...)...)))
	badChain := ipv6Frame(t, func(ip *layers.IPv6) { ip.NextHeader = layers.IPProtocolIPv6HopByHop },
		gopacket.Payload([]byte{17, 200, 0, 0, 0, 0, 0, 0}))
	// Routing header (type 0 is fine for a walk), then AH, then an ICMPv6
	// error: the walk must get through both.
	rtAH := ipv6Frame(t, func(ip *layers.IPv6) { ip.NextHeader = layers.IPProtocolIPv6Routing },
		gopacket.Payload(append(append([]byte{51, 0, 0, 0, 0, 0, 0, 0}, // routing, 8 bytes, next AH
			58, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1), // AH, (1+2)*4 = 12 bytes, next ICMPv6
			append([]byte{4, 0, 0, 0}, make([]byte, 100)...)...)))
	// Nine destination-options headers: longer than the walk allows.
	var long []byte
	for i := range 9 {
		next := byte(60)
		if i == 8 {
			next = 17
		}
		long = append(long, next, 0, 1, 4, 0, 0, 0, 0)
	}
	tooLong := ipv6Frame(t, func(ip *layers.IPv6) { ip.NextHeader = layers.IPProtocolIPv6Destination }, gopacket.Payload(append(long, make([]byte, 16)...)))
	mcast := ipv6Frame(t, func(ip *layers.IPv6) { ip.DstIP = net.ParseIP("ff02::1") }, udpPayload(1400)...)
	good := ipv6Frame(t, nil, udpPayload(1400)...)
	for _, c := range []struct {
		name        string
		frame       []byte
		headroom    int
		want, want2 encap.Verdict // PacketTooBig, TimeExceeded
	}{
		{"dest unreachable", icmpMsg(1), testHeadroom, encap.NoICMPToICMPError, encap.NoICMPToICMPError},
		{"packet too big", icmpMsg(2), testHeadroom, encap.NoICMPToICMPError, encap.NoICMPToICMPError},
		{"echo request is fine", icmpMsg(128), testHeadroom, encap.OK, encap.OK},
		{"error behind hop-by-hop", hbhICMPErr, testHeadroom, encap.NoICMPToICMPError, encap.NoICMPToICMPError},
		{"non-first fragment", frag(100, 17, make([]byte, 1400)), testHeadroom, encap.NoICMPToFragment, encap.NoICMPToFragment},
		{"first fragment", frag(0, 17, make([]byte, 1400)), testHeadroom, encap.OK, encap.OK},
		{"first fragment of an icmp error", frag(0, 58, append([]byte{3, 0, 0, 0}, make([]byte, 1400)...)), testHeadroom, encap.NoICMPToICMPError, encap.NoICMPToICMPError},
		{"source unspecified", withSrc("::"), testHeadroom, encap.NoICMPNotUnicast, encap.NoICMPNotUnicast},
		{"source loopback", withSrc("::1"), testHeadroom, encap.NoICMPNotUnicast, encap.NoICMPNotUnicast},
		{"source multicast", withSrc("ff02::1"), testHeadroom, encap.NoICMPNotUnicast, encap.NoICMPNotUnicast},
		{"destination multicast", mcast, testHeadroom, encap.OK, encap.NoICMPNotUnicast},
		{"error behind routing and AH", rtAH, testHeadroom, encap.NoICMPToICMPError, encap.NoICMPToICMPError},
		{"chain too long", tooLong, testHeadroom, encap.NoICMPMalformed, encap.NoICMPMalformed},
		{"malformed chain", badChain, testHeadroom, encap.NoICMPMalformed, encap.NoICMPMalformed},
		{"truncated", good[:50], testHeadroom, encap.NoICMPMalformed, encap.NoICMPMalformed},
		{"payload length past frame", good[:len(good)-1], testHeadroom, encap.NoICMPMalformed, encap.NoICMPMalformed},
		{"not ipv6", buildInner(t, innerSpec{kind: "udp4"}), testHeadroom, encap.NoICMPMalformed, encap.NoICMPMalformed},
		{"headroom", good, 47, encap.NoHeadroom, encap.NoHeadroom},
		{"headroom exact", good, 48, encap.OK, encap.OK},
	} {
		t.Run(c.name, func(t *testing.T) {
			buf, off, n := place(c.frame, c.headroom)
			checkVerdict(t, buf, c.want, func() (int, int, encap.Verdict) { return encap.PacketTooBigIPv6(buf, off, n, 1450, router6) })
			buf, off, n = place(c.frame, c.headroom)
			checkVerdict(t, buf, c.want2, func() (int, int, encap.Verdict) { return encap.TimeExceededIPv6(buf, off, n, router6) })
		})
	}
	buf, off, n := place(good, testHeadroom)
	if _, _, v := encap.PacketTooBigIPv6(buf, off, n, 1279, router6); v != encap.BadArgs {
		t.Fatalf("mtu 1279: %v", v)
	}
}
