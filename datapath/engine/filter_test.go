package engine

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
)

var filterSpec = steerSpec{
	pods: []netip.Prefix{
		netip.MustParsePrefix("10.244.0.0/16"),
		netip.MustParsePrefix("10.250.1.0/24"),
		netip.MustParsePrefix("10.251.7.7/32"),
		netip.MustParsePrefix("fd00:244::/48"),
		netip.MustParsePrefix("fd00:300::/29"),
		netip.MustParsePrefix("fd00:400::1:0/112"),
	},
	hosts: []netip.Addr{
		netip.MustParseAddr("10.244.0.1"),
		netip.MustParseAddr("192.168.1.1"),
		netip.MustParseAddr("fd00:244::1"),
	},
	node:      netip.MustParseAddr("192.168.1.1"),
	ipip:      true,
	vxlan:     true,
	vxlanPort: 4789,
}

// filterVM compiles spec and returns a function running a frame through it.
func filterVM(t testing.TB, spec steerSpec) func([]byte) bool {
	t.Helper()
	prog, err := packetFilter(spec)
	if err != nil {
		t.Fatal(err)
	}
	insns := make([]bpf.Instruction, len(prog))
	for i, f := range prog {
		insns[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}.Disassemble()
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	return func(frame []byte) bool {
		n, err := vm.Run(frame)
		if err != nil {
			t.Fatalf("filter: %v", err)
		}
		return n > 0
	}
}

// referenceSteer is the steering decision written from its description in
// package afxdp, independently of the filter compiler.
func referenceSteer(spec steerSpec, dst netip.Addr, proto uint8, dport uint16, fragment bool) bool {
	if dst.Is4() && dst == spec.node {
		switch {
		case proto == 4 && spec.ipip:
			return !fragment
		case proto == 17 && spec.vxlan && dport == spec.vxlanPort:
			return !fragment
		}
		return false
	}
	for _, h := range spec.hosts {
		if h == dst {
			return false
		}
	}
	for _, p := range spec.pods {
		if p.Contains(dst) {
			return true
		}
	}
	return false
}

type filterFrame struct {
	vlan     []layers.EthernetType // tags, outermost first
	dst      string
	proto    layers.IPProtocol
	dport    uint16
	fragment bool
	options  bool // IPv4 header with options (IHL 6)
}

func (f filterFrame) build(t testing.TB) []byte {
	t.Helper()
	dst := netip.MustParseAddr(f.dst)
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	ls := []gopacket.SerializableLayer{eth}
	l3type := layers.EthernetTypeIPv4
	if dst.Is6() {
		l3type = layers.EthernetTypeIPv6
	}
	next := l3type
	if len(f.vlan) > 0 {
		next = f.vlan[0]
	}
	eth.EthernetType = next
	for i := range f.vlan {
		typ := l3type
		if i+1 < len(f.vlan) {
			typ = f.vlan[i+1]
		}
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(100 + i), Type: typ})
	}
	var nl gopacket.NetworkLayer
	if dst.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: f.proto, SrcIP: net.IP{10, 1, 1, 1}, DstIP: dst.AsSlice()}
		if f.fragment {
			ip.Flags = layers.IPv4MoreFragments
		}
		if f.options {
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
		}
		ls, nl = append(ls, ip), ip
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: f.proto, SrcIP: net.ParseIP("fd00:1::1"), DstIP: dst.AsSlice()}
		ls, nl = append(ls, ip), ip
	}
	switch f.proto {
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(f.dport)}
		udp.SetNetworkLayerForChecksum(nl)
		ls = append(ls, udp)
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(f.dport), SYN: true}
		tcp.SetNetworkLayerForChecksum(nl)
		ls = append(ls, tcp)
	}
	ls = append(ls, gopacket.Payload("0123456789abcdef0123456789abcdef"))
	return serialize(t, ls...)
}

// TestPacketFilter checks the AF_PACKET socket filter against the steering
// rules on hand-picked frames, tagged and untagged.
func TestPacketFilter(t *testing.T) {
	run := filterVM(t, filterSpec)
	udp, tcp, ipip := layers.IPProtocolUDP, layers.IPProtocolTCP, layers.IPProtocolIPv4
	cases := []struct {
		name string
		f    filterFrame
		want bool
	}{
		{"pod v4 udp", filterFrame{dst: "10.244.3.4", proto: udp, dport: 53}, true},
		{"pod v4 tcp", filterFrame{dst: "10.250.1.200", proto: tcp, dport: 80}, true},
		{"pod v4 /32", filterFrame{dst: "10.251.7.7", proto: udp, dport: 1}, true},
		{"next to /32", filterFrame{dst: "10.251.7.8", proto: udp, dport: 1}, false},
		{"host in pod cidr", filterFrame{dst: "10.244.0.1", proto: tcp, dport: 179}, false},
		{"outside", filterFrame{dst: "10.245.0.1", proto: udp, dport: 53}, false},
		{"node bgp", filterFrame{dst: "192.168.1.1", proto: tcp, dport: 179}, false},
		{"node vxlan", filterFrame{dst: "192.168.1.1", proto: udp, dport: 4789}, true},
		{"node vxlan with options", filterFrame{dst: "192.168.1.1", proto: udp, dport: 4789, options: true}, true},
		{"node other udp", filterFrame{dst: "192.168.1.1", proto: udp, dport: 4790}, false},
		{"node ipip", filterFrame{dst: "192.168.1.1", proto: ipip}, true},
		{"node ipip fragment", filterFrame{dst: "192.168.1.1", proto: ipip, fragment: true}, false},
		{"node vxlan fragment", filterFrame{dst: "192.168.1.1", proto: udp, dport: 4789, fragment: true}, false},
		{"pod fragment", filterFrame{dst: "10.244.9.9", proto: udp, dport: 53, fragment: true}, true},
		{"pod v6", filterFrame{dst: "fd00:244:0:5::9", proto: udp, dport: 53}, true},
		{"pod v6 /29", filterFrame{dst: "fd00:307:ffff::1", proto: udp, dport: 53}, true},
		{"outside v6 /29", filterFrame{dst: "fd00:308::1", proto: udp, dport: 53}, false},
		{"pod v6 /112", filterFrame{dst: "fd00:400::1:abcd", proto: udp, dport: 53}, true},
		{"outside v6 /112", filterFrame{dst: "fd00:400::2:abcd", proto: udp, dport: 53}, false},
		{"host v6", filterFrame{dst: "fd00:244::1", proto: tcp, dport: 179}, false},
		{"multicast v6", filterFrame{dst: "ff02::1", proto: udp, dport: 53}, false},
		{"tagged pod", filterFrame{vlan: []layers.EthernetType{layers.EthernetTypeDot1Q}, dst: "10.244.3.4", proto: udp, dport: 53}, true},
		{"tagged node vxlan", filterFrame{vlan: []layers.EthernetType{layers.EthernetTypeDot1Q}, dst: "192.168.1.1", proto: udp, dport: 4789}, true},
		{"tagged v6 host", filterFrame{vlan: []layers.EthernetType{layers.EthernetTypeDot1Q}, dst: "fd00:244::1", proto: udp, dport: 53}, false},
		{"qinq outer 802.1ad", filterFrame{vlan: []layers.EthernetType{layers.EthernetTypeQinQ}, dst: "10.244.3.4", proto: udp, dport: 53}, true},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			frame := c.f.build(t)
			if got := run(frame); got != c.want {
				t.Fatalf("filter accepts = %v, want %v", got, c.want)
			}
			if c.want {
				// Truncated inside the IP header: the kernel's steering passes
				// it, so the filter must reject it.
				l3 := 14 + 4*len(c.f.vlan)
				if run(frame[:l3+8]) {
					t.Fatal("truncated frame accepted")
				}
			}
		})
	}

	arp := serialize(t, &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: layers.EthernetBroadcast,
		EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6,
			ProtAddressSize: 4, Operation: layers.ARPRequest, SourceHwAddress: []byte{2, 0, 0, 0, 0, 1},
			SourceProtAddress: []byte{10, 244, 3, 4}, DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 244, 3, 5}})
	if run(arp) {
		t.Error("ARP accepted")
	}
	bad := filterFrame{dst: "10.244.3.4", proto: udp, dport: 53}.build(t)
	bad[14] = 0x55 // version 5
	if run(bad) {
		t.Error("IPv4 frame with version 5 accepted")
	}
	bad[14] = 0x44 // IHL 4
	if run(bad) {
		t.Error("IPv4 frame with IHL 4 accepted")
	}
}

// TestPacketFilterRandom compares the filter with the reference on random
// destinations around the configured prefixes (seeded, reproducible).
func TestPacketFilterRandom(t *testing.T) {
	specs := map[string]steerSpec{
		"full":     filterSpec,
		"no node":  {pods: filterSpec.pods, hosts: filterSpec.hosts, ipip: true, vxlan: true, vxlanPort: 4789},
		"no ipip":  {pods: filterSpec.pods, node: filterSpec.node, vxlan: true, vxlanPort: 8472},
		"catchall": {pods: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, hosts: filterSpec.hosts},
	}
	for name, spec := range specs {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			run := filterVM(t, spec)
			rng := rand.New(rand.NewPCG(1, 2))
			accepted := 0
			var bases []netip.Addr
			for _, p := range filterSpec.pods {
				bases = append(bases, p.Addr())
			}
			bases = append(bases, filterSpec.hosts...)
			for i := range 3000 {
				base := bases[rng.IntN(len(bases))]
				b := base.AsSlice()
				// Flip a random low bit so destinations fall on both sides of
				// prefix boundaries.
				bit := rng.IntN(len(b) * 8)
				if rng.IntN(4) != 0 {
					b[bit/8] ^= 1 << (7 - bit%8)
				}
				dst, _ := netip.AddrFromSlice(b)
				f := filterFrame{dst: dst.String(), proto: layers.IPProtocolUDP, dport: uint16(1 + rng.IntN(65535))}
				switch rng.IntN(5) {
				case 0:
					f.proto = layers.IPProtocolIPv4
					f.dport = 0
				case 1:
					f.dport = spec.vxlanPort
				case 2:
					f.proto = layers.IPProtocolTCP
				}
				if dst.Is4() && rng.IntN(8) == 0 {
					f.fragment = true
				}
				if rng.IntN(6) == 0 {
					f.vlan = []layers.EthernetType{layers.EthernetTypeDot1Q}
				}
				want := referenceSteer(spec, dst, uint8(f.proto), f.dport, f.fragment)
				if got := run(f.build(t)); got != want {
					t.Fatalf("case %d: %+v: filter %v, reference %v", i, f, got, want)
				}
				if want {
					accepted++
				}
			}
			if accepted < 100 || accepted > 2900 {
				t.Fatalf("%d of 3000 accepted: the cases do not exercise both outcomes", accepted)
			}
		})
	}
}

// TestPacketFilterSize checks that a filter too large for the kernel is
// refused with an error, and that a realistic one is small.
func TestPacketFilterSize(t *testing.T) {
	prog, err := packetFilter(filterSpec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("filter for %d prefixes: %d instructions", len(filterSpec.pods)+len(filterSpec.hosts), len(prog))
	var spec steerSpec
	for i := range 2000 {
		var b [16]byte
		b[0], b[1] = 0xfd, 0
		binary.BigEndian.PutUint32(b[12:], uint32(i))
		spec.pods = append(spec.pods, netip.PrefixFrom(netip.AddrFrom16(b), 128))
	}
	if _, err := packetFilter(spec); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("2000 /128 prefixes: err = %v, want a size error", err)
	}
}
