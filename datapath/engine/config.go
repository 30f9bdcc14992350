package engine

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/vishvananda/netns"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

// PortKind is the packet I/O the engine's ports use.
type PortKind uint8

// Port kinds.
const (
	// PortAFXDP (the default): AF_XDP sockets fed by the XDP steering
	// program; the kernel never sees the frames the dataplane owns.
	PortAFXDP PortKind = iota
	// PortAFPacket: AF_PACKET (TPACKET_V3) sockets, for interfaces where
	// XDP cannot attach. The kernel still sees every frame (see the
	// package documentation).
	PortAFPacket
)

func (k PortKind) String() string {
	switch k {
	case PortAFXDP:
		return "afxdp"
	case PortAFPacket:
		return "afpacket"
	}
	return fmt.Sprintf("PortKind(%d)", uint8(k))
}

// ParsePortKind parses "afxdp" or "afpacket".
func ParsePortKind(s string) (PortKind, error) {
	for _, k := range []PortKind{PortAFXDP, PortAFPacket} {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown port kind %q (want afxdp or afpacket)", s)
}

// Interface is one interface the engine sends and receives on.
type Interface struct {
	// Name is the interface name in the engine's network namespace.
	Name string
	// XDPMode is how the steering program attaches (AF_XDP only).
	// XDPAuto, the default, tries native mode and falls back to generic
	// mode with a log line.
	XDPMode afxdp.XDPMode
	// RingSize is the size of the rings of this interface's AF_XDP
	// sockets, a power of two in 64..65536 (default Config.RingSize for
	// the interfaces Start opens, Config.RuntimeRingSize for those
	// AddInterface adds). Each socket lends a fill ring's worth of frames
	// to the kernel.
	RingSize int
	// Workload marks an interface facing workloads (a pod's veth) rather
	// than the underlay: IP-in-IP and VXLAN to the node address arriving
	// on it are the kernel's, never decapsulated by the dataplane, so a
	// workload cannot inject packets behind a tunnel header whose inner
	// source address it chose.
	Workload bool
}

// Config configures an engine. Zero fields take the defaults.
type Config struct {
	// Interfaces are the ports Start opens; their order defines the
	// datapath.PortID (index) that NextHop.Port and NodeConfig.HostPort
	// use. AddInterface adds more while the engine runs.
	Interfaces []Interface
	// Tables is the forwarding state the worker reads.
	Tables *datapath.Tables
	// PortKind selects AF_XDP (default) or AF_PACKET ports.
	PortKind PortKind
	// PollMode is how the worker waits for traffic (default adaptive).
	PollMode afxdp.PollMode
	// BatchSize is the receive batch (default datapath.DefaultBatchSize).
	BatchSize int

	// Steering: what the XDP program redirects to the dataplane;
	// everything else is XDP_PASS to the kernel. With AF_PACKET ports the
	// same classification is a classic BPF socket filter, applied when
	// PodCIDRs or NodeAddress is set (otherwise the sockets take every
	// frame).
	//
	// PodCIDRs are the destinations the dataplane owns.
	PodCIDRs []netip.Prefix
	// NodeAddress is the IPv4 node address: IP-in-IP and VXLAN to it are
	// the dataplane's (decapsulated); other traffic to it is the host's.
	NodeAddress netip.Addr
	// HostAddresses are the host's own addresses: traffic to them goes to
	// the kernel even inside a pod CIDR (BGP, ssh, the tunnel device
	// address, ...).
	HostAddresses []netip.Addr
	// VXLANPort is the UDP port of VXLAN traffic to the node (0: 4789).
	VXLANPort uint16

	// Netns is the network namespace the interfaces are in: sockets and
	// attachments are created on a thread inside it. 0 (or -1, the
	// netns package's None) means the calling thread's namespace.
	Netns netns.NsHandle

	// Frames is the number of frames of the worker's UMEM or pool
	// (default: for AF_XDP enough for full rings on every interface, at
	// least 4096; for AF_PACKET four batches per interface, at least 1024).
	Frames int
	// RingSize is the size of every AF_XDP ring (RX, TX, fill,
	// completion) of the interfaces Start opens, a power of two (default
	// 1024).
	RingSize int
	// RuntimeInterfaces is how many interfaces AddInterface may add at
	// once beyond Interfaces: the default frame memory is sized for them
	// (AF_XDP: a fill and a TX ring and a batch of frames each). Default
	// 0: AddInterface then only has the room the minimum size leaves, and
	// fails, naming these settings, when the frame memory cannot back
	// another port.
	RuntimeInterfaces int
	// RuntimeRingSize is the ring size of interfaces added by
	// AddInterface (default 256: a pod's veth rarely needs an uplink's
	// depth, and every ring's worth of frames is lent to the kernel).
	RuntimeRingSize int
	// BurstRingSize is the RX and fill ring size of every AF_XDP socket,
	// for elastic lending (afxdp.SocketConfig.FillBase): a socket lends
	// its ring size's worth of frames at rest, and up to BurstRingSize
	// while bursts outpace its worker and at least half of the UMEM is
	// free. TCP over veths arrives in bursts of whole TSO super-packets
	// (44 frames each) and a starved fill ring drops them, which costs far
	// more in retransmissions than the frames cost; the UMEM is not sized
	// for it (idle sockets' share is what a busy one borrows). A power of
	// two (default 4096, or the ring size when larger); equal to the ring
	// size: fixed lending.
	BurstRingSize int

	// WorkerCPUs pins worker i's thread to CPU WorkerCPUs[i] (a worker
	// without an entry, or with a negative one, is not pinned). Pin workers
	// to cores nothing else runs on: a poll-mode worker that the scheduler
	// preempts adds milliseconds to the latency of every packet it holds.
	WorkerCPUs []int
	// WorkerNice is the worker threads' nice value, -20..19 (0: left as
	// inherited). The kernel forwards in softirq context, which no task
	// preempts; a negative value gives the workers the same edge over the
	// other tasks of a shared CPU, so that a queue is not left unserved
	// for a whole scheduler slice (needs CAP_SYS_NICE; a failure is logged).
	WorkerNice int

	// Logger receives setup and teardown messages (default: discard).
	// Nothing is logged per packet.
	Logger *slog.Logger
}

const (
	defaultRingSize        = 1024
	defaultRuntimeRingSize = 256
	defaultBurstRingSize   = 4096
	minFrames              = 4096
	// frameSize is the UMEM / pool frame size: a 1500-byte frame plus
	// VXLAN encapsulation plus the 256-byte XDP headroom fit with room to
	// spare, and the kernel accepts it for copy and zero-copy mode.
	frameSize = 4096
	// poolHeadroom is the headroom of AF_PACKET pool frames, the same as
	// AF_XDP's XDP_PACKET_HEADROOM.
	poolHeadroom = 256
	// maxHeadroom is the headroom of either kind of frame; a frame holds
	// frameSize - maxHeadroom bytes of packet.
	maxHeadroom = 256
)

// withDefaults validates cfg and fills in the defaults.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Tables == nil {
		return cfg, fmt.Errorf("engine: no tables")
	}
	if len(cfg.Interfaces) == 0 {
		return cfg, fmt.Errorf("engine: no interfaces")
	}
	if len(cfg.Interfaces) >= int(datapath.NoPort) {
		return cfg, fmt.Errorf("engine: %d interfaces, at most %d", len(cfg.Interfaces), datapath.NoPort-1)
	}
	seen := map[string]bool{}
	for i, ifc := range cfg.Interfaces {
		if ifc.Name == "" {
			return cfg, fmt.Errorf("engine: interface %d has no name", i)
		}
		if seen[ifc.Name] {
			return cfg, fmt.Errorf("engine: interface %s listed twice", ifc.Name)
		}
		seen[ifc.Name] = true
		if err := ifc.validate(); err != nil {
			return cfg, err
		}
	}
	if cfg.PortKind > PortAFPacket {
		return cfg, fmt.Errorf("engine: unknown port kind %d", cfg.PortKind)
	}
	if cfg.PollMode > afxdp.PollInterrupt {
		return cfg, fmt.Errorf("engine: unknown poll mode %d", cfg.PollMode)
	}
	if cfg.WorkerNice < -20 || cfg.WorkerNice > 19 {
		return cfg, fmt.Errorf("engine: worker nice %d out of range -20..19", cfg.WorkerNice)
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = datapath.DefaultBatchSize
	}
	if cfg.BatchSize < 1 || cfg.BatchSize > datapath.MaxBatchSize {
		return cfg, fmt.Errorf("engine: batch size %d out of range 1..%d", cfg.BatchSize, datapath.MaxBatchSize)
	}
	for _, p := range cfg.PodCIDRs {
		if !p.IsValid() {
			return cfg, fmt.Errorf("engine: invalid pod CIDR %v", p)
		}
	}
	for _, a := range cfg.HostAddresses {
		if !a.IsValid() {
			return cfg, fmt.Errorf("engine: invalid host address %v", a)
		}
	}
	cfg.NodeAddress = cfg.NodeAddress.Unmap()
	if cfg.NodeAddress.IsValid() && !cfg.NodeAddress.Is4() {
		return cfg, fmt.Errorf("engine: node address %v is not IPv4", cfg.NodeAddress)
	}
	if cfg.VXLANPort == 0 {
		cfg.VXLANPort = 4789
	}
	if cfg.RingSize == 0 {
		cfg.RingSize = defaultRingSize
	}
	if !validRing(cfg.RingSize) {
		return cfg, fmt.Errorf("engine: ring size %d is not a power of two in 64..65536", cfg.RingSize)
	}
	if cfg.RuntimeRingSize == 0 {
		cfg.RuntimeRingSize = defaultRuntimeRingSize
	}
	if !validRing(cfg.RuntimeRingSize) {
		return cfg, fmt.Errorf("engine: runtime ring size %d is not a power of two in 64..65536", cfg.RuntimeRingSize)
	}
	if cfg.BurstRingSize == 0 {
		cfg.BurstRingSize = defaultBurstRingSize
	}
	if !validRing(cfg.BurstRingSize) {
		return cfg, fmt.Errorf("engine: burst ring size %d is not a power of two in 64..65536", cfg.BurstRingSize)
	}
	if cfg.RuntimeInterfaces < 0 || len(cfg.Interfaces)+cfg.RuntimeInterfaces >= int(datapath.NoPort) {
		return cfg, fmt.Errorf("engine: %d runtime interfaces out of range 0..%d", cfg.RuntimeInterfaces,
			int(datapath.NoPort)-1-len(cfg.Interfaces))
	}
	if cfg.Frames < 0 || cfg.Frames > 1<<20 {
		return cfg, fmt.Errorf("engine: %d frames out of range 1..%d", cfg.Frames, 1<<20)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return cfg, nil
}

// validate checks an interface's fields.
func (ifc *Interface) validate() error {
	if ifc.Name == "" {
		return fmt.Errorf("engine: interface has no name")
	}
	if len(ifc.Name) > 15 || strings.ContainsAny(ifc.Name, "/: \t\n") {
		return fmt.Errorf("engine: interface %q: not a valid interface name", ifc.Name)
	}
	if ifc.XDPMode > afxdp.XDPGeneric {
		return fmt.Errorf("engine: interface %s: unknown XDP mode %d", ifc.Name, ifc.XDPMode)
	}
	if ifc.RingSize != 0 && !validRing(ifc.RingSize) {
		return fmt.Errorf("engine: interface %s: ring size %d is not a power of two in 64..65536", ifc.Name, ifc.RingSize)
	}
	return nil
}

func validRing(n int) bool { return n >= 64 && n <= 1<<16 && n&(n-1) == 0 }

// ringSize returns the ring size of an interface's sockets.
func (cfg *Config) ringSize(ifc Interface, runtime bool) int {
	switch {
	case ifc.RingSize != 0:
		return ifc.RingSize
	case runtime:
		return cfg.RuntimeRingSize
	}
	return cfg.RingSize
}

// portFrames is what one AF_XDP socket with rings of the given size needs
// of its UMEM: a full fill ring lent to the kernel, a full TX ring in
// flight, and a batch held by the dataplane.
func (cfg *Config) portFrames(ring int) int { return 2*ring + cfg.BatchSize }

// umemFrames is the number of frames of an AF_XDP worker's UMEM: enough
// for every port Start opens and Config.RuntimeInterfaces more (see
// portFrames), at least minFrames.
func (cfg *Config) umemFrames() int {
	if cfg.Frames > 0 {
		return cfg.Frames
	}
	n := cfg.RuntimeInterfaces * cfg.portFrames(cfg.RuntimeRingSize)
	for _, ifc := range cfg.Interfaces {
		n += cfg.portFrames(cfg.ringSize(ifc, false))
	}
	return max(minFrames, n)
}

// poolFrames is the number of frames of an AF_PACKET worker's pool: frames
// only live from a receive to the end of the batch (sendmmsg copies them).
func (cfg *Config) poolFrames() int {
	if cfg.Frames > 0 {
		return cfg.Frames
	}
	return max(1024, 4*(len(cfg.Interfaces)+cfg.RuntimeInterfaces)*cfg.BatchSize)
}

// steered reports whether any steering field is set.
func (cfg *Config) steered() bool { return len(cfg.PodCIDRs) > 0 || cfg.NodeAddress.IsValid() }
