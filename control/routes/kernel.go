package routes

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Protocol is the route protocol number (rtm_protocol) of every route the
// kernel programmer installs; it is how the programmer recognises its own
// routes after a restart, and how `ip route show proto 116` lists them.
// 116 is not reserved by Linux or iproute2 (rt_protos lists 0-4, 8-18, 42,
// 99, 186-192), nor used by BIRD (12), Calico Felix (80) or Cilium.
const Protocol = 116

// Kernel VXLAN device defaults (Calico's vxlan.calico, with Tabby's name).
const (
	DefaultVXLANDevice = "vxlan.tabby"
	DefaultVNI         = 4096
	DefaultVXLANPort   = 4789
	DefaultIPIPDevice  = "tunl0"
)

// VXLANDevice is the kernel VXLAN device to create and keep in shape.
type VXLANDevice struct {
	// Name defaults to DefaultVXLANDevice.
	Name string
	// VNI and Port default to 4096 and 4789.
	VNI, Port int
	// MTU defaults to 1450 (a 1500-byte underlay less VXLAN's 50).
	MTU int
	// Local is this node's underlay IPv4 address (the outer source).
	Local netip.Addr
	// ParentIndex is the underlay interface (0: none).
	ParentIndex int
	// MAC is this node's VTEP MAC (Node.spec.vxlanTunnelMACAddr).
	MAC MAC
	// Addr is this node's VTEP address (Node.spec.ipv4VXLANTunnelAddr),
	// assigned as a /32.
	Addr netip.Addr
}

// KernelConfig configures a Kernel programmer.
type KernelConfig struct {
	// Handle is the netlink handle (nil: the calling thread's namespace).
	Handle *netlink.Handle
	// Table is the routing table (0: main).
	Table int
	// VXLAN configures the VXLAN device; nil means no VXLAN (VXLAN routes
	// stay pending).
	VXLAN *VXLANDevice
	// IPIPDevice is the IP-in-IP device routes go through (default
	// "tunl0", created by whoever loads the ipip module; while it is
	// missing IPIP routes stay pending).
	IPIPDevice string
	// Logger receives debug records (nil: discarded).
	Logger *slog.Logger
}

// Kernel programs a Table into the kernel: routes with protocol Protocol in
// the configured table, the VXLAN device, and for every VXLAN next hop a
// permanent neighbour (VTEP address → VTEP MAC) and FDB entry (VTEP MAC →
// node address) on that device, as Calico programs them. Apply reconciles
// against what the kernel has, not against memory: routes of protocol
// Protocol that are not desired are deleted, missing ones added, differing
// ones replaced; neighbours and FDB entries on the VXLAN device likewise.
// So a restarted agent (a new Kernel) changes nothing that is already right
// and removes what it no longer wants. A Kernel is not safe for concurrent
// use.
type Kernel struct {
	cfg KernelConfig
	h   *netlink.Handle
	log *slog.Logger
}

// NewKernel returns a kernel programmer. It touches nothing until Apply.
func NewKernel(cfg KernelConfig) (*Kernel, error) {
	h := cfg.Handle
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(); err != nil {
			return nil, fmt.Errorf("kernel routes: netlink: %w", err)
		}
	}
	if cfg.Table == 0 {
		cfg.Table = unix.RT_TABLE_MAIN
	}
	if cfg.IPIPDevice == "" {
		cfg.IPIPDevice = DefaultIPIPDevice
	}
	if v := cfg.VXLAN; v != nil {
		c := *v
		if c.Name == "" {
			c.Name = DefaultVXLANDevice
		}
		if c.VNI == 0 {
			c.VNI = DefaultVNI
		}
		if c.Port == 0 {
			c.Port = DefaultVXLANPort
		}
		if c.MTU == 0 {
			c.MTU = 1450
		}
		if !c.Local.Is4() {
			return nil, fmt.Errorf("kernel routes: vxlan: local address %v is not IPv4", c.Local)
		}
		cfg.VXLAN = &c
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Kernel{cfg: cfg, h: h, log: log}, nil
}

// kroute is a route as this programmer compares them.
type kroute struct {
	dst    netip.Prefix
	typ    int
	gw     netip.Addr
	link   int
	onlink bool
}

func (k *Kernel) netlinkRoute(r kroute) *netlink.Route {
	nr := &netlink.Route{
		Dst:      prefixNet(r.dst),
		Protocol: netlink.RouteProtocol(Protocol),
		Table:    k.cfg.Table,
		Type:     r.typ,
		Family:   family(r.dst.Addr()),
	}
	if r.typ == unix.RTN_UNICAST {
		nr.LinkIndex = r.link
		if r.gw.IsValid() {
			nr.Gw = r.gw.AsSlice()
		}
		if r.onlink {
			nr.Flags = int(netlink.FLAG_ONLINK)
		}
	}
	return nr
}

// Apply converges the kernel on desired.
func (k *Kernel) Apply(desired Table) (Stats, error) {
	var st Stats
	var errs []error

	vxlanIdx := 0
	if k.cfg.VXLAN != nil {
		idx, n, err := k.ensureVXLAN()
		if err != nil {
			errs = append(errs, err)
		} else {
			vxlanIdx = idx
			st.NextHopsAdded += n
		}
	}
	ipipIdx := 0
	if l, err := k.h.LinkByName(k.cfg.IPIPDevice); err == nil {
		ipipIdx = l.Attrs().Index
	}

	// Desired kernel state.
	want := map[netip.Prefix]kroute{}
	neighs := map[netip.Addr]MAC{}      // VTEP address → MAC
	fdb := map[MAC]netip.Addr{}         // VTEP MAC → node address
	resolved := map[netip.Addr]kroute{} // gateway → how it is reached
	for _, r := range desired.Sorted() {
		kr := kroute{dst: r.Dst, typ: unix.RTN_UNICAST}
		switch r.Kind {
		case LocalBlock:
			kr.typ = unix.RTN_BLACKHOLE
		case Direct:
			via, ok := resolved[r.Gateway]
			if !ok {
				via, ok = k.resolve(r.Gateway)
				if ok {
					resolved[r.Gateway] = via
				}
			}
			if !ok {
				st.Pending++
				continue
			}
			kr.gw, kr.link = via.gw, via.link
		case IPIP:
			if ipipIdx == 0 || !r.Gateway.Is4() {
				st.Pending++
				continue
			}
			kr.gw, kr.link, kr.onlink = r.Gateway, ipipIdx, true
		case VXLAN:
			if vxlanIdx == 0 || !r.VTEP.Is4() {
				st.Pending++
				continue
			}
			kr.gw, kr.link, kr.onlink = r.VTEP, vxlanIdx, true
			neighs[r.VTEP] = r.VTEPMAC
			fdb[r.VTEPMAC] = r.Gateway
		default:
			continue
		}
		want[kr.dst] = kr
	}

	// Neighbours and FDB entries first: routes through the VXLAN device
	// work from the moment they are installed.
	var staleNeigh, staleFDB []netlink.Neigh
	if vxlanIdx != 0 {
		var n int
		var err error
		staleNeigh, n, err = k.syncNeighbors(vxlanIdx, neighs)
		st.NextHopsAdded += n
		errs = append(errs, err)
		staleFDB, n, err = k.syncFDB(vxlanIdx, fdb)
		st.NextHopsAdded += n
		errs = append(errs, err)
	}

	// Routes.
	have, err := k.h.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{Table: k.cfg.Table, Protocol: netlink.RouteProtocol(Protocol)},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return st, errors.Join(append(errs, fmt.Errorf("list routes: %w", err))...)
	}
	seen := map[netip.Prefix]bool{}
	for i := range have {
		hr := &have[i]
		cur, ok := fromNetlink(hr)
		if !ok {
			continue
		}
		w, wanted := want[cur.dst]
		switch {
		case !wanted || seen[cur.dst]:
			if err := k.h.RouteDel(hr); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %s: %w", cur.dst, err))
				continue
			}
			st.Deleted++
		case w == cur:
			st.Unchanged++
		default:
			if err := k.h.RouteReplace(k.netlinkRoute(w)); err != nil {
				errs = append(errs, fmt.Errorf("replace route %s: %w", w.dst, err))
				continue
			}
			st.Changed++
		}
		seen[cur.dst] = true
	}
	for _, dst := range sortedKeys(want) {
		if seen[dst] {
			continue
		}
		if err := k.h.RouteReplace(k.netlinkRoute(want[dst])); err != nil {
			errs = append(errs, fmt.Errorf("add route %s: %w", dst, err))
			continue
		}
		st.Added++
	}

	// Stale neighbours and FDB entries last, once no route uses them.
	for _, n := range append(staleNeigh, staleFDB...) {
		if err := k.h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete neighbour %v %v: %w", n.IP, n.HardwareAddr, err))
			continue
		}
		st.NextHopsRemoved++
	}
	if st.Changes() > 0 {
		k.log.Debug("kernel routes applied", "added", st.Added, "changed", st.Changed, "deleted", st.Deleted,
			"pending", st.Pending, "neigh_added", st.NextHopsAdded, "neigh_removed", st.NextHopsRemoved)
	}
	return st, errors.Join(errs...)
}

// resolve returns how the kernel reaches gw: on-link (through its
// interface) or through a router (recursive next hop, as BIRD's "gateway
// recursive").
func (k *Kernel) resolve(gw netip.Addr) (kroute, bool) {
	rs, err := k.h.RouteGet(gw.AsSlice())
	if err != nil || len(rs) == 0 || rs[0].LinkIndex == 0 || rs[0].Type != unix.RTN_UNICAST {
		return kroute{}, false
	}
	via := kroute{gw: gw, link: rs[0].LinkIndex}
	if rs[0].Gw != nil {
		if a, ok := netip.AddrFromSlice(rs[0].Gw); ok {
			via.gw = a.Unmap()
		}
	}
	return via, true
}

// fromNetlink converts a listed route; false for routes of shapes this
// programmer never installs (multipath), which are then left alone.
func fromNetlink(r *netlink.Route) (kroute, bool) {
	if len(r.MultiPath) > 0 {
		return kroute{}, false
	}
	var dst netip.Prefix
	if r.Dst == nil {
		if r.Family == unix.AF_INET6 {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		} else {
			dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		}
	} else {
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			return kroute{}, false
		}
		ones, _ := r.Dst.Mask.Size()
		a = a.Unmap()
		dst = netip.PrefixFrom(a, ones)
	}
	kr := kroute{dst: dst, typ: r.Type}
	if r.Type == unix.RTN_UNICAST {
		kr.link = r.LinkIndex
		if a, ok := netip.AddrFromSlice(r.Gw); ok {
			kr.gw = a.Unmap()
		}
		kr.onlink = r.Flags&int(netlink.FLAG_ONLINK) != 0
	}
	return kr, true
}

// ensureVXLAN creates the VXLAN device or brings it in line with the
// configuration, and returns its index and the number of changes made.
func (k *Kernel) ensureVXLAN() (int, int, error) {
	c := k.cfg.VXLAN
	changes := 0
	l, err := k.h.LinkByName(c.Name)
	if err == nil {
		v, ok := l.(*netlink.Vxlan)
		if !ok || v.VxlanId != c.VNI || v.Port != c.Port || !ipEqual(c.Local, v.SrcAddr) ||
			v.VtepDevIndex != c.ParentIndex || v.Learning {
			k.log.Info("recreating vxlan device", "name", c.Name)
			if err := k.h.LinkDel(l); err != nil {
				return 0, changes, fmt.Errorf("vxlan %s: delete mismatched device: %w", c.Name, err)
			}
			changes++
			l = nil
		}
	} else {
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return 0, changes, fmt.Errorf("vxlan %s: %w", c.Name, err)
		}
		l = nil
	}
	if l == nil {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = c.Name, c.MTU
		la.HardwareAddr = net.HardwareAddr(c.MAC[:])
		v := &netlink.Vxlan{LinkAttrs: la, VxlanId: c.VNI, VtepDevIndex: c.ParentIndex,
			SrcAddr: c.Local.AsSlice(), Port: c.Port, Learning: false}
		if err := k.h.LinkAdd(v); err != nil {
			return 0, changes, fmt.Errorf("vxlan %s: create: %w", c.Name, err)
		}
		changes++
		if l, err = k.h.LinkByName(c.Name); err != nil {
			return 0, changes, fmt.Errorf("vxlan %s: %w", c.Name, err)
		}
	}
	a := l.Attrs()
	if a.MTU != c.MTU {
		if err := k.h.LinkSetMTU(l, c.MTU); err != nil {
			return 0, changes, fmt.Errorf("vxlan %s: set mtu %d: %w", c.Name, c.MTU, err)
		}
		changes++
	}
	if !slices.Equal(a.HardwareAddr, c.MAC[:]) {
		if err := k.h.LinkSetHardwareAddr(l, net.HardwareAddr(c.MAC[:])); err != nil {
			return 0, changes, fmt.Errorf("vxlan %s: set mac: %w", c.Name, err)
		}
		changes++
	}
	if c.Addr.IsValid() {
		addrs, err := k.h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return 0, changes, fmt.Errorf("vxlan %s: list addresses: %w", c.Name, err)
		}
		found := false
		for _, ad := range addrs {
			ones, _ := ad.Mask.Size()
			if ipEqual(c.Addr, ad.IP) && ones == 32 {
				found = true
				continue
			}
			if err := k.h.AddrDel(l, &ad); err != nil {
				return 0, changes, fmt.Errorf("vxlan %s: remove address %v: %w", c.Name, ad.IPNet, err)
			}
			changes++
		}
		if !found {
			if err := k.h.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(c.Addr, 32))}); err != nil {
				return 0, changes, fmt.Errorf("vxlan %s: add address %v: %w", c.Name, c.Addr, err)
			}
			changes++
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := k.h.LinkSetUp(l); err != nil {
			return 0, changes, fmt.Errorf("vxlan %s: set up: %w", c.Name, err)
		}
		changes++
	}
	return a.Index, changes, nil
}

// syncNeighbors writes the missing or wrong permanent neighbours on the
// VXLAN device and returns the stale ones (deleted after the routes).
func (k *Kernel) syncNeighbors(idx int, want map[netip.Addr]MAC) ([]netlink.Neigh, int, error) {
	have, err := k.h.NeighList(idx, netlink.FAMILY_V4)
	if err != nil {
		return nil, 0, fmt.Errorf("list neighbours: %w", err)
	}
	var stale []netlink.Neigh
	ok := map[netip.Addr]bool{}
	for _, n := range have {
		if n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		a, _ := netip.AddrFromSlice(n.IP)
		a = a.Unmap()
		mac, wanted := want[a]
		switch {
		case !wanted:
			stale = append(stale, n)
		case slices.Equal(n.HardwareAddr, mac[:]):
			ok[a] = true
		}
	}
	var errs []error
	written := 0
	for _, a := range sortedAddrs(want) {
		if ok[a] {
			continue
		}
		mac := want[a]
		n := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			Type: unix.RTN_UNICAST, IP: a.AsSlice(), HardwareAddr: net.HardwareAddr(mac[:])}
		if err := k.h.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s %s: %w", a, mac, err))
			continue
		}
		written++
	}
	return stale, written, errors.Join(errs...)
}

// syncFDB is syncNeighbors for the FDB entries (MAC → remote node).
func (k *Kernel) syncFDB(idx int, want map[MAC]netip.Addr) ([]netlink.Neigh, int, error) {
	have, err := k.h.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return nil, 0, fmt.Errorf("list fdb: %w", err)
	}
	var stale []netlink.Neigh
	ok := map[MAC]bool{}
	for _, n := range have {
		if n.IP == nil || len(n.HardwareAddr) != 6 {
			continue
		}
		mac := MAC(n.HardwareAddr)
		dst, wanted := want[mac]
		switch {
		case !wanted:
			stale = append(stale, n)
		case ipEqual(dst, n.IP):
			ok[mac] = true
		}
	}
	var errs []error
	written := 0
	macs := make([]MAC, 0, len(want))
	for m := range want {
		macs = append(macs, m)
	}
	slices.SortFunc(macs, func(a, b MAC) int { return slices.Compare(a[:], b[:]) })
	for _, mac := range macs {
		if ok[mac] {
			continue
		}
		n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: want[mac].AsSlice(), HardwareAddr: net.HardwareAddr(mac[:])}
		if err := k.h.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("fdb %s dst %s: %w", mac, want[mac], err))
			continue
		}
		written++
	}
	return stale, written, errors.Join(errs...)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func sortedKeys(m map[netip.Prefix]kroute) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

func sortedAddrs(m map[netip.Addr]MAC) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func ipEqual(a netip.Addr, ip net.IP) bool {
	b, ok := netip.AddrFromSlice(ip)
	return ok && a == b.Unmap()
}
