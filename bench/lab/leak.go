package lab

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/cni"
	"github.com/tabbynet/tabby/control/resources"
)

// snapshot is the state a pod's add and delete must leave as it was: the
// datastore's IPAM handles, allocated addresses and workload endpoints;
// per node the pod veths, the routes through them, the nftables ruleset
// (kernel dataplane) and the agent's view of its endpoints and blocks.
type snapshot struct {
	handles []string
	inUse   int
	weps    []string
	nodes   map[string]*nodeSnapshot
}

type nodeSnapshot struct {
	veths  []string
	routes []string
	nft    string
	local  int
	total  int
	inUse  int
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

func takeSnapshot(ctx context.Context, st *State, store *agent.Store) (*snapshot, error) {
	s := &snapshot{nodes: map[string]*nodeSnapshot{}}
	hs, err := store.List(ctx, resources.KindIPAMHandle)
	if err != nil {
		return nil, fmt.Errorf("list IPAM handles: %w", err)
	}
	for _, h := range hs {
		s.handles = append(s.handles, h.Meta().Name)
	}
	bs, err := store.List(ctx, resources.KindIPAMBlock)
	if err != nil {
		return nil, fmt.Errorf("list IPAM blocks: %w", err)
	}
	for _, o := range bs {
		if b, ok := agent.Unwrap(o).(*resources.IPAMBlock); ok {
			s.inUse += len(b.Spec.Allocations) - len(b.Spec.Unallocated)
		}
	}
	ws, err := store.List(ctx, agent.KindWorkloadEndpoint)
	if err != nil {
		return nil, fmt.Errorf("list workload endpoints: %w", err)
	}
	for _, o := range ws {
		s.weps = append(s.weps, o.Meta().Namespace+"/"+o.Meta().Name)
	}
	sort.Strings(s.handles)
	sort.Strings(s.weps)
	for _, n := range st.Nodes {
		ns, err := snapshotNode(ctx, n)
		if err != nil {
			return nil, err
		}
		s.nodes[n.Name] = ns
	}
	return s, nil
}

func snapshotNode(ctx context.Context, n Node) (*nodeSnapshot, error) {
	ns := &nodeSnapshot{}
	h, err := netns.GetFromName(n.Netns)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", n.Netns, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	links, err := nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("%s: links: %w", n.Name, err)
	}
	vethIdx := map[int]string{}
	for _, l := range links {
		if name := l.Attrs().Name; strings.HasPrefix(name, cni.HostVethPrefix) {
			ns.veths = append(ns.veths, name)
			vethIdx[l.Attrs().Index] = name
		}
	}
	routes, err := nl.RouteList(nil, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("%s: routes: %w", n.Name, err)
	}
	for _, r := range routes {
		if name, ok := vethIdx[r.LinkIndex]; ok && r.Dst != nil {
			ns.routes = append(ns.routes, r.Dst.String()+" dev "+name)
		}
	}
	sort.Strings(ns.veths)
	sort.Strings(ns.routes)
	if n.Dataplane == "kernel" {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.Netns, "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%s: nft list ruleset: %v: %s", n.Name, err, lastLine(string(out)))
		}
		ns.nft = counterRE.ReplaceAllString(string(out), "counter")
	}
	s, err := agentClient(n).Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", n.Name, err)
	}
	ns.local, ns.total = s.Endpoints.Local, s.Endpoints.Total
	for _, b := range s.Blocks {
		ns.inUse += b.InUse
	}
	return ns, nil
}

// leak is one kind of state compared before and after.
type leak struct {
	Check  string // e.g. "leak: IPAM"
	Detail string // what differs, or what was compared
	OK     bool
}

// compareSnapshots reports, per kind, what after has that base has not
// (or lacks).
func compareSnapshots(base, after *snapshot) []leak {
	var out []leak
	diff := func(a, b []string) (added, removed []string) {
		for _, x := range b {
			if !slices.Contains(a, x) {
				added = append(added, x)
			}
		}
		for _, x := range a {
			if !slices.Contains(b, x) {
				removed = append(removed, x)
			}
		}
		return
	}
	add := func(check string, ok bool, okDetail, badDetail string) {
		d := okDetail
		if !ok {
			d = badDetail
		}
		out = append(out, leak{Check: check, OK: ok, Detail: d})
	}
	ha, hr := diff(base.handles, after.handles)
	add("leak: IPAM", len(ha) == 0 && len(hr) == 0 && base.inUse == after.inUse,
		fmt.Sprintf("%d handles, %d addresses in use, as before", len(after.handles), after.inUse),
		fmt.Sprintf("handles added %v, removed %v; addresses in use %d before, %d after", ha, hr, base.inUse,
			after.inUse))
	wa, wr := diff(base.weps, after.weps)
	add("leak: workload endpoints", len(wa) == 0 && len(wr) == 0,
		fmt.Sprintf("%d in the datastore, as before", len(after.weps)),
		fmt.Sprintf("added %v, removed %v", wa, wr))
	var veth, route, nft, agentView []string
	names := slices.Sorted(maps.Keys(after.nodes))
	nveth, nroute := 0, 0
	for _, n := range names {
		b, a := base.nodes[n], after.nodes[n]
		if b == nil {
			continue
		}
		nveth += len(a.veths)
		nroute += len(a.routes)
		if x, y := diff(b.veths, a.veths); len(x)+len(y) > 0 {
			veth = append(veth, fmt.Sprintf("%s: added %v, removed %v", n, x, y))
		}
		if x, y := diff(b.routes, a.routes); len(x)+len(y) > 0 {
			route = append(route, fmt.Sprintf("%s: added %v, removed %v", n, x, y))
		}
		if b.nft != a.nft {
			nft = append(nft, fmt.Sprintf("%s: ruleset differs:\n%s", n, lineDiff(b.nft, a.nft)))
		}
		if b.local != a.local || b.total != a.total || b.inUse != a.inUse {
			agentView = append(agentView, fmt.Sprintf("%s: endpoints local/total %d/%d -> %d/%d, block addresses "+
				"in use %d -> %d", n, b.local, b.total, a.local, a.total, b.inUse, a.inUse))
		}
	}
	add("leak: veths", len(veth) == 0, fmt.Sprintf("%d pod veths on %d nodes, as before", nveth, len(names)),
		strings.Join(veth, "; "))
	add("leak: routes", len(route) == 0, fmt.Sprintf("%d pod routes, as before", nroute), strings.Join(route, "; "))
	add("leak: nftables", len(nft) == 0, "rulesets as before (kernel nodes)", strings.Join(nft, "; "))
	add("leak: agent endpoints", len(agentView) == 0, "every agent's endpoints and block usage as before",
		strings.Join(agentView, "; "))
	return out
}

// lineDiff lists the lines only in a (-) and only in b (+), at most 10.
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "- "+strings.TrimSpace(l))
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "+ "+strings.TrimSpace(l))
		}
	}
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("... %d more", len(out)-10))
	}
	return strings.Join(out, "\n")
}

// conntrackLeak is the kernel's connection tracking state left for
// addresses of deleted pods.
type conntrackLeak struct {
	// Expiring entries time out by the kernel's own short timeouts (UDP,
	// ICMP, closing TCP); Stale ones would outlive them (established TCP,
	// timeouts over two minutes): those are leaks.
	Expiring int
	Stale    []string
}

// conntrackFor lists the conntrack entries of the kernel-dataplane nodes
// that involve any of addrs.
func conntrackFor(nodes []Node, addrs map[netip.Addr]bool) (conntrackLeak, error) {
	var res conntrackLeak
	for _, n := range nodes {
		if n.Dataplane != "kernel" {
			continue
		}
		h, err := netns.GetFromName(n.Netns)
		if err != nil {
			return res, err
		}
		nl, err := netlink.NewHandleAt(h)
		h.Close()
		if err != nil {
			return res, err
		}
		flows, err := nl.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		nl.Close()
		if err != nil {
			return res, fmt.Errorf("%s: conntrack: %w", n.Name, err)
		}
		for _, f := range flows {
			hit := false
			for _, ip := range []netip.Addr{addrOf(f.Forward.SrcIP), addrOf(f.Forward.DstIP), addrOf(f.Reverse.SrcIP),
				addrOf(f.Reverse.DstIP)} {
				hit = hit || addrs[ip]
			}
			if !hit {
				continue
			}
			established := false
			if tp, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP); ok && tp.State == 3 { // TCP_CONNTRACK_ESTABLISHED
				established = true
			}
			if established || f.TimeOut > 120 {
				res.Stale = append(res.Stale, fmt.Sprintf("%s: %s", n.Name, strings.Join(strings.Fields(f.String()), " ")))
			} else {
				res.Expiring++
			}
		}
	}
	return res, nil
}

func addrOf(ip []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
