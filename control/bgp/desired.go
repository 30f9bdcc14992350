package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tabbynet/tabby/acl/selector"
	"github.com/tabbynet/tabby/control/resources"
)

// DefaultPort is the BGP port used when no listenPort is configured.
const DefaultPort = 179

// DefaultRestartTime is the graceful-restart time advertised when a BGPPeer
// sets no maxRestartTime (Calico's and BIRD's default).
const DefaultRestartTime = 120 * time.Second

// Global is the speaker's own identity.
type Global struct {
	// ASN is this node's AS.
	ASN uint32
	// RouterID is the BGP identifier (an IPv4 address; the node's).
	RouterID netip.Addr
	// ListenPort is the port to accept sessions on; 0 accepts none (every
	// session is then initiated by this speaker).
	ListenPort uint16
	// ListenAddresses restricts listening to these addresses (empty: all).
	ListenAddresses []netip.Addr
}

// PeerSource says why a peer is configured.
type PeerSource uint8

// Peer sources, in order of precedence when two give the same address.
const (
	// SourceExplicit: a BGPPeer with a peerIP (a ToR, an external router).
	SourceExplicit PeerSource = iota + 1
	// SourceSelector: another node selected by a BGPPeer's peerSelector, or
	// a node whose BGPPeer's peerSelector selects this node (route
	// reflection).
	SourceSelector
	// SourceMesh: the node-to-node mesh.
	SourceMesh
)

func (s PeerSource) String() string {
	switch s {
	case SourceExplicit:
		return "explicit"
	case SourceSelector:
		return "selector"
	case SourceMesh:
		return "mesh"
	}
	return "unknown"
}

// Peer is one BGP session to configure.
type Peer struct {
	// Address is the peer's address; it identifies the session.
	Address netip.Addr
	// Port is the peer's BGP port (0: DefaultPort).
	Port uint16
	// ASN is the peer's AS: equal to Global.ASN for iBGP.
	ASN uint32
	// Password enables TCP-MD5 (RFC 2385) with this key.
	Password string
	// LocalAddress is the source address of the session (this node's
	// address of the peer's family); invalid lets the kernel choose.
	LocalAddress netip.Addr
	// RouteReflectorClient makes this speaker a route reflector for the
	// peer, in cluster ClusterID.
	RouteReflectorClient bool
	ClusterID            netip.Addr
	// Passive waits for the peer to connect instead of connecting.
	Passive bool
	// RestartTime is the graceful-restart time advertised to the peer
	// (0: DefaultRestartTime).
	RestartTime time.Duration
	// Source and Name say where the peer comes from: the node name for
	// node peers, the BGPPeer name for explicit peers.
	Source PeerSource
	Name   string
}

// Desired is the state a Speaker converges on.
type Desired struct {
	Global Global
	// Peers are sorted by address, one per address.
	Peers []Peer
	// Prefixes are the prefixes this node originates, sorted.
	Prefixes []netip.Prefix
	// NextHop4 and NextHop6 are the next hops of originated IPv4 and IPv6
	// prefixes (this node's addresses); a prefix of a family without one is
	// not advertised.
	NextHop4, NextHop6 netip.Addr
}

// Resources are what Compute reads. They are not modified.
type Resources struct {
	// Node is this node's name.
	Node string
	// Nodes are all nodes, this one included.
	Nodes []*resources.Node
	// Configs are the BGPConfigurations: "default" and "node.<name>".
	Configs []*resources.BGPConfiguration
	// Peers are the BGPPeers.
	Peers []*resources.BGPPeer
	// Affinities are the BlockAffinities (of every node; Compute picks
	// this node's confirmed ones).
	Affinities []*resources.BlockAffinity
	// Secret resolves a password's secretKeyRef (nil: such passwords are
	// errors).
	Secret func(resources.SecretKeyRef) (string, error)
}

// ErrNoBGP is returned by Compute for a node that has no IPv4 BGP address
// (no spec.bgp.ipv4Address), which therefore runs no BGP.
var ErrNoBGP = errors.New("node has no BGP IPv4 address")

// NodeIPv4 returns a node's IPv4 BGP address with its prefix length (the
// subnet decides CrossSubnet): spec.bgp.ipv4Address, or else the first IPv4
// entry of spec.addresses. A bare address gets /32.
func NodeIPv4(n *resources.Node) (netip.Prefix, bool) {
	if n.Spec.BGP != nil && n.Spec.BGP.IPv4Address != "" {
		if p, ok := parseAddrOrPrefix(n.Spec.BGP.IPv4Address); ok && p.Addr().Is4() {
			return p, true
		}
	}
	for _, a := range n.Spec.Addresses {
		if p, ok := parseAddrOrPrefix(a.Address); ok && p.Addr().Is4() {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// NodeIPv6 is NodeIPv4 for IPv6 (spec.bgp.ipv6Address or spec.addresses).
func NodeIPv6(n *resources.Node) (netip.Prefix, bool) {
	if n.Spec.BGP != nil && n.Spec.BGP.IPv6Address != "" {
		if p, ok := parseAddrOrPrefix(n.Spec.BGP.IPv6Address); ok && p.Addr().Is6() {
			return p, true
		}
	}
	for _, a := range n.Spec.Addresses {
		if p, ok := parseAddrOrPrefix(a.Address); ok && p.Addr().Is6() && !p.Addr().IsLinkLocalUnicast() {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func parseAddrOrPrefix(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p, err == nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// bgpNode is a node as Compute sees it.
type bgpNode struct {
	n        *resources.Node
	ip4, ip6 netip.Addr
	asn      uint32
	port     uint16
	cid      string
}

// Compute returns the desired state of node r.Node's speaker. Peers that
// cannot be configured (a bad selector, an unresolvable password) are left
// out and reported in the returned error, which is then non-nil alongside a
// usable Desired; ErrNoBGP (alone) means the node runs no BGP.
func Compute(r Resources) (Desired, error) {
	var def *resources.BGPConfiguration
	for _, c := range r.Configs {
		if c.Name == "default" {
			def = c
		}
	}
	clusterASN := uint32(resources.DefaultASNumber)
	mesh := true
	defPort := uint16(DefaultPort)
	if def != nil {
		if def.Spec.ASNumber != 0 {
			clusterASN = uint32(def.Spec.ASNumber)
		}
		if def.Spec.NodeToNodeMeshEnabled != nil {
			mesh = *def.Spec.NodeToNodeMeshEnabled
		}
		if def.Spec.ListenPort != 0 {
			defPort = def.Spec.ListenPort
		}
	}
	nodeConfigs := map[string]*resources.BGPConfiguration{}
	for _, c := range r.Configs {
		if name, ok := strings.CutPrefix(c.Name, "node."); ok {
			nodeConfigs[name] = c
		}
	}

	// Every node with a BGP IPv4 address, with its AS and port resolved.
	nodes := map[string]*bgpNode{}
	var names []string
	for _, n := range r.Nodes {
		if n.Spec.BGP == nil {
			continue
		}
		p4, ok := NodeIPv4(n)
		if !ok {
			continue
		}
		bn := &bgpNode{n: n, ip4: p4.Addr(), asn: clusterASN, port: defPort, cid: n.Spec.BGP.RouteReflectorClusterID}
		if p6, ok := NodeIPv6(n); ok {
			bn.ip6 = p6.Addr()
		}
		if c := nodeConfigs[n.Name]; c != nil {
			if c.Spec.ASNumber != 0 {
				bn.asn = uint32(c.Spec.ASNumber)
			}
			if c.Spec.ListenPort != 0 {
				bn.port = c.Spec.ListenPort
			}
		}
		if n.Spec.BGP.ASNumber != 0 {
			bn.asn = uint32(n.Spec.BGP.ASNumber)
		}
		nodes[n.Name] = bn
		names = append(names, n.Name)
	}
	slices.Sort(names)
	me := nodes[r.Node]
	if me == nil {
		return Desired{}, fmt.Errorf("node %q: %w", r.Node, ErrNoBGP)
	}

	d := Desired{
		Global: Global{
			ASN:             me.asn,
			RouterID:        me.ip4,
			ListenPort:      me.port,
			ListenAddresses: []netip.Addr{me.ip4},
		},
		NextHop4: me.ip4,
		NextHop6: me.ip6,
	}
	if me.ip6.IsValid() {
		d.Global.ListenAddresses = append(d.Global.ListenAddresses, me.ip6)
	}

	var errs []error
	peers := map[netip.Addr]Peer{}
	add := func(p Peer) {
		if old, ok := peers[p.Address]; ok && old.Source <= p.Source {
			return
		}
		peers[p.Address] = p
	}
	local := func(peer netip.Addr) netip.Addr {
		if peer.Is4() {
			return me.ip4
		}
		return me.ip6
	}
	nodePeers := func(other *bgpNode, src PeerSource, pw string, restart time.Duration) {
		for _, a := range []netip.Addr{other.ip4, other.ip6} {
			if !a.IsValid() || !local(a).IsValid() {
				continue
			}
			p := Peer{Address: a, Port: other.port, ASN: other.asn, Password: pw, LocalAddress: local(a),
				RestartTime: restart, Source: src, Name: other.n.Name}
			// A reflector treats every node outside its cluster as a client.
			if src == SourceSelector && me.cid != "" && other.cid != me.cid {
				p.RouteReflectorClient = true
				p.ClusterID, _ = netip.ParseAddr(me.cid)
			}
			add(p)
		}
	}

	if mesh {
		for _, name := range names {
			if name != r.Node {
				nodePeers(nodes[name], SourceMesh, "", 0)
			}
		}
	}

	for _, bp := range r.Peers {
		appliesToMe, err := appliesTo(bp, me.n)
		if err != nil {
			errs = append(errs, fmt.Errorf("BGPPeer %q: %w", bp.Name, err))
			continue
		}
		pw, err := password(bp, r.Secret)
		if err != nil {
			errs = append(errs, fmt.Errorf("BGPPeer %q: %w", bp.Name, err))
			continue
		}
		var restart time.Duration
		if bp.Spec.MaxRestartTime != "" {
			if restart, err = time.ParseDuration(bp.Spec.MaxRestartTime); err != nil {
				errs = append(errs, fmt.Errorf("BGPPeer %q: maxRestartTime: %w", bp.Name, err))
				continue
			}
		}
		switch {
		case bp.Spec.PeerIP != "":
			if !appliesToMe {
				continue
			}
			ap, err := bp.PeerAddrPort()
			if err != nil {
				errs = append(errs, fmt.Errorf("BGPPeer %q: %w", bp.Name, err))
				continue
			}
			addr := ap.Addr()
			if addr == me.ip4 || addr == me.ip6 {
				continue // a global peer that is this node itself
			}
			add(Peer{Address: addr, Port: ap.Port(), ASN: uint32(bp.Spec.ASNumber), Password: pw,
				LocalAddress: local(addr), RestartTime: restart, Source: SourceExplicit, Name: bp.Name})
		case bp.Spec.PeerSelector != "":
			sel, err := selector.Parse(bp.Spec.PeerSelector)
			if err != nil {
				errs = append(errs, fmt.Errorf("BGPPeer %q: peerSelector: %w", bp.Name, err))
				continue
			}
			selectedMe := sel.MatchesMap(me.n.Labels)
			for _, name := range names {
				if name == r.Node {
					continue
				}
				other := nodes[name]
				forward := appliesToMe && sel.MatchesMap(other.n.Labels)
				reverse := false
				if selectedMe {
					if reverse, err = appliesTo(bp, other.n); err != nil {
						break // reported above through appliesToMe's parse
					}
				}
				if forward || reverse {
					nodePeers(other, SourceSelector, pw, restart)
				}
			}
		}
	}
	for _, p := range peers {
		d.Peers = append(d.Peers, p)
	}
	slices.SortFunc(d.Peers, func(a, b Peer) int { return a.Address.Compare(b.Address) })

	for _, a := range r.Affinities {
		if a.Spec.Node != r.Node || a.Spec.State != resources.AffinityConfirmed {
			continue
		}
		p, err := netip.ParsePrefix(a.Spec.CIDR)
		if err != nil {
			continue
		}
		d.Prefixes = append(d.Prefixes, p.Masked())
	}
	slices.SortFunc(d.Prefixes, comparePrefix)
	d.Prefixes = slices.Compact(d.Prefixes)
	return d, errors.Join(errs...)
}

// appliesTo reports whether BGPPeer bp configures sessions on node n.
func appliesTo(bp *resources.BGPPeer, n *resources.Node) (bool, error) {
	switch {
	case bp.Spec.Node != "":
		return bp.Spec.Node == n.Name, nil
	case bp.Spec.NodeSelector != "":
		sel, err := selector.Parse(bp.Spec.NodeSelector)
		if err != nil {
			return false, fmt.Errorf("nodeSelector: %w", err)
		}
		return sel.MatchesMap(n.Labels), nil
	}
	return true, nil
}

func password(bp *resources.BGPPeer, secret func(resources.SecretKeyRef) (string, error)) (string, error) {
	pw := bp.Spec.Password
	switch {
	case pw == nil:
		return "", nil
	case pw.Value != "":
		return pw.Value, nil
	case pw.SecretKeyRef != nil:
		if secret == nil {
			return "", fmt.Errorf("password: secret %s/%s: no secret resolver", pw.SecretKeyRef.Name, pw.SecretKeyRef.Key)
		}
		v, err := secret(*pw.SecretKeyRef)
		if err != nil {
			return "", fmt.Errorf("password: secret %s/%s: %w", pw.SecretKeyRef.Name, pw.SecretKeyRef.Key, err)
		}
		return v, nil
	}
	return "", nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
