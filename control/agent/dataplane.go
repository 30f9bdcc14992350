package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afxdp"
	"github.com/tabbynet/tabby/datapath/engine"
	"github.com/tabbynet/tabby/internal/nsutil"
)

// dataplane is where the reconciler publishes policy, and what health and
// metrics read.
type dataplane interface {
	name() string
	// setPolicy publishes a compiled policy; state returns the whole
	// policy state for dataplanes that render it themselves.
	setPolicy(c *acl.Compiled, state func() *acl.State) error
	// counters returns the packet counters (false: none).
	counters() (datapath.Counters, bool)
	// err reports a dataplane that stopped working.
	err() error
	close() error
}

// afxdpDataplane is the userspace engine over AF_XDP.
type afxdpDataplane struct {
	tables *datapath.Tables
	eng    *engine.Engine
	// ports are the engine's interfaces: the configured ones and the
	// local pods' veths (attached by the reconciler, see portManager).
	ports     *portTable
	nl        *netlink.Handle // in the dataplane's namespace
	netnsName string
	xdpMode   afxdp.XDPMode
	maxPods   int
	// podRing is the ring size of pods' sockets (Config.PodRingSize).
	podRing int
	// steering is what the engine steers and decapsulates for the pools.
	steering poolSteering
	log      *slog.Logger
	// hostPolicy enforces host-endpoint policy on traffic to and from the
	// node itself, which the XDP program passes to the kernel: the same
	// model rendered as nftables (only loaded while host endpoints exist).
	hostPolicy *kernelDataplane
	hostLoaded bool
}

func (d *afxdpDataplane) name() string { return "afxdp" }

func (d *afxdpDataplane) setPolicy(c *acl.Compiled, state func() *acl.State) error {
	if err := d.tables.SetPolicy(c); err != nil {
		return err
	}
	if d.hostPolicy == nil {
		return nil
	}
	st := state()
	hasHost := false
	for i := range st.Endpoints {
		hasHost = hasHost || st.Endpoints[i].Host
	}
	if !hasHost && !d.hostLoaded {
		return nil
	}
	if err := d.hostPolicy.setPolicy(c, func() *acl.State { return st }); err != nil {
		return fmt.Errorf("host-endpoint policy: %w", err)
	}
	d.hostLoaded = hasHost
	return nil
}

func (d *afxdpDataplane) counters() (datapath.Counters, bool) { return d.eng.Counters(), true }

// socketTotals returns the AF_XDP sockets' counters, removed pods' included.
func (d *afxdpDataplane) socketTotals() afxdp.SocketStats { return d.eng.SocketTotals() }

// frames returns where the UMEM frames are.
func (d *afxdpDataplane) frames() afxdp.FrameCounts { return d.eng.Frames() }

func (d *afxdpDataplane) err() error {
	select {
	case <-d.eng.Done():
		if err := d.eng.Err(); err != nil {
			return fmt.Errorf("engine stopped: %w", err)
		}
		return errors.New("engine stopped")
	default:
		return nil
	}
}

func (d *afxdpDataplane) close() error {
	err := d.eng.Close()
	d.nl.Close()
	return err
}

// dataplaneSetup is what starting a dataplane needs.
type dataplaneSetup struct {
	cfg       *Config
	netns     netns.NsHandle
	nodeAddr  netip.Prefix
	podCIDRs  []netip.Prefix
	hostAddrs []netip.Addr
	ipip      bool
	vxlan     bool
	log       *slog.Logger
}

// startAFXDP creates the tables and starts the engine on the configured
// interfaces, with frame memory for Config.MaxPods pods' veths more.
func startAFXDP(ctx context.Context, s dataplaneSetup) (_ *afxdpDataplane, err error) {
	node := datapath.NodeConfig{HostPort: datapath.NoPort, EnforcePolicy: true, DecapIPIP: s.ipip, DecapVXLAN: s.vxlan}
	if s.nodeAddr.IsValid() {
		node.TunnelIPv4 = s.nodeAddr.Addr()
	}
	tables, err := datapath.NewTables(node)
	if err != nil {
		return nil, fmt.Errorf("dataplane tables: %w", err)
	}
	nl, err := netlinkHandle(s.netns)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			nl.Close()
		}
	}()
	ports := newPortTable()
	var ifs []engine.Interface
	for i, name := range s.cfg.Interfaces {
		link, err := nl.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", name, err)
		}
		p := enginePort{id: datapath.PortID(i), ifindex: link.Attrs().Index, mtu: link.Attrs().MTU}
		copy(p.mac[:], link.Attrs().HardwareAddr)
		ports.set(name, p)
		ifs = append(ifs, engine.Interface{Name: name, XDPMode: s.cfg.XDPMode})
	}
	ec := engine.Config{Interfaces: ifs, Tables: tables, PollMode: s.cfg.PollMode, PodCIDRs: s.podCIDRs,
		HostAddresses: s.hostAddrs, Netns: s.netns, Logger: s.log.With("component", "engine"),
		RuntimeInterfaces: s.cfg.MaxPods, RuntimeRingSize: s.cfg.PodRingSize, BurstRingSize: s.cfg.BurstRingSize}
	if s.nodeAddr.IsValid() {
		ec.NodeAddress = s.nodeAddr.Addr()
	}
	eng, err := engine.Start(context.WithoutCancel(ctx), ec)
	if err != nil {
		return nil, fmt.Errorf("start engine: %w", err)
	}
	reserveWorkerPs(len(eng.Stats().Workers), s.log)
	netnsName := s.cfg.Netns
	if netnsName == "" {
		netnsName = "(the agent's)"
	}
	return &afxdpDataplane{tables: tables, eng: eng, ports: ports, nl: nl, netnsName: netnsName, xdpMode: s.cfg.XDPMode,
		maxPods: s.cfg.MaxPods, podRing: s.cfg.PodRingSize,
		log: s.log.With("component", "dataplane"), hostPolicy: newKernelDataplane(s.netns, s.cfg.NodeName, s.log)}, nil
}

// reserveWorkerPs raises GOMAXPROCS to the CPUs plus the engine's
// workers. A polling worker keeps its Go P; with GOMAXPROCS = CPUs the
// agent's other goroutines (BGP, watches, the endpoint API, the garbage
// collector) then queue for the remaining Ps and the scheduler preempts
// the worker every 10 ms while one of them waits, which adds milliseconds
// to every packet it holds (measured in the e2e harness: p99 2.6 ms with
// 2 Ps, 0.27 ms with 4 on 2 CPUs). With a P per worker more, the OS
// shares the CPUs instead, where the worker competes as a thread.
func reserveWorkerPs(workers int, log *slog.Logger) {
	want := runtime.NumCPU() + workers
	if cur := runtime.GOMAXPROCS(0); cur < want {
		runtime.GOMAXPROCS(want)
		log.Info("GOMAXPROCS raised for the dataplane workers", "from", cur, "to", want, "workers", workers)
	}
}

// deleteConntrack forgets a removed endpoint's flows in the engine's
// userspace conntrack (every worker) and in the kernel's, which tracks the
// pod's traffic to the node itself (the steering program passes it up).
func (d *afxdpDataplane) deleteConntrack(v6 bool, addrs []netip.Addr) (uint, error) {
	n, err := d.eng.ForgetFlows(addrs)
	total := uint(n)
	if d.hostPolicy != nil {
		k, kerr := d.hostPolicy.deleteConntrack(v6, addrs)
		total += k
		err = errors.Join(err, kerr)
	}
	return total, err
}

// kernelDataplane leaves forwarding to the kernel: policy is rendered as an
// nftables table (acl.RenderNftables) and loaded with nft in the agent's
// network namespace; routes come from the CNI plugin (local pods) and the
// route programmer (everything else). On shutdown the table and the routes
// stay, so that a restarting agent does not interrupt traffic.
type kernelDataplane struct {
	netns netns.NsHandle
	node  string
	// nft is the nft binary (empty: policy is not programmed and a
	// warning is logged once).
	nft    string
	log    *slog.Logger
	warned bool
}

func newKernelDataplane(h netns.NsHandle, node string, log *slog.Logger) *kernelDataplane {
	d := &kernelDataplane{netns: h, node: node, log: log}
	if p, err := exec.LookPath("nft"); err == nil {
		d.nft = p
	}
	return d
}

func (d *kernelDataplane) name() string { return "kernel" }

func (d *kernelDataplane) setPolicy(_ *acl.Compiled, state func() *acl.State) error {
	if d.nft == "" {
		if !d.warned {
			d.log.Warn("nft not found: network policy is not enforced by the kernel dataplane")
			d.warned = true
		}
		return nil
	}
	rules, err := acl.RenderNftables(state(), acl.Options{Node: d.node})
	if err != nil {
		return err
	}
	// Replace the table atomically: create it (a no-op if it exists),
	// delete it and load the new one in one transaction.
	script := "table inet " + acl.NftablesTable + " {}\ndelete table inet " + acl.NftablesTable + "\n" + rules
	return inNetns(d.netns, func() error {
		cmd := exec.Command(d.nft, "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("nft: %v: %s", err, strings.TrimSpace(out.String()))
		}
		return nil
	})
}

// conntrackCleaner is a dataplane whose forwarding keeps connection
// tracking state of pods' flows that outlives a deleted pod: the
// reconciler deletes the entries of a removed local endpoint's addresses,
// so that a pod that reuses an address does not inherit its flows.
type conntrackCleaner interface {
	// deleteConntrack deletes the entries with one of addrs (all of one
	// family, v6 or not) as original source, original destination or
	// reply source (a flow DNATed to the address), and returns how many
	// it deleted.
	deleteConntrack(v6 bool, addrs []netip.Addr) (uint, error)
}

// deleteConntrack deletes kernel conntrack entries in the dataplane's
// namespace (Felix's conntrack --delete --orig-src/--orig-dst/--reply-src).
// The table is dumped once per call, whatever the number of addresses.
func (d *kernelDataplane) deleteConntrack(v6 bool, addrs []netip.Addr) (uint, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	fam := netlink.InetFamily(netlink.FAMILY_V4)
	if v6 {
		fam = netlink.FAMILY_V6
	}
	var filters []netlink.CustomConntrackFilter
	for _, ip := range addrs {
		for _, ft := range []netlink.ConntrackFilterType{netlink.ConntrackOrigSrcIP, netlink.ConntrackOrigDstIP,
			netlink.ConntrackReplySrcIP} {
			f := &netlink.ConntrackFilter{}
			if err := f.AddIP(ft, ip.AsSlice()); err != nil {
				return 0, fmt.Errorf("conntrack filter for %s: %w", ip, err)
			}
			filters = append(filters, f)
		}
	}
	nl, err := netlinkHandle(d.netns)
	if err != nil {
		return 0, err
	}
	defer nl.Close()
	n, err := nl.ConntrackDeleteFilters(netlink.ConntrackTable, fam, filters...)
	if err != nil {
		return n, fmt.Errorf("delete conntrack entries of %v: %w", addrs, err)
	}
	return n, nil
}

func (d *kernelDataplane) counters() (datapath.Counters, bool) { return datapath.Counters{}, false }
func (d *kernelDataplane) err() error                          { return nil }
func (d *kernelDataplane) close() error                        { return nil }

// forwardingSysctl is one sysctl a kernel-dataplane node needs.
type forwardingSysctl struct{ key, value string }

// enableForwarding sets, in namespace h, what a node that forwards pods'
// traffic in the kernel needs (as Felix does): net.ipv4.ip_forward=1, and
// net.ipv6.conf.all.forwarding=1 when ipv6 (an IPv6 pool exists). procSys
// is the sysctl tree (/proc/sys). It logs what it changed and returns an
// error naming the sysctl it could not read or set.
func enableForwarding(h netns.NsHandle, procSys string, ipv6 bool, log *slog.Logger) error {
	want := []forwardingSysctl{{"net.ipv4.ip_forward", "1"}}
	if ipv6 {
		want = append(want, forwardingSysctl{"net.ipv6.conf.all.forwarding", "1"})
	}
	return inNetns(h, func() error {
		for _, s := range want {
			path := filepath.Join(procSys, strings.ReplaceAll(s.key, ".", "/"))
			cur, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("sysctl %s: %w", s.key, err)
			}
			old := strings.TrimSpace(string(cur))
			if old == s.value {
				continue
			}
			if err := os.WriteFile(path, []byte(s.value), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", s.key, s.value, err)
			}
			log.Info("sysctl set for kernel forwarding", "sysctl", s.key, "old", old, "new", s.value)
		}
		return nil
	})
}

// inNetns runs fn on a thread in namespace h (the current one if h is not
// valid; see nsutil.Do).
func inNetns(h netns.NsHandle, fn func() error) error { return nsutil.Do(h, fn) }

// validNetns reports whether h names a namespace (0 and -1 mean "the
// calling thread's").
func validNetns(h netns.NsHandle) bool { return h > 0 }

func netlinkHandle(h netns.NsHandle) (*netlink.Handle, error) {
	var nl *netlink.Handle
	var err error
	if validNetns(h) {
		nl, err = netlink.NewHandleAt(h)
	} else {
		nl, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return nl, nil
}

// interfaceAddrs returns the global addresses of the named interfaces (all
// interfaces when names is empty), in order.
func interfaceAddrs(h netns.NsHandle, names []string) ([]netip.Prefix, error) {
	nl, err := netlinkHandle(h)
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	var links []netlink.Link
	if len(names) == 0 {
		if links, err = nl.LinkList(); err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
	}
	for _, n := range names {
		l, err := nl.LinkByName(n)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", n, err)
		}
		links = append(links, l)
	}
	var out []netip.Prefix
	for _, l := range links {
		addrs, err := nl.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if !ip.IsGlobalUnicast() {
				continue
			}
			ones, _ := a.Mask.Size()
			out = append(out, netip.PrefixFrom(ip, ones))
		}
	}
	return out, nil
}
