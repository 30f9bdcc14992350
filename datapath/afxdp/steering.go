package afxdp

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// XDPMode is how the steering program is attached to an interface.
type XDPMode uint8

// XDP attach modes.
const (
	// XDPAuto (configuration only): native (driver) mode, falling back to
	// generic mode.
	XDPAuto XDPMode = iota
	// XDPDriver: native mode, in the driver's receive path.
	XDPDriver
	// XDPGeneric: generic (SKB) mode, after the kernel built an skb.
	XDPGeneric
)

func (m XDPMode) String() string {
	switch m {
	case XDPAuto:
		return "auto"
	case XDPDriver:
		return "native"
	case XDPGeneric:
		return "generic"
	}
	return fmt.Sprintf("XDPMode(%d)", uint8(m))
}

// SteeringConfig configures a Steering. Zero fields take the defaults.
type SteeringConfig struct {
	// MaxQueues bounds the queue indices a socket can be registered for
	// (XSKMAP size, default 64).
	MaxQueues int
	// MaxPrefixes bounds the pod CIDRs plus host addresses per address
	// family (default 16384).
	MaxPrefixes int
	// VXLANPort is the UDP port of VXLAN traffic to the node (default
	// 4789). IPIP and VXLAN redirection start enabled; see SetTunnels.
	VXLANPort uint16
	// Logger receives attach messages (default: discard).
	Logger *slog.Logger
}

// Steering is the XDP program that decides, per frame, whether the
// dataplane owns it (redirect to the AF_XDP socket of the frame's queue)
// or the host does (XDP_PASS): frames to pod CIDRs and IPIP/VXLAN tunnel
// traffic to the node address are the dataplane's; ARP, the host's own
// addresses (BGP, ssh, etcd, the API server, ...) and everything else are
// the kernel's.
//
// The classification maps (pod CIDRs, host addresses, node address) are
// shared by every interface the program is attached to; each attachment has
// its own XSKMAP and counters. The Set methods may be called from any
// goroutine while traffic flows: each map entry changes atomically, and a
// replaced set is applied as adds before deletes.
type Steering struct {
	log *slog.Logger
	cfg SteeringConfig

	mu        sync.Mutex
	dst4      *ebpf.Map
	dst6      *ebpf.Map
	config    *ebpf.Map
	pods      map[netip.Prefix]bool
	hosts     map[netip.Addr]bool
	node      netip.Addr
	installed map[netip.Prefix]uint32
	tunnels   steerConfig
	attached  []*Attachment
	closed    bool
}

// NewSteering creates the classification maps. Nothing is attached yet.
func NewSteering(cfg SteeringConfig) (*Steering, error) {
	if cfg.MaxQueues == 0 {
		cfg.MaxQueues = 64
	}
	if cfg.MaxPrefixes == 0 {
		cfg.MaxPrefixes = 16384
	}
	if cfg.VXLANPort == 0 {
		cfg.VXLANPort = 4789
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Steering{log: log, cfg: cfg, pods: map[netip.Prefix]bool{}, hosts: map[netip.Addr]bool{},
		installed: map[netip.Prefix]uint32{}}
	var err error
	lpm := func(name string, keySize uint32) (*ebpf.Map, error) {
		return ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.LPMTrie, KeySize: keySize, ValueSize: 4,
			MaxEntries: uint32(cfg.MaxPrefixes), Flags: 1 /* BPF_F_NO_PREALLOC */})
	}
	if s.dst4, err = lpm("tabby_dst4", 8); err != nil {
		return nil, fmt.Errorf("create steering: dst4 map: %w", err)
	}
	if s.dst6, err = lpm("tabby_dst6", 20); err != nil {
		s.dst4.Close()
		return nil, fmt.Errorf("create steering: dst6 map: %w", err)
	}
	if s.config, err = ebpf.NewMap(&ebpf.MapSpec{Name: "tabby_steer_cfg", Type: ebpf.Array, KeySize: 4,
		ValueSize: 16, MaxEntries: 1}); err != nil {
		s.dst4.Close()
		s.dst6.Close()
		return nil, fmt.Errorf("create steering: config map: %w", err)
	}
	s.tunnels.Flags = flagIPIP | flagVXLAN
	s.tunnels.VXLANPort = [2]byte{byte(cfg.VXLANPort >> 8), byte(cfg.VXLANPort)}
	if err := s.writeConfig(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Steering) writeConfig() error {
	if err := s.config.Put(uint32(0), s.tunnels); err != nil {
		return fmt.Errorf("steering: write config: %w", err)
	}
	return nil
}

// SetPodCIDRs replaces the set of destination prefixes the dataplane owns.
func (s *Steering) SetPodCIDRs(prefixes []netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pods := make(map[netip.Prefix]bool, len(prefixes))
	for _, p := range prefixes {
		if !p.IsValid() {
			return fmt.Errorf("set pod cidrs: invalid prefix %v", p)
		}
		pods[p.Masked()] = true
	}
	s.pods = pods
	return s.sync()
}

// SetHostAddresses replaces the set of the host's own addresses: traffic to
// them is passed to the kernel even inside a pod CIDR (unless it is tunnel
// traffic to the node address).
func (s *Steering) SetHostAddresses(addrs []netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	hosts := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if !a.IsValid() {
			return fmt.Errorf("set host addresses: invalid address %v", a)
		}
		hosts[a.Unmap()] = true
	}
	s.hosts = hosts
	return s.sync()
}

// SetNodeAddress sets the IPv4 address tunnel traffic (IPIP, VXLAN) to
// this node is addressed to. The zero Addr turns tunnel redirection off.
func (s *Steering) SetNodeAddress(addr netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	addr = addr.Unmap()
	if addr.IsValid() && !addr.Is4() {
		return fmt.Errorf("set node address: %v is not IPv4", addr)
	}
	s.node = addr
	s.tunnels.Node4 = [4]byte{}
	if addr.IsValid() {
		s.tunnels.Node4 = addr.As4()
	}
	if err := s.writeConfig(); err != nil {
		return err
	}
	return s.sync()
}

// SetTunnels turns redirection of IPIP and VXLAN traffic to the node
// address on or off, and sets the VXLAN UDP port (0 keeps it).
func (s *Steering) SetTunnels(ipip, vxlan bool, vxlanPort uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f uint8
	if ipip {
		f |= flagIPIP
	}
	if vxlan {
		f |= flagVXLAN
	}
	s.tunnels.Flags = f
	if vxlanPort != 0 {
		s.tunnels.VXLANPort = [2]byte{byte(vxlanPort >> 8), byte(vxlanPort)}
	}
	return s.writeConfig()
}

// sync brings the LPM tries to the desired state: pod prefixes as classPod,
// host addresses (and the node address) as classHost, a host entry winning
// over a pod prefix of the same length.
func (s *Steering) sync() error {
	want := make(map[netip.Prefix]uint32, len(s.pods)+len(s.hosts)+1)
	for p := range s.pods {
		want[p] = classPod
	}
	for a := range s.hosts {
		want[netip.PrefixFrom(a, a.BitLen())] = classHost
	}
	if s.node.IsValid() {
		want[netip.PrefixFrom(s.node, 32)] = classHost
	}
	var errs []error
	for p, c := range want {
		if old, ok := s.installed[p]; ok && old == c {
			continue
		}
		if err := s.put(p, c); err != nil {
			errs = append(errs, err)
			continue
		}
		s.installed[p] = c
	}
	for p := range s.installed {
		if _, ok := want[p]; ok {
			continue
		}
		if err := s.del(p); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
			continue
		}
		delete(s.installed, p)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("steering: update prefixes: %w", err)
	}
	return nil
}

func (s *Steering) put(p netip.Prefix, class uint32) error {
	if p.Addr().Is4() {
		return s.dst4.Put(lpmKey4{uint32(p.Bits()), p.Addr().As4()}, class)
	}
	return s.dst6.Put(lpmKey6{uint32(p.Bits()), p.Addr().As16()}, class)
}

func (s *Steering) del(p netip.Prefix) error {
	if p.Addr().Is4() {
		return s.dst4.Delete(lpmKey4{uint32(p.Bits()), p.Addr().As4()})
	}
	return s.dst6.Delete(lpmKey6{uint32(p.Bits()), p.Addr().As16()})
}

// Attachment is the steering program attached to one interface, with its
// XSKMAP (sockets by RX queue) and counters.
type Attachment struct {
	s        *Steering
	ifindex  int
	ifname   string
	mode     XDPMode
	workload bool
	xsks     *ebpf.Map
	stats    *ebpf.Map
	prog     *ebpf.Program
	link     link.Link

	mu      sync.Mutex
	sockets map[int]*Socket
	closed  bool
}

// Attach loads a steering program for the interface (in the calling
// thread's network namespace) and attaches it with a BPF link: in native
// mode, falling back to generic mode with a log line when mode is XDPAuto.
// The attachment refuses an interface that already has an XDP program, and
// Close detaches, leaving the interface as it was found.
func (s *Steering) Attach(ifname string, mode XDPMode) (*Attachment, error) {
	return s.attach(ifname, mode, false)
}

// AttachWorkload is Attach for an interface facing workloads (a pod's
// veth): IP-in-IP and VXLAN to the node address arriving on it are passed
// to the kernel, never redirected, so that a workload cannot have the
// dataplane decapsulate packets it wrapped itself (whose inner source
// address it chose). Pod-CIDR traffic is redirected as on any interface.
func (s *Steering) AttachWorkload(ifname string, mode XDPMode) (*Attachment, error) {
	return s.attach(ifname, mode, true)
}

func (s *Steering) attach(ifname string, mode XDPMode, workload bool) (*Attachment, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("attach steering: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("attach steering: closed")
	}
	a := &Attachment{s: s, ifindex: ifi.Index, ifname: ifname, workload: workload, sockets: map[int]*Socket{}}
	ok := false
	defer func() {
		if !ok {
			a.closeObjects()
		}
	}()
	if a.xsks, err = ebpf.NewMap(&ebpf.MapSpec{Name: "tabby_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4,
		MaxEntries: uint32(s.cfg.MaxQueues)}); err != nil {
		return nil, fmt.Errorf("attach steering to %s: xskmap: %w", ifname, err)
	}
	if a.stats, err = ebpf.NewMap(&ebpf.MapSpec{Name: "tabby_steer_st", Type: ebpf.PerCPUArray, KeySize: 4,
		ValueSize: 8, MaxEntries: numStats}); err != nil {
		return nil, fmt.Errorf("attach steering to %s: stats map: %w", ifname, err)
	}
	if a.prog, err = s.loadProgram(a.xsks, a.stats, workload); err != nil {
		return nil, fmt.Errorf("attach steering to %s: %w", ifname, err)
	}
	attach := func(m XDPMode) error {
		flags := link.XDPDriverMode
		if m == XDPGeneric {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: a.prog, Interface: ifi.Index, Flags: flags})
		if err != nil {
			return err
		}
		a.link, a.mode = l, m
		return nil
	}
	switch mode {
	case XDPDriver, XDPGeneric:
		if err := attach(mode); err != nil {
			return nil, fmt.Errorf("attach steering to %s in %s mode: %w", ifname, mode, err)
		}
	default:
		if nerr := attach(XDPDriver); nerr != nil {
			s.log.Info("native XDP attach failed, falling back to generic mode", "if", ifname, "err", nerr)
			if err := attach(XDPGeneric); err != nil {
				return nil, fmt.Errorf("attach steering to %s: native: %v; generic: %w", ifname, nerr, err)
			}
		}
	}
	s.log.Info("steering program attached", "if", ifname, "mode", a.mode, "workload", workload)
	s.attached = append(s.attached, a)
	ok = true
	return a, nil
}

// Verify loads the steering program without attaching it, so the kernel
// verifier checks it.
func (s *Steering) Verify() error {
	xsks, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return err
	}
	defer xsks.Close()
	stats, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: numStats})
	if err != nil {
		return err
	}
	defer stats.Close()
	for _, workload := range []bool{false, true} {
		p, err := s.loadProgram(xsks, stats, workload)
		if err != nil {
			return err
		}
		p.Close()
	}
	return nil
}

func (s *Steering) loadProgram(xsks, stats *ebpf.Map, workload bool) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tabby_steer",
		Type:         ebpf.XDP,
		Instructions: steeringProgram(xsks, stats, s.dst4, s.dst6, s.config, workload),
		// The program calls no GPL-only helper.
		License: "MIT",
	})
	if err != nil {
		return nil, fmt.Errorf("load steering program: %w", err)
	}
	return p, nil
}

// Close detaches every attachment and frees the maps.
func (s *Steering) Close() error {
	s.mu.Lock()
	att := s.attached
	s.attached = nil
	s.closed = true
	s.mu.Unlock()
	var errs []error
	for _, a := range att {
		errs = append(errs, a.Close())
	}
	for _, m := range []*ebpf.Map{s.dst4, s.dst6, s.config} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

// Mode returns the attach mode in effect (XDPDriver or XDPGeneric).
func (a *Attachment) Mode() XDPMode { return a.mode }

// Ifindex returns the interface index.
func (a *Attachment) Ifindex() int { return a.ifindex }

// Workload reports whether the attachment faces workloads (AttachWorkload).
func (a *Attachment) Workload() bool { return a.workload }

// Register puts the socket in the XSKMAP at its queue: owned frames
// arriving on that queue go to it. Closing the socket unregisters it.
func (a *Attachment) Register(sock *Socket) error {
	if sock.ifindex != a.ifindex {
		return fmt.Errorf("register socket: socket is on ifindex %d, program on %d (%s)", sock.ifindex, a.ifindex, a.ifname)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("register socket: attachment closed")
	}
	if err := a.xsks.Put(uint32(sock.queue), uint32(sock.fd)); err != nil {
		return fmt.Errorf("register socket %s/%d: %w", a.ifname, sock.queue, err)
	}
	a.sockets[sock.queue] = sock
	sock.onClose = append(sock.onClose, func() { a.Unregister(sock) })
	return nil
}

// Unregister removes the socket from the XSKMAP.
func (a *Attachment) Unregister(sock *Socket) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.sockets[sock.queue] != sock {
		return
	}
	a.xsks.Delete(uint32(sock.queue))
	delete(a.sockets, sock.queue)
}

// Stats returns the attachment's counters summed over CPUs, indexed by the
// Stat* constants.
func (a *Attachment) Stats() ([numStats]uint64, error) {
	var out [numStats]uint64
	for i := range out {
		var per []uint64
		if err := a.stats.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("steering stats: %w", err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

// Close detaches the program from the interface and frees its maps.
func (a *Attachment) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	err := a.closeObjects()
	a.s.mu.Lock()
	for i, o := range a.s.attached {
		if o == a {
			a.s.attached = append(a.s.attached[:i], a.s.attached[i+1:]...)
			break
		}
	}
	a.s.mu.Unlock()
	a.s.log.Info("steering program detached", "if", a.ifname)
	return err
}

func (a *Attachment) closeObjects() error {
	var errs []error
	if a.link != nil {
		errs = append(errs, a.link.Close())
	}
	if a.prog != nil {
		errs = append(errs, a.prog.Close())
	}
	for _, m := range []*ebpf.Map{a.xsks, a.stats} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
