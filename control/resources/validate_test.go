package resources

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func pool(name, cidr string, mod func(*IPPoolSpec)) *IPPool {
	p := &IPPool{ObjectMeta: ObjectMeta{Name: name}, Spec: IPPoolSpec{CIDR: cidr}}
	if mod != nil {
		mod(&p.Spec)
	}
	return p
}

func TestValidate(t *testing.T) {
	tru := true
	full := func() *IPAMBlock {
		b := &IPAMBlock{ObjectMeta: ObjectMeta{Name: "10-0-0-0-30"}, Spec: IPAMBlockSpec{
			CIDR: "10.0.0.0/30", Affinity: "host:node-a",
			Allocations: []int32{0, -1, 0, -1},
			Unallocated: []int32{3, 1},
			Attributes:  []AllocationAttribute{{HandleID: "k8s-pod-network.abc"}},
		}}
		return b
	}
	tests := []struct {
		name string
		obj  Resource
		want string // "" = valid; else the exact error text
	}{
		{"pool ok v4", pool("pool-a", "10.65.0.0/16", nil), ""},
		{"pool ok v6", pool("pool-6", "fd00:65::/48", func(s *IPPoolSpec) { s.VXLANMode = EncapCrossSubnet }), ""},
		{"pool ok everything", pool("p", "10.0.0.0/8", func(s *IPPoolSpec) {
			s.BlockSize, s.IPIPMode, s.NATOutgoing, s.Disabled, s.NodeSelector = 24, EncapAlways, true, true, "zone == 'a' && has(x)"
		}), ""},
		{"blockSize out of range v4", pool("pool-a", "10.65.0.0/16", func(s *IPPoolSpec) { s.BlockSize = 33 }),
			`IPPool "pool-a": spec.blockSize: 33 is out of range 20..32 for IPv4`},
		{"blockSize too small v4", pool("pool-a", "10.0.0.0/8", func(s *IPPoolSpec) { s.BlockSize = 19 }),
			`IPPool "pool-a": spec.blockSize: 19 is out of range 20..32 for IPv4`},
		{"blockSize out of range v6", pool("pool-6", "fd00::/64", func(s *IPPoolSpec) { s.BlockSize = 112 }),
			`IPPool "pool-6": spec.blockSize: 112 is out of range 116..128 for IPv6`},
		{"block larger than pool", pool("small", "10.65.0.0/28", nil),
			`IPPool "small": spec.blockSize: 26 is shorter than the pool's prefix length 28 (a block cannot be larger than its pool)`},
		{"invalid cidr", pool("pool-a", "10.65.0.0/33", nil), `IPPool "pool-a": spec.cidr: "10.65.0.0/33" is not a valid CIDR`},
		{"garbage cidr", pool("pool-a", "ten", nil), `IPPool "pool-a": spec.cidr: "ten" is not a valid CIDR`},
		{"missing cidr", pool("pool-a", "", nil), `IPPool "pool-a": spec.cidr: is required`},
		{"host bits", pool("pool-a", "10.65.0.1/16", nil), `IPPool "pool-a": spec.cidr: 10.65.0.1/16 has host bits set (the network is 10.65.0.0/16)`},
		{"link-local", pool("ll", "169.254.0.0/20", nil), `IPPool "ll": spec.cidr: 169.254.0.0/20 overlaps the link-local range 169.254.0.0/16`},
		{"v6 multicast", pool("mc", "ff02::/64", nil), `IPPool "mc": spec.cidr: ff02::/64 overlaps the multicast range ff00::/8`},
		{"ipip and vxlan", pool("both", "10.0.0.0/16", func(s *IPPoolSpec) { s.IPIPMode, s.VXLANMode = EncapAlways, EncapCrossSubnet }),
			`IPPool "both": spec: ipipMode Always and vxlanMode CrossSubnet cannot both be enabled`},
		{"ipip on v6", pool("v6", "fd00::/64", func(s *IPPoolSpec) { s.IPIPMode = EncapAlways }),
			`IPPool "v6": spec.ipipMode: IP-in-IP is not supported for IPv6 pools (use vxlanMode)`},
		{"bad mode", pool("m", "10.0.0.0/16", func(s *IPPoolSpec) { s.VXLANMode = "Sometimes" }),
			`IPPool "m": spec.vxlanMode: "Sometimes" is not one of Never, Always, CrossSubnet`},
		{"bad selector", pool("sel", "10.0.0.0/16", func(s *IPPoolSpec) { s.NodeSelector = "zone ==" }),
			`IPPool "sel": spec.nodeSelector: "zone ==": selector: expected a quoted value at offset 7`},
		{"bad name", pool("Pool_A", "10.0.0.0/16", nil),
			`IPPool "Pool_A": metadata.name: "Pool_A" is not a valid name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters`},
		{"missing name and two errors", pool("", "10.0.0.0/16", func(s *IPPoolSpec) { s.BlockSize = 40 }),
			`IPPool "": metadata.name: is required; spec.blockSize: 40 is out of range 20..32 for IPv4`},
		{"namespace on cluster-scoped", &IPPool{ObjectMeta: ObjectMeta{Name: "p", Namespace: "ns"}, Spec: IPPoolSpec{CIDR: "10.0.0.0/16"}},
			`IPPool "ns/p": metadata.namespace: IPPool is cluster-scoped; namespace must be empty, not "ns"`},
		{"bad label", &Node{ObjectMeta: ObjectMeta{Name: "n", Labels: map[string]string{"a b": "c"}}},
			`Node "n": metadata.labels: key "a b" is not a valid label key`},

		{"bgpconfig ok", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: BGPConfigurationSpec{ASNumber: 65000, NodeToNodeMeshEnabled: &tru,
			ServiceClusterIPs: []ServiceIPBlock{{CIDR: "10.96.0.0/12"}}}}, ""},
		{"bgpconfig name", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "other"}},
			`BGPConfiguration "other": metadata.name: "other" must be "default" or "node.<node name>"`},
		{"bgpconfig service cidr", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "node.a"}, Spec: BGPConfigurationSpec{ServiceExternalIPs: []ServiceIPBlock{{CIDR: "x"}}}},
			`BGPConfiguration "node.a": spec.serviceExternalIPs[0].cidr: "x" is not a valid CIDR`},

		{"peer ok", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "192.0.2.1:1179", ASNumber: 65001,
			NodeSelector: "rack == 'a'", Password: &BGPPassword{Value: "s3cret"}}}, ""},
		{"peer rr ok", &BGPPeer{ObjectMeta: ObjectMeta{Name: "rr"}, Spec: BGPPeerSpec{PeerSelector: "has(route-reflector)"}}, ""},
		{"peer v6 port", &BGPPeer{ObjectMeta: ObjectMeta{Name: "p6"}, Spec: BGPPeerSpec{PeerIP: "[2001:db8::1]:179", ASNumber: 1}}, ""},
		{"peer no asn", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "192.0.2.1"}},
			`BGPPeer "tor": spec.asNumber: is required with peerIP`},
		{"peer both", &BGPPeer{ObjectMeta: ObjectMeta{Name: "x"}, Spec: BGPPeerSpec{PeerIP: "192.0.2.1", ASNumber: 1, PeerSelector: "all()", Node: "n", NodeSelector: "all()"}},
			`BGPPeer "x": spec: node and nodeSelector cannot both be set; spec: peerIP and peerSelector cannot both be set`},
		{"peer none", &BGPPeer{ObjectMeta: ObjectMeta{Name: "x"}}, `BGPPeer "x": spec: one of peerIP and peerSelector is required`},
		{"peer bad ip", &BGPPeer{ObjectMeta: ObjectMeta{Name: "x"}, Spec: BGPPeerSpec{PeerIP: "300.1.1.1", ASNumber: 1}},
			`BGPPeer "x": spec.peerIP: "300.1.1.1" is not an IP address or address:port`},
		{"peer password both", &BGPPeer{ObjectMeta: ObjectMeta{Name: "x"}, Spec: BGPPeerSpec{PeerSelector: "all()",
			Password: &BGPPassword{Value: "a", SecretKeyRef: &SecretKeyRef{Name: "s", Key: "k"}}}},
			`BGPPeer "x": spec.password: exactly one of secretKeyRef and value is required`},
		{"peer restart", &BGPPeer{ObjectMeta: ObjectMeta{Name: "x"}, Spec: BGPPeerSpec{PeerSelector: "all()", MaxRestartTime: "2h"}},
			`BGPPeer "x": spec.maxRestartTime: "2h" is not a duration in 0s..4095s`},

		{"node ok", &Node{ObjectMeta: ObjectMeta{Name: "node-a", Labels: map[string]string{"kubernetes.io/hostname": "node-a"}}, Spec: NodeSpec{
			Addresses:           []NodeAddress{{Address: "192.0.2.10/24", Type: "InternalIP"}, {Address: "2001:db8::10"}},
			BGP:                 &NodeBGPSpec{IPv4Address: "192.0.2.10/24", ASNumber: 65010, RouteReflectorClusterID: "224.0.0.1"},
			IPv4VXLANTunnelAddr: "10.65.0.1", VXLANTunnelMACAddr: "66:aa:bb:cc:dd:ee"}}, ""},
		{"node bad", &Node{ObjectMeta: ObjectMeta{Name: "node-a"}, Spec: NodeSpec{
			Addresses:           []NodeAddress{{Address: "192.0.2.300"}},
			BGP:                 &NodeBGPSpec{IPv4Address: "2001:db8::1/64"},
			IPv4VXLANTunnelAddr: "fd00::1", VXLANTunnelMACAddr: "66:aa"}},
			`Node "node-a": spec.addresses[0].address: "192.0.2.300" is not a valid IP address or address/prefix-length; ` +
				`spec.bgp.ipv4Address: "2001:db8::1/64" is not an IPv4 address; spec.ipv4VXLANTunnelAddr: "fd00::1" is not an IPv4 address; ` +
				`spec.vxlanTunnelMACAddr: "66:aa" is not a 48-bit MAC address`},

		{"hep ok", &HostEndpoint{ObjectMeta: ObjectMeta{Name: "node-a-eth0"}, Spec: HostEndpointSpec{Node: "node-a", InterfaceName: "eth0",
			ExpectedIPs: []string{"192.0.2.10"}, Ports: []EndpointPort{{Name: "ssh", Protocol: "TCP", Port: 22}}}}, ""},
		{"hep bad", &HostEndpoint{ObjectMeta: ObjectMeta{Name: "h"}, Spec: HostEndpointSpec{
			Ports: []EndpointPort{{Name: "p", Protocol: "ICMP", Port: 0}}}},
			`HostEndpoint "h": spec.node: is required; spec: one of interfaceName and expectedIPs is required; ` +
				`spec.ports[0].protocol: "ICMP" is not one of TCP, UDP, SCTP; spec.ports[0].port: is required (1..65535)`},

		{"block ok", full(), ""},
		{"block name mismatch", func() Resource { b := full(); b.Name = "10-0-0-4-30"; return b }(),
			`IPAMBlock "10-0-0-4-30": metadata.name: "10-0-0-4-30" does not match cidr 10.0.0.0/30 (want "10-0-0-0-30")`},
		{"block wrong length", func() Resource { b := full(); b.Spec.Allocations = b.Spec.Allocations[:3]; return b }(),
			`IPAMBlock "10-0-0-0-30": spec.allocations: has 3 entries; a 10.0.0.0/30 block has 4 addresses`},
		{"block dangling attribute", func() Resource { b := full(); b.Spec.Allocations[0] = 1; return b }(),
			`IPAMBlock "10-0-0-0-30": spec.allocations[0]: 1 is not -1 or an index into attributes (1 entries)`},
		{"block unallocated allocated", func() Resource { b := full(); b.Spec.Unallocated = []int32{0, 1}; return b }(),
			`IPAMBlock "10-0-0-0-30": spec.unallocated[0]: ordinal 0 is allocated`},
		{"block unallocated missing", func() Resource { b := full(); b.Spec.Unallocated = []int32{1}; return b }(),
			`IPAMBlock "10-0-0-0-30": spec.unallocated: lists 1 ordinals but 2 addresses are free`},
		{"block too big", &IPAMBlock{ObjectMeta: ObjectMeta{Name: "10-0-0-0-16"}, Spec: IPAMBlockSpec{CIDR: "10.0.0.0/16"}},
			`IPAMBlock "10-0-0-0-16": spec.cidr: 10.0.0.0/16 has 16 host bits; blocks have at most 12`},
		{"block affinity", func() Resource { b := full(); b.Spec.Affinity = "node-a"; return b }(),
			`IPAMBlock "10-0-0-0-30": spec.affinity: "node-a" is not "host:<node name>"`},

		{"affinity ok", &BlockAffinity{ObjectMeta: ObjectMeta{Name: "node-a-10-0-0-0-26"}, Spec: BlockAffinitySpec{State: AffinityConfirmed, Node: "node-a", CIDR: "10.0.0.0/26"}}, ""},
		{"affinity mismatch", &BlockAffinity{ObjectMeta: ObjectMeta{Name: "node-b-10-0-0-0-26"}, Spec: BlockAffinitySpec{State: "maybe", Node: "node-a", CIDR: "10.0.0.0/26"}},
			`BlockAffinity "node-b-10-0-0-0-26": spec.state: "maybe" is not one of pending, confirmed, pendingDeletion; ` +
				`metadata.name: "node-b-10-0-0-0-26" does not match node and cidr (want "node-a-10-0-0-0-26")`},
		{"handle ok", &IPAMHandle{ObjectMeta: ObjectMeta{Name: "k8s-pod-network.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
			Spec: IPAMHandleSpec{HandleID: "k8s-pod-network.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Block: map[string]int{"10.0.0.0/26": 1}}}, ""},
		{"handle bad", &IPAMHandle{ObjectMeta: ObjectMeta{Name: "a/b"}, Spec: IPAMHandleSpec{HandleID: "a/b", Block: map[string]int{"10.0.0.0/26": 0}}},
			`IPAMHandle "a/b": spec.handleID: "a/b" is not a valid handle: 1..253 letters, digits, '-', '_' and '.'; spec.block["10.0.0.0/26"]: count 0 is not positive`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.obj.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %s", tt.want)
			}
			if err.Error() != tt.want {
				t.Fatalf("error\n got: %s\nwant: %s", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Key != KeyOf(tt.obj) {
				t.Errorf("not a *ValidationError for %v: %#v", KeyOf(tt.obj), err)
			}
		})
	}
}

func TestPoolDefaults(t *testing.T) {
	tests := []struct {
		cidr      string
		blockSize int
	}{
		{"10.0.0.0/16", 26},
		{"fd00::/48", 122},
		{"bad", 0},
	}
	for _, tt := range tests {
		p := pool("p", tt.cidr, nil)
		p.Default()
		if p.Spec.BlockSize != tt.blockSize || p.Spec.IPIPMode != EncapNever || p.Spec.VXLANMode != EncapNever || p.Spec.NodeSelector != "all()" {
			t.Errorf("%s: defaults %+v", tt.cidr, p.Spec)
		}
	}
	c := &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "default"}}
	c.Default()
	if c.Spec.ASNumber != 64512 || c.Spec.NodeToNodeMeshEnabled == nil || !*c.Spec.NodeToNodeMeshEnabled || c.Spec.ListenPort != 179 {
		t.Errorf("bgp defaults %+v", c.Spec)
	}
}

func TestCheckPoolOverlaps(t *testing.T) {
	tests := []struct {
		name  string
		pools []*IPPool
		want  string
	}{
		{"disjoint", []*IPPool{pool("a", "10.0.0.0/16", nil), pool("b", "10.1.0.0/16", nil), pool("c", "fd00::/48", nil)}, ""},
		{"v4 contains", []*IPPool{pool("b", "10.0.5.0/24", nil), pool("a", "10.0.0.0/16", nil)},
			`IPPool "b": spec.cidr: 10.0.5.0/24 overlaps IPPool "a" (10.0.0.0/16)`},
		{"v6 equal", []*IPPool{pool("x", "fd00::/48", nil), pool("y", "fd00::/48", nil)},
			`IPPool "y": spec.cidr: fd00::/48 overlaps IPPool "x" (fd00::/48)`},
		{"bad cidr skipped", []*IPPool{pool("x", "nope", nil), pool("y", "10.0.0.0/8", nil)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPoolOverlaps(tt.pools)
			got := ""
			if err != nil {
				got = err.Error()
				if !errors.Is(err, ErrInvalid) {
					t.Error("not ErrInvalid")
				}
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBlockNames(t *testing.T) {
	tests := []struct{ cidr, block, affinity string }{
		{"10.65.0.64/26", "10-65-0-64-26", "node-a-10-65-0-64-26"},
		{"fd00:65::/122", "fd00-65---122", "node-a-fd00-65---122"},
		{"fd00:65::40/122", "fd00-65--40-122", "node-a-fd00-65--40-122"},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.cidr)
		if got := BlockName(p); got != tt.block {
			t.Errorf("BlockName(%s) = %q, want %q", tt.cidr, got, tt.block)
		}
		if got := AffinityName("node-a", p); got != tt.affinity {
			t.Errorf("AffinityName(%s) = %q, want %q", tt.cidr, got, tt.affinity)
		}
		if !validSubdomain(tt.block) {
			t.Errorf("%q is not a valid name", tt.block)
		}
		if got, ok := ParseBlockName(tt.block); !ok || got != p {
			t.Errorf("ParseBlockName(%q) = %s, %v", tt.block, got, ok)
		}
	}
}

func TestParseBlockNameRejects(t *testing.T) {
	for _, s := range []string{"", "10", "10-0-0-0", "10-0-0-0-33", "a-b-c-d-26", "10-0-0-1-24", "fd00---x", "-1-2-3-26", "1-2-3-4-5-6"} {
		if p, ok := ParseBlockName(s); ok {
			t.Errorf("ParseBlockName(%q) = %s", s, p)
		}
	}
	// 32 IPv4 and IPv6 blocks round trip.
	for i := range 32 {
		for _, base := range []string{"10.%d.7.64/26", "fd00:%x::7:40/122"} {
			p := netip.MustParsePrefix(fmt.Sprintf(base, i))
			if got, ok := ParseBlockName(BlockName(p)); !ok || got != p {
				t.Errorf("round trip %s: %s, %v", p, got, ok)
			}
		}
	}
}

func TestASNumber(t *testing.T) {
	tests := []struct {
		in   string
		want ASNumber
		err  string
	}{
		{"64512", 64512, ""},
		{"1.10", 65546, ""},
		{"4294967295", 4294967295, ""},
		{"4294967296", 0, "not an integer"},
		{"1.70000", 0, "asdot"},
		{"x", 0, "not an integer"},
	}
	for _, tt := range tests {
		got, err := ParseASNumber(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseASNumber(%q) err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseASNumber(%q) = %d, %v", tt.in, got, err)
		}
	}
}
