package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/internal/ethtool"
)

// The pod's link-local gateways, answered by the host veth (proxy ARP for
// IPv4, an fe80::1 address for IPv6).
var (
	gateway4 = netip.MustParseAddr("169.254.1.1")
	gateway6 = netip.MustParseAddr("fe80::1")
)

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// createVeth creates the pair in the container's namespace and moves the
// host side to this process's namespace. A stale host veth of the same
// name (an earlier ADD of the container that was not deleted) is removed
// first.
func createVeth(netns ns.NetNS, contName, hostName string, mtu int) (hostIf, contIf net.Interface, err error) {
	if err := deleteLink(hostName); err != nil {
		return hostIf, contIf, internal("remove stale host veth %s: %v", hostName, err)
	}
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return hostIf, contIf, internal("open host namespace: %v", err)
	}
	defer hostNS.Close()
	err = netns.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName(contName); err == nil {
			return types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("CNI_IFNAME %s already exists in the container: another plugin created it, or the pod was added twice without DEL",
					contName), "")
		}
		var err error
		hostIf, contIf, err = ip.SetupVethWithName(contName, hostName, mtu, "", hostNS)
		return err
	})
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return hostIf, contIf, te
		}
		deleteLink(hostName)
		return hostIf, contIf, internal("create veth %s/%s: %v", hostName, contName, err)
	}
	return hostIf, contIf, nil
}

// deleteLink deletes a link of this namespace; a missing one is not an
// error.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
		return err
	}
	return nil
}

func writeSysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

func readSysctl(key string) string {
	b, _ := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	return strings.TrimSpace(string(b))
}

// configure sets up the host side (proxy ARP, forwarding, a host route per
// address) and the container side (addresses, the gateway's link route,
// default routes; TX checksum offload off when noTxCsum: the afxdp
// dataplane needs complete checksums, see agent.EndpointResponse).
func configure(netns ns.NetNS, contName, hostName string, contMAC net.HardwareAddr, addrs []netip.Prefix, noTxCsum bool) error {
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return internal("host veth %s: %v", hostName, err)
	}
	has4, has6 := false, false
	for _, a := range addrs {
		if a.Addr().Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	// A host name with dots would need escaping in sysctl paths; ours has none.
	if has4 {
		for _, kv := range [][2]string{{"net.ipv4.conf." + hostName + ".proxy_arp", "1"},
			{"net.ipv4.neigh." + hostName + ".proxy_delay", "0"},
			{"net.ipv4.conf." + hostName + ".forwarding", "1"}} {
			if err := writeSysctl(kv[0], kv[1]); err != nil {
				return internal("host veth %s: %v", hostName, err)
			}
		}
	}
	if has6 {
		if err := writeSysctl("net.ipv6.conf."+hostName+".forwarding", "1"); err != nil {
			return internal("host veth %s: %v", hostName, err)
		}
		gw := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(gateway6, 64)), Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrReplace(host, gw); err != nil {
			return internal("host veth %s: add %s: %v", hostName, gateway6, err)
		}
	}
	for _, a := range addrs {
		// A permanent neighbour entry for the pod, as Calico installs:
		// the node never has to resolve it, so the first packet to a new
		// pod is not held by ARP/ND (measured: 1-4 of 100 new pods got
		// their first packet ~1 s late, when the first solicitation on a
		// fresh veth went missing and only the retry resolved it).
		n := &netlink.Neigh{LinkIndex: host.Attrs().Index, IP: a.Addr().AsSlice(), HardwareAddr: contMAC,
			State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}
		if a.Addr().Is6() {
			n.Family = netlink.FAMILY_V6
		}
		if err := netlink.NeighSet(n); err != nil {
			return internal("host neighbour %s lladdr %s dev %s: %v", a.Addr(), contMAC, hostName, err)
		}
		r := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: prefixNet(a), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return internal("host route %s dev %s: %v", a, hostName, err)
		}
	}
	return netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(contName)
		if err != nil {
			return internal("container interface %s: %v", contName, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return internal("container interface %s: set up: %v", contName, err)
		}
		if noTxCsum {
			if err := ethtool.SetTxChecksum(contName, false); err != nil {
				return internal("container interface %s: turn TX checksum offload off (the afxdp dataplane needs complete checksums): %v",
					contName, err)
			}
		}
		idx := l.Attrs().Index
		for _, a := range addrs {
			if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(a), Flags: nodad(a)}); err != nil {
				return internal("container interface %s: add %s: %v", contName, a, err)
			}
		}
		if has4 {
			gw := &netlink.Route{LinkIndex: idx, Dst: prefixNet(netip.PrefixFrom(gateway4, 32)), Scope: netlink.SCOPE_LINK}
			if err := netlink.RouteReplace(gw); err != nil {
				return internal("container route %s dev %s: %v", gateway4, contName, err)
			}
			def := &netlink.Route{LinkIndex: idx, Dst: prefixNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: gateway4.AsSlice()}
			if err := netlink.RouteReplace(def); err != nil {
				return internal("container default route via %s: %v", gateway4, err)
			}
		}
		if has6 {
			def := &netlink.Route{LinkIndex: idx, Dst: prefixNet(netip.MustParsePrefix("::/0")), Gw: gateway6.AsSlice()}
			if err := netlink.RouteReplace(def); err != nil {
				return internal("container default route via %s: %v", gateway6, err)
			}
		}
		return nil
	})
}

func nodad(a netip.Prefix) int {
	if a.Addr().Is6() {
		return unix.IFA_F_NODAD
	}
	return 0
}

// checkSetup verifies what configure did. Errors are CNI error 999 naming
// what is wrong.
func checkSetup(netns ns.NetNS, contName, hostName string, mtu int, addrs []netip.Prefix) error {
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return internal("host veth %s is missing: %v", hostName, err)
	}
	if _, ok := host.(*netlink.Veth); !ok {
		return internal("host interface %s is a %s, not a veth", hostName, host.Type())
	}
	if host.Attrs().OperState != netlink.OperUp && host.Attrs().Flags&net.FlagUp == 0 {
		return internal("host veth %s is down", hostName)
	}
	hasV4 := false
	for _, a := range addrs {
		if a.Addr().Is4() {
			hasV4 = true
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Dst: prefixNet(a)}, netlink.RT_FILTER_DST)
		if err != nil {
			return internal("list host routes: %v", err)
		}
		found := false
		for _, r := range routes {
			if r.LinkIndex == host.Attrs().Index {
				found = true
			}
		}
		if !found {
			return internal("host route %s dev %s is missing", a, hostName)
		}
		if !hasPermanentNeigh(host.Attrs().Index, a.Addr()) {
			return internal("host neighbour entry for %s on %s is missing", a.Addr(), hostName)
		}
	}
	if hasV4 && readSysctl("net.ipv4.conf."+hostName+".proxy_arp") != "1" {
		return internal("proxy ARP is off on host veth %s: the pod cannot resolve its gateway %s", hostName, gateway4)
	}
	hostIdx := host.Attrs().Index
	return netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(contName)
		if err != nil {
			return internal("container interface %s is missing: %v", contName, err)
		}
		if _, ok := l.(*netlink.Veth); !ok {
			return internal("container interface %s is a %s, not a veth", contName, l.Type())
		}
		if l.Attrs().ParentIndex != hostIdx {
			return internal("container interface %s is not the peer of host veth %s", contName, hostName)
		}
		if l.Attrs().MTU != mtu {
			return internal("container interface %s has MTU %d, the configuration says %d", contName, l.Attrs().MTU, mtu)
		}
		have, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return internal("container interface %s: list addresses: %v", contName, err)
		}
		for _, a := range addrs {
			found := false
			for _, h := range have {
				if h.IPNet.String() == prefixNet(a).String() {
					found = true
				}
			}
			if !found {
				return internal("container interface %s lacks address %s", contName, a)
			}
		}
		var want []*types.Route
		for _, a := range addrs {
			if a.Addr().Is4() {
				want = append(want, &types.Route{Dst: *prefixNet(netip.MustParsePrefix("0.0.0.0/0")), GW: gateway4.AsSlice()})
			} else {
				want = append(want, &types.Route{Dst: *prefixNet(netip.MustParsePrefix("::/0")), GW: gateway6.AsSlice()})
			}
		}
		if err := ip.ValidateExpectedRoute(want); err != nil {
			return internal("container routes: %v", err)
		}
		return nil
	})
}

// hasPermanentNeigh reports whether the host has a permanent neighbour
// entry for addr on the link.
func hasPermanentNeigh(link int, addr netip.Addr) bool {
	fam := netlink.FAMILY_V4
	if addr.Is6() {
		fam = netlink.FAMILY_V6
	}
	ns, err := netlink.NeighList(link, fam)
	if err != nil {
		return false
	}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == addr && n.State&netlink.NUD_PERMANENT != 0 {
			return true
		}
	}
	return false
}
