package header

import (
	"net/netip"
	"testing"
)

// Sinks keep the compiler from dropping the calls measured below.
var (
	sinkBool  bool
	sinkU8    uint8
	sinkU16   uint16
	sinkU32   uint32
	sinkInt   int
	sinkMAC   MAC
	sinkIP4   [4]byte
	sinkIP6   [16]byte
	sinkAddr  netip.Addr
	sinkBytes []byte
)

// TestZeroAllocs pins that views, checksums and the extension-header walk
// never allocate: they run once per packet.
func TestZeroAllocs(t *testing.T) {
	eth := Ethernet(make([]byte, EthernetVLANLen))
	eth.Encode(MAC{2}, MAC{4}, EtherTypeVLAN)
	arp := ARP(make([]byte, ARPLen))
	ip4 := IPv4(make([]byte, 60))
	ip4.Encode(&IPv4Fields{TotalLen: 60, TTL: 64, Protocol: ProtoUDP, Src: [4]byte{10, 0, 0, 1}, Dst: [4]byte{10, 0, 0, 2}})
	ip6 := IPv6(v6CaseNamed(t, "hop-by-hop routing destination options TCP").build(t))
	udp := UDP(make([]byte, 16))
	udp.Encode(1, 2, 16, 0)
	tcp := TCP(make([]byte, 20))
	tcp[12] = 5 << 4
	icmp4 := ICMPv4(make([]byte, 8))
	icmp6 := ICMPv6(make([]byte, 8))
	vx := VXLAN(make([]byte, 8))
	buf := make([]byte, 1500)
	ip4Fields := &IPv4Fields{TotalLen: 60, TTL: 64}
	ip6Fields := &IPv6Fields{PayloadLen: 20}

	tests := []struct {
		name string
		f    func()
	}{
		{"Ethernet", func() {
			sinkBool = eth.IsValid() && eth.Tagged()
			sinkMAC, sinkMAC = eth.Dst(), eth.Src()
			sinkU16 = eth.Type() + eth.VLAN() + eth.InnerType()
			sinkBool = eth.Dst().IsBroadcast() || eth.Src().IsMulticast()
			eth.SetDst(MAC{2})
			eth.SetSrc(MAC{4})
			eth.SetType(EtherTypeVLAN)
			eth.Encode(MAC{2}, MAC{4}, EtherTypeVLAN)
		}},
		{"ARP", func() {
			arp.Encode(ARPReply, MAC{1}, [4]byte{1}, MAC{2}, [4]byte{2})
			sinkBool = arp.IsValid()
			sinkU16 = arp.Op()
			sinkMAC, sinkMAC = arp.SenderMAC(), arp.TargetMAC()
			sinkIP4, sinkIP4 = arp.SenderIP(), arp.TargetIP()
		}},
		{"IPv4", func() {
			sinkBool = ip4.IsValid() && ip4.DF() && ip4.IsFragment() && ip4.HeaderChecksumOK()
			sinkInt = ip4.HeaderLen() + ip4.FragOffset()
			sinkU8 = ip4.TOS() + ip4.TTL() + ip4.Protocol()
			sinkU16 = ip4.TotalLen() + ip4.ID() + ip4.FlagsFragOff() + ip4.Checksum()
			sinkIP4, sinkIP4 = ip4.Src(), ip4.Dst()
			sinkU32 = ip4.SrcUint32() + ip4.DstUint32()
			sinkAddr, sinkAddr = ip4.SrcAddr(), ip4.DstAddr()
			sinkBytes = ip4.Payload()
			ip4.SetTOS(0)
			ip4.SetTotalLen(60)
			ip4.ComputeChecksum()
			ip4.SetChecksum(ip4.Checksum())
			ip4[8] = 64
			sinkU8 = ip4.DecTTL()
		}},
		{"IPv4 Encode", func() { ip4.Encode(ip4Fields) }},
		{"IPv6", func() {
			sinkBool = ip6.IsValid()
			sinkU8 = ip6.TrafficClass() + ip6.NextHeader() + ip6.HopLimit()
			sinkU32 = ip6.FlowLabel()
			sinkU16 = ip6.PayloadLen()
			sinkIP6, sinkIP6 = ip6.Src(), ip6.Dst()
			sinkAddr, sinkAddr = ip6.SrcAddr(), ip6.DstAddr()
			ip6.SetTrafficClass(0xb8)
			ip6.SetPayloadLen(ip6.PayloadLen())
			ip6[7] = 64
			sinkU8 = ip6.DecHopLimit()
		}},
		{"IPv6 Encode", func() { IPv6(buf).Encode(ip6Fields) }},
		{"IPv6Transport", func() {
			p, off, frag, ok := IPv6Transport(ip6)
			sinkU8, sinkInt, sinkBool, sinkBool = p, off, frag, ok
		}},
		{"UDP", func() {
			sinkBool = udp.IsValid()
			sinkU16 = udp.SrcPort() + udp.DstPort() + udp.Length() + udp.Checksum()
			sinkBytes = udp.Payload()
			udp.SetChecksum(0)
			udp.Encode(1, 2, 16, 0)
		}},
		{"TCP", func() {
			sinkBool = tcp.IsValid()
			sinkU16 = tcp.SrcPort() + tcp.DstPort() + tcp.Checksum()
			sinkU32 = tcp.Seq() + tcp.Ack()
			sinkInt = tcp.HeaderLen()
			sinkU8 = tcp.Flags()
			tcp.SetChecksum(0)
		}},
		{"ICMPv4", func() {
			sinkBool = icmp4.IsValid() && icmp4.IsError()
			sinkU8 = icmp4.Type() + icmp4.Code()
			sinkU16 = icmp4.Checksum() + icmp4.ID() + icmp4.Seq() + icmp4.MTU()
			icmp4.SetChecksum(0)
		}},
		{"ICMPv6", func() {
			sinkBool = icmp6.IsValid() && icmp6.IsError()
			sinkU8 = icmp6.Type() + icmp6.Code()
			sinkU16 = icmp6.Checksum() + icmp6.ID()
			icmp6.SetChecksum(0)
		}},
		{"VXLAN", func() {
			vx.Encode(42)
			sinkBool = vx.IsValid()
			sinkU32 = vx.VNI()
		}},
		{"Checksum", func() {
			sinkU16 = Checksum(buf, 0) + Checksum(buf[:20], 1) + Checksum(buf[:7], 0)
			sinkU16 = ChecksumCombine(sinkU16, 1)
		}},
		{"pseudo-header and incremental checksums", func() {
			sinkU16 = PseudoHeaderChecksumIPv4(ProtoTCP, [4]byte{1}, [4]byte{2}, 40) +
				PseudoHeaderChecksumIPv6(ProtoUDP, [16]byte{1}, [16]byte{2}, 40)
			sinkU16 = ChecksumUpdate16(sinkU16, 1, 2) + ChecksumUpdate32(sinkU16, 1, 2) + ChecksumUpdateBytes(sinkU16, buf[:16], buf[16:32])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tt.f); n != 0 {
				t.Errorf("%v allocations per run, want 0", n)
			}
		})
	}
}
