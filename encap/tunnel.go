package encap

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/tabbynet/tabby/datapath/header"
)

var be = binary.BigEndian

// Mode is a tunnel encapsulation.
type Mode uint8

// Encapsulation modes.
const (
	// ModeIPIP is IPv4-in-IPv4 (IP protocol 4, RFC 2003).
	ModeIPIP Mode = iota + 1
	// ModeVXLAN is Ethernet in VXLAN in UDP in IPv4 (RFC 7348).
	ModeVXLAN
)

// String returns "ipip" or "vxlan".
func (m Mode) String() string {
	switch m {
	case ModeIPIP:
		return "ipip"
	case ModeVXLAN:
		return "vxlan"
	}
	return "mode-unknown"
}

// Per-packet overhead of each mode, as it reduces the IP MTU seen by the
// inner packets: IP-in-IP adds an outer IPv4 header; VXLAN adds outer IPv4,
// UDP and VXLAN headers and carries the inner Ethernet header.
const (
	IPIPOverhead  = header.IPv4MinLen                                                        // 20
	VXLANOverhead = header.IPv4MinLen + header.UDPLen + header.VXLANLen + header.EthernetLen // 50
)

// Lengths of the outer headers written in front of the inner data, outer
// Ethernet header included.
const (
	ipipHdrLen  = header.EthernetLen + header.IPv4MinLen                                   // 34
	vxlanHdrLen = header.EthernetLen + header.IPv4MinLen + header.UDPLen + header.VXLANLen // 50
)

// outerIP is the offset of the outer IPv4 header in both templates.
const outerIP = header.EthernetLen

// Defaults applied by NewTunnel to zero fields of TunnelConfig.
const (
	DefaultTTL       = 64
	DefaultVNI       = 4096 // Calico's
	DefaultMTU       = 1500
	DefaultVXLANPort = header.VXLANPort
)

const (
	vniMax           = 1<<24 - 1
	minUnderlayMTU   = 68 + VXLANOverhead // every mode must carry a minimum IPv4 packet
	maxUnderlayMTU   = 65535
	vxlanSrcPortMin  = 49152 // RFC 7348 §5: the dynamic/private range 49152–65535
	vxlanSrcPortBits = 14    // that range holds 2^14 ports
)

// TunnelMTU returns the IP MTU of the inner packets of a tunnel of the given
// mode over an underlay with the given IP MTU: underlay − IPIPOverhead or
// underlay − VXLANOverhead. It returns 0 for an unknown mode.
func TunnelMTU(underlayMTU int, m Mode) int {
	switch m {
	case ModeIPIP:
		return underlayMTU - IPIPOverhead
	case ModeVXLAN:
		return underlayMTU - VXLANOverhead
	}
	return 0
}

// TunnelConfig describes the tunnel to one remote node. The control plane
// fills it from the node's underlay route and VTEP record.
type TunnelConfig struct {
	// LocalMAC and NextHopMAC are the outer Ethernet source (this node's
	// underlay interface) and destination (the underlay next hop towards
	// the remote node: the remote node itself on a shared subnet, else the
	// gateway).
	LocalMAC, NextHopMAC header.MAC
	// Src and Dst are the outer IPv4 source (this node) and destination (the
	// remote node).
	Src, Dst [4]byte
	// TTL is the outer TTL; 0 means DefaultTTL.
	TTL uint8
	// UnderlayMTU is the IP MTU of the underlay path; 0 means DefaultMTU.
	UnderlayMTU int

	// VNI is the VXLAN network identifier; 0 means DefaultVNI (so VNI 0
	// itself cannot be configured).
	VNI uint32
	// Port is the VXLAN UDP destination port; 0 means DefaultVXLANPort.
	Port uint16
	// VTEPMAC and RemoteVTEPMAC are the inner Ethernet source and
	// destination written into every VXLAN-encapsulated frame (the MACs of
	// this node's and the remote node's VXLAN endpoints, as Calico's
	// vxlan.calico devices).
	VTEPMAC, RemoteVTEPMAC header.MAC
}

// Tunnel is the precomputed encapsulation state for one remote node. It is
// built once by NewTunnel on the control path and is then safe for
// concurrent use by any number of workers: its only mutable part is the
// outer IPv4 ID counter, which is atomic. A Tunnel must not be copied.
type Tunnel struct {
	cfg TunnelConfig

	// Outer headers with every per-packet field zero (TOS, lengths, ID,
	// checksums, UDP source port), copied in front of each packet.
	vxlanTmpl [vxlanHdrLen]byte
	ipipTmpl  [ipipHdrLen]byte
	// Ones'-complement sums (unfolded) of the fixed words of the outer IPv4
	// header of each template; the per-packet words are added to them.
	vxlanSum, ipipSum uint32

	// The ID counter is the one field written per packet: keep it on its
	// own cache line so that workers sharing the tunnel do not also bounce
	// the lines of the templates they read.
	_  [64]byte
	id atomic.Uint32
	_  [60]byte
}

// NewTunnel validates cfg, applies the defaults and precomputes the outer
// header templates.
func NewTunnel(cfg TunnelConfig) (*Tunnel, error) {
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.UnderlayMTU == 0 {
		cfg.UnderlayMTU = DefaultMTU
	}
	if cfg.VNI == 0 {
		cfg.VNI = DefaultVNI
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultVXLANPort
	}
	if cfg.VNI > vniMax {
		return nil, fmt.Errorf("new tunnel: VNI %d does not fit in 24 bits", cfg.VNI)
	}
	if cfg.UnderlayMTU < minUnderlayMTU || cfg.UnderlayMTU > maxUnderlayMTU {
		return nil, fmt.Errorf("new tunnel: underlay MTU %d out of range [%d, %d]",
			cfg.UnderlayMTU, minUnderlayMTU, maxUnderlayMTU)
	}
	t := &Tunnel{cfg: cfg}

	ip := header.IPv4Fields{
		Flags: header.IPv4FlagDF,
		TTL:   cfg.TTL,
		Src:   cfg.Src,
		Dst:   cfg.Dst,
	}
	ip.Protocol = header.ProtoUDP
	header.Ethernet(t.vxlanTmpl[:]).Encode(cfg.NextHopMAC, cfg.LocalMAC, header.EtherTypeIPv4)
	header.IPv4(t.vxlanTmpl[header.EthernetLen:]).Encode(&ip)
	header.UDP(t.vxlanTmpl[header.EthernetLen+header.IPv4MinLen:]).Encode(0, cfg.Port, 0, 0)
	header.VXLAN(t.vxlanTmpl[header.EthernetLen+header.IPv4MinLen+header.UDPLen:]).Encode(cfg.VNI)

	ip.Protocol = header.ProtoIPIP
	header.Ethernet(t.ipipTmpl[:]).Encode(cfg.NextHopMAC, cfg.LocalMAC, header.EtherTypeIPv4)
	header.IPv4(t.ipipTmpl[header.EthernetLen:]).Encode(&ip)

	t.vxlanSum = clearPerPacket(t.vxlanTmpl[header.EthernetLen:])
	t.ipipSum = clearPerPacket(t.ipipTmpl[header.EthernetLen:])
	return t, nil
}

// clearPerPacket zeroes the per-packet fields of an encoded outer IPv4
// header (TOS, total length, ID, checksum) and returns the unfolded sum of
// the remaining 16-bit words.
func clearPerPacket(ip []byte) uint32 {
	ip[1] = 0
	be.PutUint16(ip[2:], 0)
	be.PutUint16(ip[4:], 0)
	be.PutUint16(ip[10:], 0)
	var s uint32
	for i := 0; i < header.IPv4MinLen; i += 2 {
		s += uint32(be.Uint16(ip[i:]))
	}
	return s
}

// Config returns the tunnel's configuration, defaults applied.
func (t *Tunnel) Config() TunnelConfig { return t.cfg }

// MTU returns the IP MTU available to inner packets in mode m: the underlay
// MTU minus the mode's overhead (1480 for IP-in-IP and 1450 for VXLAN over
// a 1500-byte underlay).
func (t *Tunnel) MTU(m Mode) int { return TunnelMTU(t.cfg.UnderlayMTU, m) }

// nextID returns the next outer IPv4 identification value.
func (t *Tunnel) nextID() uint16 { return uint16(t.id.Add(1)) }

// outerIPChecksum completes the outer header checksum from a template sum
// and the per-packet words.
func outerIPChecksum(base uint32, tos uint8, totalLen, id uint16) uint16 {
	s := base + uint32(tos) + uint32(totalLen) + uint32(id)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return ^uint16(s)
}
