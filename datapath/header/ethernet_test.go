package header

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestEthernetMatchesGopacket(t *testing.T) {
	unicast := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	other := net.HardwareAddr{0x0c, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	broadcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ipv6Multicast := net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
	payload := gopacket.Payload("0123456789abcdef0123456789abcdef0123456789abcdef")

	tests := []struct {
		name          string
		layers        []gopacket.SerializableLayer
		wantBroadcast bool
		wantMulticast bool
	}{
		{
			name:   "untagged IPv4",
			layers: []gopacket.SerializableLayer{&layers.Ethernet{DstMAC: unicast, SrcMAC: other, EthernetType: layers.EthernetTypeIPv4}, payload},
		},
		{
			name:          "untagged ARP to broadcast",
			layers:        []gopacket.SerializableLayer{&layers.Ethernet{DstMAC: broadcast, SrcMAC: unicast, EthernetType: layers.EthernetTypeARP}, payload},
			wantBroadcast: true, wantMulticast: true,
		},
		{
			name:          "untagged IPv6 to all-nodes multicast",
			layers:        []gopacket.SerializableLayer{&layers.Ethernet{DstMAC: ipv6Multicast, SrcMAC: unicast, EthernetType: layers.EthernetTypeIPv6}, payload},
			wantMulticast: true,
		},
		{
			name: "802.1Q tag VLAN 100 PCP 5 DEI",
			layers: []gopacket.SerializableLayer{
				&layers.Ethernet{DstMAC: unicast, SrcMAC: other, EthernetType: layers.EthernetTypeDot1Q},
				&layers.Dot1Q{Priority: 5, DropEligible: true, VLANIdentifier: 100, Type: layers.EthernetTypeIPv4},
				payload,
			},
		},
		{
			name: "802.1Q tag VLAN 4095 PCP 7 inner IPv6",
			layers: []gopacket.SerializableLayer{
				&layers.Ethernet{DstMAC: other, SrcMAC: unicast, EthernetType: layers.EthernetTypeDot1Q},
				&layers.Dot1Q{Priority: 7, VLANIdentifier: 4095, Type: layers.EthernetTypeIPv6},
				payload,
			},
		},
		{
			name: "802.1Q tag VLAN 0 (priority tag)",
			layers: []gopacket.SerializableLayer{
				&layers.Ethernet{DstMAC: other, SrcMAC: unicast, EthernetType: layers.EthernetTypeDot1Q},
				&layers.Dot1Q{Priority: 3, VLANIdentifier: 0, Type: layers.EthernetTypeARP},
				payload,
			},
		},
		{
			name: "802.1ad outer tag over 802.1Q",
			layers: []gopacket.SerializableLayer{
				&layers.Ethernet{DstMAC: unicast, SrcMAC: other, EthernetType: layers.EthernetTypeQinQ},
				&layers.Dot1Q{VLANIdentifier: 20, Type: layers.EthernetTypeDot1Q},
				&layers.Dot1Q{VLANIdentifier: 30, Type: layers.EthernetTypeIPv4},
				payload,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := serialize(t, tt.layers...)
			p := decodeFirst(t, data, layers.LayerTypeEthernet)
			g := layerOf[*layers.Ethernet](t, p, layers.LayerTypeEthernet)
			e := Ethernet(data)
			if !e.IsValid() {
				t.Fatal("IsValid = false")
			}
			if got, want := e.Dst(), MAC(g.DstMAC); got != want {
				t.Errorf("Dst = %v, want %v", got, want)
			}
			if got, want := e.Src(), MAC(g.SrcMAC); got != want {
				t.Errorf("Src = %v, want %v", got, want)
			}
			if got, want := e.Dst().String(), g.DstMAC.String(); got != want {
				t.Errorf("Dst().String() = %q, want %q", got, want)
			}
			if got, want := e.Src().String(), g.SrcMAC.String(); got != want {
				t.Errorf("Src().String() = %q, want %q", got, want)
			}
			if got := e.Dst().IsBroadcast(); got != tt.wantBroadcast {
				t.Errorf("Dst().IsBroadcast() = %v, want %v", got, tt.wantBroadcast)
			}
			if got := e.Dst().IsMulticast(); got != tt.wantMulticast {
				t.Errorf("Dst().IsMulticast() = %v, want %v", got, tt.wantMulticast)
			}
			if got, want := e.Type(), uint16(g.EthernetType); got != want {
				t.Errorf("Type = %#04x, want %#04x", got, want)
			}
			tag, tagged := p.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q)
			if got := e.Tagged(); got != tagged {
				t.Fatalf("Tagged = %v, gopacket found a tag: %v", got, tagged)
			}
			if !tagged {
				return
			}
			if len(e) < EthernetVLANLen {
				t.Fatalf("tagged frame of %d bytes", len(e))
			}
			if got, want := e.VLAN(), tag.VLANIdentifier; got != want {
				t.Errorf("VLAN = %d, want %d", got, want)
			}
			if got, want := e.InnerType(), uint16(tag.Type); got != want {
				t.Errorf("InnerType = %#04x, want %#04x", got, want)
			}
		})
	}
}

func TestEthernetEncodeDecodesInGopacket(t *testing.T) {
	r := newRand(t)
	tests := []struct {
		name      string
		dst, src  MAC
		etherType uint16
	}{
		{"IPv4", MAC{0x02, 0, 0, 0, 0, 1}, MAC{0x02, 0, 0, 0, 0, 2}, EtherTypeIPv4},
		{"IPv6 multicast", MAC{0x33, 0x33, 0xff, 0, 0, 1}, MAC{0x02, 0, 0, 0, 0, 2}, EtherTypeIPv6},
		{"ARP broadcast", MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, MAC{0x02, 0xaa, 0, 0, 0, 2}, EtherTypeARP},
		{"VLAN TPID", MAC{0x02, 0, 0, 0, 0, 1}, MAC{0x02, 0, 0, 0, 0, 2}, EtherTypeVLAN},
		{"QinQ TPID", MAC{0x02, 0, 0, 0, 0, 1}, MAC{0x02, 0, 0, 0, 0, 2}, EtherTypeQinQ},
		{"random", MAC(randBytes(r, 6)), MAC(randBytes(r, 6)), uint16(r.Uint32()) | 0x0600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Ethernet(randBytes(r, EthernetLen)) // garbage must be overwritten
			b.Encode(tt.dst, tt.src, tt.etherType)
			var g layers.Ethernet
			if err := g.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
				t.Fatalf("gopacket: %v", err)
			}
			if MAC(g.DstMAC) != tt.dst || MAC(g.SrcMAC) != tt.src || uint16(g.EthernetType) != tt.etherType {
				t.Errorf("gopacket decoded dst %v src %v type %#04x, want %v %v %#04x",
					g.DstMAC, g.SrcMAC, uint16(g.EthernetType), tt.dst, tt.src, tt.etherType)
			}

			// The setters overwrite exactly one field each.
			b.SetDst(tt.src)
			b.SetSrc(tt.dst)
			b.SetType(^tt.etherType)
			if b.Dst() != tt.src || b.Src() != tt.dst || b.Type() != ^tt.etherType {
				t.Errorf("after setters: dst %v src %v type %#04x", b.Dst(), b.Src(), b.Type())
			}
		})
	}
}

func TestMAC(t *testing.T) {
	tests := []struct {
		name                 string
		mac                  MAC
		str                  string
		broadcast, multicast bool
	}{
		{"zero", MAC{}, "00:00:00:00:00:00", false, false},
		{"broadcast", MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "ff:ff:ff:ff:ff:ff", true, true},
		{"almost broadcast", MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}, "ff:ff:ff:ff:ff:fe", false, true},
		{"IPv4 multicast", MAC{0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb}, "01:00:5e:00:00:fb", false, true},
		{"locally administered unicast", MAC{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}, "02:42:ac:11:00:02", false, false},
		{"vendor unicast", MAC{0xfc, 0xaa, 0x14, 0x0b, 0x1c, 0x7e}, "fc:aa:14:0b:1c:7e", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.mac.String(); got != tt.str {
				t.Errorf("String = %q, want %q", got, tt.str)
			}
			if got, want := tt.mac.String(), hwAddr(tt.mac).String(); got != want {
				t.Errorf("String = %q, net.HardwareAddr says %q", got, want)
			}
			if got := tt.mac.IsBroadcast(); got != tt.broadcast {
				t.Errorf("IsBroadcast = %v, want %v", got, tt.broadcast)
			}
			if got := tt.mac.IsMulticast(); got != tt.multicast {
				t.Errorf("IsMulticast = %v, want %v", got, tt.multicast)
			}
		})
	}
}

func TestARPMatchesGopacket(t *testing.T) {
	mac1 := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	mac2 := net.HardwareAddr{0x0c, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	tests := []struct {
		name string
		arp  *layers.ARP
	}{
		{"request", &layers.ARP{Operation: layers.ARPRequest, SourceHwAddress: mac1, SourceProtAddress: ip4(10, 0, 0, 1),
			DstHwAddress: make(net.HardwareAddr, 6), DstProtAddress: ip4(10, 0, 0, 2)}},
		{"reply", &layers.ARP{Operation: layers.ARPReply, SourceHwAddress: mac2, SourceProtAddress: ip4(10, 0, 0, 2),
			DstHwAddress: mac1, DstProtAddress: ip4(10, 0, 0, 1)}},
		{"gratuitous", &layers.ARP{Operation: layers.ARPRequest, SourceHwAddress: mac2, SourceProtAddress: ip4(192, 168, 255, 254),
			DstHwAddress: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, DstProtAddress: ip4(192, 168, 255, 254)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.arp.AddrType = layers.LinkTypeEthernet
			tt.arp.Protocol = layers.EthernetTypeIPv4
			tt.arp.HwAddressSize, tt.arp.ProtAddressSize = 6, 4
			data := serialize(t, tt.arp)
			g := layerOf[*layers.ARP](t, decode(t, data, layers.LayerTypeARP), layers.LayerTypeARP)
			a := ARP(data)
			if !a.IsValid() {
				t.Fatal("IsValid = false")
			}
			if a.Op() != g.Operation {
				t.Errorf("Op = %d, want %d", a.Op(), g.Operation)
			}
			if a.SenderMAC() != MAC(g.SourceHwAddress) {
				t.Errorf("SenderMAC = %v, want %v", a.SenderMAC(), net.HardwareAddr(g.SourceHwAddress))
			}
			if a.SenderIP() != [4]byte(g.SourceProtAddress) {
				t.Errorf("SenderIP = %v, want %v", a.SenderIP(), net.IP(g.SourceProtAddress))
			}
			if a.TargetMAC() != MAC(g.DstHwAddress) {
				t.Errorf("TargetMAC = %v, want %v", a.TargetMAC(), net.HardwareAddr(g.DstHwAddress))
			}
			if a.TargetIP() != [4]byte(g.DstProtAddress) {
				t.Errorf("TargetIP = %v, want %v", a.TargetIP(), net.IP(g.DstProtAddress))
			}
		})
	}
}

func TestARPEncodeDecodesInGopacket(t *testing.T) {
	r := newRand(t)
	tests := []struct {
		name      string
		op        uint16
		senderMAC MAC
		senderIP  [4]byte
		targetMAC MAC
		targetIP  [4]byte
	}{
		{"request", ARPRequest, MAC{0x02, 1, 2, 3, 4, 5}, [4]byte{10, 1, 0, 1}, MAC{}, [4]byte{10, 1, 0, 2}},
		{"reply", ARPReply, MAC{0x02, 5, 4, 3, 2, 1}, [4]byte{10, 1, 0, 2}, MAC{0x02, 1, 2, 3, 4, 5}, [4]byte{10, 1, 0, 1}},
		{"random", uint16(r.Uint32()), MAC(randBytes(r, 6)), [4]byte(randBytes(r, 4)), MAC(randBytes(r, 6)), [4]byte(randBytes(r, 4))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := ARP(randBytes(r, ARPLen))
			a.Encode(tt.op, tt.senderMAC, tt.senderIP, tt.targetMAC, tt.targetIP)
			if !a.IsValid() {
				t.Fatal("IsValid = false after Encode")
			}
			var g layers.ARP
			if err := g.DecodeFromBytes(a, gopacket.NilDecodeFeedback); err != nil {
				t.Fatalf("gopacket: %v", err)
			}
			if g.AddrType != layers.LinkTypeEthernet || g.Protocol != layers.EthernetTypeIPv4 ||
				g.HwAddressSize != 6 || g.ProtAddressSize != 4 {
				t.Errorf("gopacket: htype %v ptype %v hlen %d plen %d", g.AddrType, g.Protocol, g.HwAddressSize, g.ProtAddressSize)
			}
			if g.Operation != tt.op || MAC(g.SourceHwAddress) != tt.senderMAC || [4]byte(g.SourceProtAddress) != tt.senderIP ||
				MAC(g.DstHwAddress) != tt.targetMAC || [4]byte(g.DstProtAddress) != tt.targetIP {
				t.Errorf("gopacket decoded %+v", g)
			}
		})
	}
}
