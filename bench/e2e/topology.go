package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/datapath/afxdp"
	"github.com/tabbynet/tabby/datapath/header"
)

// Interface names.
const (
	genIf    = "eth0"
	dutInIf  = "eth0"
	dutOutIf = "eth1"
	sinkIf   = "eth0"
	vxlanIf  = "vxlan.calico"
)

// linkMTU is the MTU of both links: a 1514-byte pod frame plus VXLAN fits,
// and native XDP on a veth needs the peer's MTU ≤ 3506.
const linkMTU = 1600

// Addresses of the topology (see the package documentation).
var (
	genIP   = netip.MustParseAddr("10.10.1.2")
	dutInIP = netip.MustParseAddr("10.10.1.1")
	dutOut  = netip.MustParseAddr("10.10.2.1")
	sinkIP  = netip.MustParseAddr("10.10.2.2")
	linkLen = 24

	// podPool is the IP pool all pods are in.
	podPool = netip.MustParsePrefix("10.244.0.0/16")
	// sinkPods are the dut's local pods, behind the sink (decap targets).
	sinkPods = netip.MustParsePrefix("10.244.1.0/24")
	// genPods are the dut's local pods behind gen (encap sources).
	genPods = netip.MustParsePrefix("10.244.2.0/24")
	// remotePods are the remote node's (the sink's) blocks: encap targets,
	// remoteBlockBits long each.
	remotePods      = netip.MustParsePrefix("10.244.64.0/20")
	remoteBlockBits = 26
	// remoteVTEPIP is the remote node's tunnel address (the first address
	// of its first block), the on-link gateway of Calico's VXLAN routes.
	remoteVTEPIP = netip.MustParseAddr("10.244.64.0")
	// genNodePods are the pods of the remote node gen plays in the decap
	// case (sources of the decapsulated traffic).
	genNodePods = netip.MustParsePrefix("10.244.128.0/20")

	// VTEP MACs: the dut's VXLAN device, the sink's (remote node for
	// encap) and gen's (remote node for decap).
	dutVTEPMAC  = header.MAC{0x66, 0x74, 0x62, 0, 0, 1}
	sinkVTEPMAC = header.MAC{0x66, 0x74, 0x62, 0, 0, 2}
	genVTEPMAC  = header.MAC{0x66, 0x74, 0x62, 0, 0, 3}
)

// excludedDst are ranges forward-case routes must not overlap: the
// topology's own addresses, and what no router forwards.
var excludedDst = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"),
}

// usableRoutes returns the prefixes of table that overlap none of
// excludedDst, at most limit of them (0: all).
func usableRoutes(table []netip.Prefix, limit int) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(table))
	for _, p := range table {
		if !p.Addr().Is4() {
			continue
		}
		ok := true
		for _, x := range excludedDst {
			if p.Overlaps(x) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, p)
			if limit > 0 && len(out) == limit {
				break
			}
		}
	}
	return out
}

// remoteBlocks returns the remote node's pod blocks.
func remoteBlocks() []netip.Prefix {
	var out []netip.Prefix
	base := remotePods.Addr().As4()
	n := 1 << (remoteBlockBits - remotePods.Bits())
	step := 1 << (32 - remoteBlockBits)
	for i := range n {
		v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
		v += uint32(i * step)
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		out = append(out, netip.PrefixFrom(a, remoteBlockBits))
	}
	return out
}

// lab is the built topology.
type lab struct {
	tp                 *topo.Topology
	gen, dut, sink     *topo.Netns
	genMAC, dutInMAC   header.MAC
	dutOutMAC, sinkMAC header.MAC
	// workerCPU is the CPU the afxdp DUT's worker is pinned to (-1: none).
	workerCPU int
	// pollMode is the afxdp DUT worker's poll mode.
	pollMode afxdp.PollMode
	nice     int
	ring     int
	batch    int
}

func toMAC(hw net.HardwareAddr) header.MAC {
	var m header.MAC
	copy(m[:], hw)
	return m
}

// buildLab creates the namespaces and links and the configuration every
// implementation shares: addresses, permanent neighbours, sysctls, no TX
// checksum offload on the veths.
func buildLab(tp *topo.Topology) (*lab, error) {
	l := &lab{tp: tp, workerCPU: -1}
	var err error
	if l.gen, err = tp.Namespace("gen"); err != nil {
		return nil, err
	}
	if l.dut, err = tp.Namespace("dut"); err != nil {
		return nil, err
	}
	if l.sink, err = tp.Namespace("sink"); err != nil {
		return nil, err
	}
	// rp_filter off before the links exist, so they inherit it.
	for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"} {
		if err := l.dut.Sysctl(k, "0"); err != nil {
			return nil, err
		}
	}
	if err := l.dut.Sysctl("net.ipv4.ip_forward", "0"); err != nil {
		return nil, err
	}
	if _, _, err := tp.Veth(l.gen, genIf, l.dut, dutInIf, linkMTU); err != nil {
		return nil, err
	}
	if _, _, err := tp.Veth(l.dut, dutOutIf, l.sink, sinkIf, linkMTU); err != nil {
		return nil, err
	}
	addrs := []struct {
		ns *topo.Netns
		If string
		a  netip.Addr
	}{{l.gen, genIf, genIP}, {l.dut, dutInIf, dutInIP}, {l.dut, dutOutIf, dutOut}, {l.sink, sinkIf, sinkIP}}
	for _, a := range addrs {
		if err := a.ns.AddAddr(a.If, netip.PrefixFrom(a.a, linkLen)); err != nil {
			return nil, err
		}
		if err := setTxChecksum(a.ns, a.If, false); err != nil {
			return nil, err
		}
	}
	for _, m := range []struct {
		ns  *topo.Netns
		If  string
		dst *header.MAC
	}{{l.gen, genIf, &l.genMAC}, {l.dut, dutInIf, &l.dutInMAC}, {l.dut, dutOutIf, &l.dutOutMAC}, {l.sink, sinkIf, &l.sinkMAC}} {
		hw, err := m.ns.MAC(m.If)
		if err != nil {
			return nil, err
		}
		*m.dst = toMAC(hw)
	}
	// Permanent neighbours: no ARP during a run.
	neigh := []struct {
		ns  *topo.Netns
		If  string
		ip  netip.Addr
		mac header.MAC
	}{
		{l.dut, dutInIf, genIP, l.genMAC}, {l.dut, dutOutIf, sinkIP, l.sinkMAC},
		{l.gen, genIf, dutInIP, l.dutInMAC}, {l.sink, sinkIf, dutOut, l.dutOutMAC},
	}
	for _, n := range neigh {
		if err := n.ns.AddNeigh(n.If, n.ip, n.mac[:]); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// setupKernelDataplane programs what the kernel implementation needs besides
// the BGP routes: pod routes, the VXLAN device with Calico's neighbour and
// FDB entries for the remote VTEP, and RPS on the ingress veth.
func (l *lab) setupKernelDataplane(rps bool) error {
	dut := l.dut
	nl := dut.Netlink()
	// Local pods behind the sink and behind gen.
	if err := dut.AddRoute(sinkPods, sinkIP, dutOutIf); err != nil {
		return err
	}
	if err := dut.AddRoute(genPods, genIP, dutInIf); err != nil {
		return err
	}
	// vxlan.calico: VNI 4096, port 4789, no learning, MTU = underlay − 50.
	la := netlink.NewLinkAttrs()
	la.Name = vxlanIf
	la.MTU = linkMTU - 50
	la.HardwareAddr = net.HardwareAddr(dutVTEPMAC[:])
	vx := &netlink.Vxlan{LinkAttrs: la, VxlanId: 4096, Port: 4789, Learning: false}
	if err := nl.LinkAdd(vx); err != nil {
		return fmt.Errorf("dut: add %s: %w", vxlanIf, err)
	}
	// (Netns.Sysctl cannot name an interface with a dot in it.)
	if err := dut.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/"+vxlanIf+"/rp_filter", []byte("0"), 0o644)
	}); err != nil {
		return fmt.Errorf("dut: rp_filter of %s: %w", vxlanIf, err)
	}
	if err := dut.SetUp(vxlanIf); err != nil {
		return err
	}
	link, err := dut.Link(vxlanIf)
	if err != nil {
		return err
	}
	idx := link.Attrs().Index
	// Calico: an address of the local block on the VXLAN device, the
	// remote VTEP's address as a permanent neighbour, its MAC in the FDB
	// pointing at the remote node, and one on-link route per remote block.
	if err := dut.AddAddr(vxlanIf, netip.PrefixFrom(netip.MustParseAddr("10.244.1.0"), 32)); err != nil {
		return err
	}
	if err := nl.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: remoteVTEPIP.AsSlice(), HardwareAddr: net.HardwareAddr(sinkVTEPMAC[:])}); err != nil {
		return fmt.Errorf("dut: vtep neighbour: %w", err)
	}
	if err := nl.NeighAppend(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: sinkIP.AsSlice(), HardwareAddr: net.HardwareAddr(sinkVTEPMAC[:])}); err != nil {
		return fmt.Errorf("dut: vtep fdb entry: %w", err)
	}
	for _, b := range remoteBlocks() {
		r := &netlink.Route{LinkIndex: idx, Dst: prefixNet(b), Gw: remoteVTEPIP.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}
		if err := nl.RouteAdd(r); err != nil {
			return fmt.Errorf("dut: route %v via %s: %w", b, vxlanIf, err)
		}
	}
	if rps && runtime.NumCPU() > 1 {
		mask := otherCPUsMask()
		path := "/sys/class/net/" + dutInIf + "/queues/rx-0/rps_cpus"
		// /sys shows the namespace it was mounted in: ip netns exec
		// remounts it for the dut.
		if _, err := dut.Run("sh", "-c", "echo "+mask+" > "+path); err != nil {
			return fmt.Errorf("dut: rps: %w", err)
		}
	}
	return nil
}

// trafficCPU is the CPU the traffic thread is pinned to.
const trafficCPU = 0

// dutWorkerCPU is the CPU the afxdp DUT's worker is pinned to: the one after
// the traffic thread's (-1, no pinning, on a single-CPU machine).
func dutWorkerCPU() int {
	if runtime.NumCPU() < 2 {
		return -1
	}
	return (trafficCPU + 1) % runtime.NumCPU()
}

// otherCPUsMask returns the hex CPU mask of every CPU but trafficCPU.
func otherCPUsMask() string {
	n := runtime.NumCPU()
	var words []uint32
	for c := 0; c < n; c++ {
		if c == trafficCPU {
			continue
		}
		for len(words) <= c/32 {
			words = append(words, 0)
		}
		words[c/32] |= 1 << (c % 32)
	}
	var parts []string
	for i := len(words) - 1; i >= 0; i-- {
		parts = append(parts, fmt.Sprintf("%08x", words[i]))
	}
	s := strings.Join(parts, ",")
	return strings.TrimLeft(s, "0")
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// linkDrops returns the RX and TX drop counters of a link.
func linkDrops(ns *topo.Netns, ifname string) (rx, tx uint64) {
	l, err := ns.Link(ifname)
	if err != nil || l.Attrs().Statistics == nil {
		return 0, 0
	}
	s := l.Attrs().Statistics
	return s.RxDropped, s.TxDropped
}

// vethDrops are the drop counters of the veths on the path.
type vethDrops struct {
	genTx, dutInRx, dutOutTx, sinkRx uint64
}

func (l *lab) vethDrops() vethDrops {
	var d vethDrops
	_, d.genTx = linkDrops(l.gen, genIf)
	d.dutInRx, _ = linkDrops(l.dut, dutInIf)
	_, d.dutOutTx = linkDrops(l.dut, dutOutIf)
	d.sinkRx, _ = linkDrops(l.sink, sinkIf)
	return d
}

func (d vethDrops) sub(o vethDrops) vethDrops {
	return vethDrops{d.genTx - o.genTx, d.dutInRx - o.dutInRx, d.dutOutTx - o.dutOutTx, d.sinkRx - o.sinkRx}
}

func (d vethDrops) total() uint64 { return d.genTx + d.dutInRx + d.dutOutTx + d.sinkRx }

func (d vethDrops) String() string {
	return fmt.Sprintf("veth drops: gen tx %d, dut %s rx %d, dut %s tx %d, sink rx %d",
		d.genTx, dutInIf, d.dutInRx, dutOutIf, d.dutOutTx, d.sinkRx)
}

// softnetDrops sums the backlog drops of every CPU (/proc/net/softnet_stat,
// second column; machine-wide).
func softnetDrops() uint64 {
	b, err := readFile("/proc/net/softnet_stat")
	if err != nil {
		return 0
	}
	var total uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 16, 64)
		if err == nil {
			total += v
		}
	}
	return total
}
