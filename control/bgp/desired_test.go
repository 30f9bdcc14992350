package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/resources"
)

// peerLine renders a peer compactly for comparisons:
// "addr:port as N [md5=pw] [rr-client cid] [from local] source/name".
func peerLine(p Peer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d as %d", p.Address, p.Port, p.ASN)
	if p.Password != "" {
		fmt.Fprintf(&b, " md5=%s", p.Password)
	}
	if p.RouteReflectorClient {
		fmt.Fprintf(&b, " rr-client %s", p.ClusterID)
	}
	if p.RestartTime != 0 {
		fmt.Fprintf(&b, " gr=%s", p.RestartTime)
	}
	fmt.Fprintf(&b, " from %s %s/%s", p.LocalAddress, p.Source, p.Name)
	return b.String()
}

func TestCompute(t *testing.T) {
	rack := func(r string) map[string]string { return map[string]string{"rack": r} }
	threeNodes := []*resources.Node{
		node("node-a", "192.0.2.1/24", rack("a")),
		node("node-b", "192.0.2.2/24", rack("a")),
		node("node-c", "198.51.100.3/24", rack("b")),
	}
	peerIP := func(name, ip string, asn uint32, mod ...func(*resources.BGPPeerSpec)) *resources.BGPPeer {
		p := &resources.BGPPeer{ObjectMeta: resources.ObjectMeta{Name: name},
			Spec: resources.BGPPeerSpec{PeerIP: ip, ASNumber: resources.ASNumber(asn)}}
		for _, m := range mod {
			m(&p.Spec)
		}
		return p
	}
	secrets := func(ref resources.SecretKeyRef) (string, error) {
		if ref.Name == "bgp" && ref.Key == "tor" {
			return "s3cret", nil
		}
		return "", errors.New("no such secret")
	}
	rrNode := func(name, ip, cid string) *resources.Node {
		return node(name, ip, map[string]string{"rr": "yes"}, func(n *resources.Node) { n.Spec.BGP.RouteReflectorClusterID = cid })
	}
	rrPeer := &resources.BGPPeer{ObjectMeta: resources.ObjectMeta{Name: "to-rr"},
		Spec: resources.BGPPeerSpec{NodeSelector: "all()", PeerSelector: "rr == 'yes'"}}

	tests := []struct {
		name    string
		res     Resources
		want    []string // peer lines
		wantErr string
	}{
		{
			name: "mesh by default",
			res:  Resources{Node: "node-a", Nodes: threeNodes},
			want: []string{
				"192.0.2.2:179 as 64512 from 192.0.2.1 mesh/node-b",
				"198.51.100.3:179 as 64512 from 192.0.2.1 mesh/node-c",
			},
		},
		{
			name: "mesh disabled",
			res:  Resources{Node: "node-a", Nodes: threeNodes, Configs: []*resources.BGPConfiguration{defaultConfig(65000, false, 0)}},
		},
		{
			name: "cluster AS, per-node AS and port",
			res: Resources{Node: "node-a", Nodes: []*resources.Node{
				node("node-a", "192.0.2.1/24", nil),
				node("node-b", "192.0.2.2/24", nil, func(n *resources.Node) { n.Spec.BGP.ASNumber = 65002 }),
				node("node-c", "192.0.2.3/24", nil),
			}, Configs: []*resources.BGPConfiguration{defaultConfig(65000, true, 1179), nodeConfig("node-c", 2179)}},
			want: []string{
				"192.0.2.2:1179 as 65002 from 192.0.2.1 mesh/node-b",
				"192.0.2.3:2179 as 65000 from 192.0.2.1 mesh/node-c",
			},
		},
		{
			name: "global explicit peer with password and restart time, beside the mesh",
			res: Resources{Node: "node-c", Nodes: threeNodes, Peers: []*resources.BGPPeer{
				peerIP("tor", "198.51.100.254", 65100, func(s *resources.BGPPeerSpec) {
					s.Password = &resources.BGPPassword{Value: "pw"}
					s.MaxRestartTime = "300s"
				})}},
			want: []string{
				"192.0.2.1:179 as 64512 from 198.51.100.3 mesh/node-a",
				"192.0.2.2:179 as 64512 from 198.51.100.3 mesh/node-b",
				"198.51.100.254:179 as 65100 md5=pw gr=5m0s from 198.51.100.3 explicit/tor",
			},
		},
		{
			name: "explicit peers by node and nodeSelector, with port and secret",
			res: Resources{Node: "node-a", Nodes: threeNodes, Secret: secrets,
				Configs: []*resources.BGPConfiguration{defaultConfig(64512, false, 0)},
				Peers: []*resources.BGPPeer{
					peerIP("tor-a", "192.0.2.254:1179", 65001, func(s *resources.BGPPeerSpec) {
						s.NodeSelector = "rack == 'a'"
						s.Password = &resources.BGPPassword{SecretKeyRef: &resources.SecretKeyRef{Name: "bgp", Key: "tor"}}
					}),
					peerIP("tor-b", "198.51.100.254", 65002, func(s *resources.BGPPeerSpec) { s.NodeSelector = "rack == 'b'" }),
					peerIP("only-b", "192.0.2.253", 65003, func(s *resources.BGPPeerSpec) { s.Node = "node-b" }),
					peerIP("only-a", "192.0.2.252", 65004, func(s *resources.BGPPeerSpec) { s.Node = "node-a" }),
				}},
			want: []string{
				"192.0.2.252:179 as 65004 from 192.0.2.1 explicit/only-a",
				"192.0.2.254:1179 as 65001 md5=s3cret from 192.0.2.1 explicit/tor-a",
			},
		},
		{
			name: "unresolvable secret leaves the peer out",
			res: Resources{Node: "node-a", Nodes: threeNodes, Secret: secrets,
				Configs: []*resources.BGPConfiguration{defaultConfig(64512, false, 0)},
				Peers: []*resources.BGPPeer{peerIP("tor", "192.0.2.254", 65001, func(s *resources.BGPPeerSpec) {
					s.Password = &resources.BGPPassword{SecretKeyRef: &resources.SecretKeyRef{Name: "bgp", Key: "missing"}}
				})}},
			wantErr: `BGPPeer "tor": password: secret bgp/missing: no such secret`,
		},
		{
			name: "explicit peer at a node's address wins over the mesh",
			res:  Resources{Node: "node-a", Nodes: threeNodes, Peers: []*resources.BGPPeer{peerIP("b-as-tor", "192.0.2.2", 65009)}},
			want: []string{
				"192.0.2.2:179 as 65009 from 192.0.2.1 explicit/b-as-tor",
				"198.51.100.3:179 as 64512 from 192.0.2.1 mesh/node-c",
			},
		},
		{
			name: "global peer that is this node is skipped",
			res: Resources{Node: "node-a", Nodes: threeNodes, Configs: []*resources.BGPConfiguration{defaultConfig(64512, false, 0)},
				Peers: []*resources.BGPPeer{peerIP("a", "192.0.2.1", 64512)}},
		},
		{
			name: "route-reflector client peers only with the reflectors",
			res: Resources{Node: "node-a", Configs: []*resources.BGPConfiguration{defaultConfig(64512, false, 0)},
				Nodes: append(slices.Clone(threeNodes), rrNode("rr-1", "192.0.2.101/24", "244.0.0.1"), rrNode("rr-2", "192.0.2.102/24", "244.0.0.1")),
				Peers: []*resources.BGPPeer{rrPeer}},
			want: []string{
				"192.0.2.101:179 as 64512 from 192.0.2.1 selector/rr-1",
				"192.0.2.102:179 as 64512 from 192.0.2.1 selector/rr-2",
			},
		},
		{
			name: "reflector: clients in both directions, same-cluster reflector not a client",
			res: Resources{Node: "rr-1", Configs: []*resources.BGPConfiguration{defaultConfig(64512, false, 0)},
				Nodes: append(slices.Clone(threeNodes), rrNode("rr-1", "192.0.2.101/24", "244.0.0.1"), rrNode("rr-2", "192.0.2.102/24", "244.0.0.1")),
				Peers: []*resources.BGPPeer{rrPeer}},
			want: []string{
				"192.0.2.1:179 as 64512 rr-client 244.0.0.1 from 192.0.2.101 selector/node-a",
				"192.0.2.2:179 as 64512 rr-client 244.0.0.1 from 192.0.2.101 selector/node-b",
				"192.0.2.102:179 as 64512 from 192.0.2.101 selector/rr-2",
				"198.51.100.3:179 as 64512 rr-client 244.0.0.1 from 192.0.2.101 selector/node-c",
			},
		},
		{
			name: "reflectors for one rack only",
			res: Resources{Node: "rr-1", Configs: []*resources.BGPConfiguration{defaultConfig(64512, false, 0)},
				Nodes: append(slices.Clone(threeNodes), rrNode("rr-1", "192.0.2.101/24", "244.0.0.1")),
				Peers: []*resources.BGPPeer{{ObjectMeta: resources.ObjectMeta{Name: "rack-a-rr"},
					Spec: resources.BGPPeerSpec{NodeSelector: "rack == 'a'", PeerSelector: "rr == 'yes'"}}}},
			want: []string{
				"192.0.2.1:179 as 64512 rr-client 244.0.0.1 from 192.0.2.101 selector/node-a",
				"192.0.2.2:179 as 64512 rr-client 244.0.0.1 from 192.0.2.101 selector/node-b",
			},
		},
		{
			name: "dual-stack mesh: one session per family",
			res: Resources{Node: "node-a", Nodes: []*resources.Node{
				node("node-a", "192.0.2.1/24", nil, func(n *resources.Node) { n.Spec.BGP.IPv6Address = "2001:db8::1/64" }),
				node("node-b", "192.0.2.2/24", nil, func(n *resources.Node) { n.Spec.BGP.IPv6Address = "2001:db8::2/64" }),
				node("node-c", "192.0.2.3/24", nil),
			}},
			want: []string{
				"192.0.2.2:179 as 64512 from 192.0.2.1 mesh/node-b",
				"192.0.2.3:179 as 64512 from 192.0.2.1 mesh/node-c",
				"2001:db8::2:179 as 64512 from 2001:db8::1 mesh/node-b",
			},
		},
		{
			name:    "node without BGP",
			res:     Resources{Node: "node-x", Nodes: append(slices.Clone(threeNodes), &resources.Node{ObjectMeta: resources.ObjectMeta{Name: "node-x"}})},
			wantErr: ErrNoBGP.Error(),
		},
		{
			name: "bad selector is reported, the rest still computed",
			res: Resources{Node: "node-a", Nodes: threeNodes, Peers: []*resources.BGPPeer{{ObjectMeta: resources.ObjectMeta{Name: "bad"},
				Spec: resources.BGPPeerSpec{NodeSelector: "rack ==", PeerSelector: "all()"}}}},
			want: []string{
				"192.0.2.2:179 as 64512 from 192.0.2.1 mesh/node-b",
				"198.51.100.3:179 as 64512 from 192.0.2.1 mesh/node-c",
			},
			wantErr: `BGPPeer "bad": nodeSelector`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Compute(tt.res)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			var got []string
			for _, p := range d.Peers {
				got = append(got, peerLine(p))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("peers:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestComputeGlobalAndPrefixes(t *testing.T) {
	res := Resources{
		Node: "node-a",
		Nodes: []*resources.Node{
			node("node-a", "192.0.2.1/24", nil, func(n *resources.Node) { n.Spec.BGP.IPv6Address = "2001:db8::1/64" }),
			node("node-b", "192.0.2.2/24", nil),
		},
		Configs: []*resources.BGPConfiguration{defaultConfig(65000, true, 1179), {
			ObjectMeta: resources.ObjectMeta{Name: "node.node-a"}, Spec: resources.BGPConfigurationSpec{ASNumber: 65010, ListenPort: 2179}}},
		Affinities: []*resources.BlockAffinity{
			affinity("node-a", "10.65.0.64/26", resources.AffinityConfirmed),
			affinity("node-a", "10.65.0.0/26", resources.AffinityConfirmed),
			affinity("node-a", "fd00:65::/122", resources.AffinityConfirmed),
			affinity("node-a", "10.65.1.0/26", resources.AffinityPending),
			affinity("node-a", "10.65.2.0/26", resources.AffinityPendingDeletion),
			affinity("node-b", "10.65.3.0/26", resources.AffinityConfirmed),
		},
	}
	d := mustCompute(t, res)
	want := Global{ASN: 65010, RouterID: netip.MustParseAddr("192.0.2.1"), ListenPort: 2179,
		ListenAddresses: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}
	if !sameGlobal(d.Global, want) {
		t.Errorf("global %+v, want %+v", d.Global, want)
	}
	if d.NextHop4 != netip.MustParseAddr("192.0.2.1") || d.NextHop6 != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("next hops %v %v", d.NextHop4, d.NextHop6)
	}
	if !slices.Equal(d.Prefixes, prefixes("10.65.0.0/26", "10.65.0.64/26", "fd00:65::/122")) {
		t.Errorf("prefixes %v", d.Prefixes)
	}
	if len(d.Peers) != 1 || d.Peers[0].ASN != 65000 || d.Peers[0].Port != 1179 {
		t.Errorf("peers %+v: want node-b at AS 65000 port 1179 (eBGP from 65010)", d.Peers)
	}
	if d.Peers[0].RestartTime != 0 || DefaultRestartTime != 120*time.Second {
		t.Errorf("restart time %v", d.Peers[0].RestartTime)
	}
}

func TestValidateDesired(t *testing.T) {
	g := Global{ASN: 64512, RouterID: netip.MustParseAddr("192.0.2.1")}
	a := netip.MustParseAddr("192.0.2.2")
	for _, tt := range []struct {
		name string
		d    Desired
		ok   bool
	}{
		{"ok", Desired{Global: g, Peers: []Peer{{Address: a, ASN: 1}}, Prefixes: prefixes("10.0.0.0/26")}, true},
		{"no AS", Desired{Global: Global{RouterID: g.RouterID}}, false},
		{"v6 router id", Desired{Global: Global{ASN: 1, RouterID: netip.MustParseAddr("::1")}}, false},
		{"duplicate peer", Desired{Global: g, Peers: []Peer{{Address: a, ASN: 1}, {Address: a, ASN: 2}}}, false},
		{"peer without AS", Desired{Global: g, Peers: []Peer{{Address: a}}}, false},
		{"client without cluster", Desired{Global: g, Peers: []Peer{{Address: a, ASN: 1, RouteReflectorClient: true}}}, false},
		{"unmasked prefix", Desired{Global: g, Prefixes: prefixes("10.0.0.1/26")}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := validateDesired(&tt.d); (err == nil) != tt.ok {
				t.Errorf("validate: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
