package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/resources"
)

// birdBinary and birdcBinary are Debian bird2's daemon and client.
const (
	birdBinary  = "bird"
	birdcBinary = "birdc"
)

// LabelSubnet is the Node label the lab sets to the node's subnet number;
// the lab's BGPPeers select nodes by it.
const LabelSubnet = "lab.tabby.dev/subnet"

// BIRD is the router namespace's BGP daemon.
type BIRD struct {
	PID    int    `json:"pid"`
	Config string `json:"config"`
	Socket string `json:"socket"` // birdc -s
	Log    string `json:"log"`
}

// birdConfig renders the router's BIRD 2 configuration: one iBGP session
// (AS asn) per node from the gateway of its subnet, routes imported from
// the nodes and exported into the router's kernel table; nothing is
// advertised to the nodes (they already have a default route to the
// router). Graceful restart keeps a restarting node's routes.
func birdConfig(logPath string, routerID netip.Addr, asn resources.ASNumber, nodes []Node) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# tabby lab router: the subnets' BGP peer (written by tabby lab up)
log "%s" { info, remote, warning, error, auth, fatal, bug };
router id %s;
protocol device { scan time 10; }
protocol kernel {
	ipv4 { import none; export where source = RTS_BGP; };
	merge paths on;
}
template bgp node {
	local as %d;
	direct;
	graceful restart on;
	connect delay time 1;
	connect retry time 2;
	error wait time 1, 4;
	ipv4 { import all; export none; gateway direct; };
}
`, logPath, routerID, asn)
	for _, n := range nodes {
		addr := netip.MustParsePrefix(n.Address).Addr()
		fmt.Fprintf(&b, "protocol bgp %s from node { source address %s; neighbor %s as %d; }\n",
			birdName(n.Name), n.Gateway, addr, asn)
	}
	return b.String()
}

// birdName is a BIRD protocol name for a node (letters, digits, '_').
func birdName(node string) string {
	return "node_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, node)
}

// startBIRD writes the configuration and runs BIRD in the foreground in
// rt (a topology process: killed with the lab).
func startBIRD(ctx context.Context, tp *topo.Topology, rt *topo.Netns, dir string, nodes []Node) (*BIRD, error) {
	bird, err := exec.LookPath(birdBinary)
	if err != nil {
		return nil, fmt.Errorf("router BIRD: %w (install bird2)", err)
	}
	b := &BIRD{Config: filepath.Join(dir, "bird.conf"), Socket: filepath.Join(dir, "bird.ctl"),
		Log: filepath.Join(dir, "bird.log")}
	cfg := birdConfig(b.Log, subnetGW(1).Addr(), resources.DefaultASNumber, nodes)
	if err := os.WriteFile(b.Config, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "bird.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := rt.Command(context.Background(), bird, "-f", "-c", b.Config, "-s", b.Socket)
	cmd.Stdout, cmd.Stderr = out, out
	if err := tp.Start(cmd); err != nil {
		return nil, fmt.Errorf("start BIRD: %w", err)
	}
	b.PID = cmd.Process.Pid
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := b.Command(ctx, "show", "status"); err == nil {
			return b, nil
		}
		if zombie(b.PID) || time.Now().After(deadline) {
			return nil, fmt.Errorf("BIRD did not start; %s:\n%s", out.Name(), tail(out.Name(), 10))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Command runs birdc against the lab's BIRD and returns its output.
func (b *BIRD) Command(ctx context.Context, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, birdcBinary, append([]string{"-s", b.Socket}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sessions returns the number of BGP sessions BIRD has established and
// the number it has.
func (b *BIRD) Sessions(ctx context.Context) (established, total int, err error) {
	out, err := b.Command(ctx, "show", "protocols")
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || f[1] != "BGP" {
			continue
		}
		total++
		if strings.Contains(l, "Established") {
			established++
		}
	}
	return established, total, nil
}

// waitRouterRoutes waits until the router's kernel routes every pod
// address through a gateway (what BIRD exported).
func waitRouterRoutes(ctx context.Context, rt *topo.Netns, pods []Pod, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		var missing []string
		for _, p := range pods {
			a, err := netip.ParseAddr(p.IP)
			if err != nil {
				return err
			}
			rs, err := rt.Netlink().RouteGet(a.AsSlice())
			if err != nil || len(rs) == 0 || rs[0].Gw == nil {
				missing = append(missing, p.Name+" "+p.IP)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("router has no route to %s after %s", strings.Join(missing, ", "), within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitAgentRoutes waits until n's agent reports routes and none pending.
func waitAgentRoutes(ctx context.Context, n Node, deadline time.Time) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s, err := agentClient(n).Status(cctx)
		cancel()
		if err == nil && s.Routes.IPv4 > 0 && s.Routes.Pending == 0 && s.Routes.Error == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: routes not programmed (status %+v, %v)", n.Name, s.Routes, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitNodeRoutes waits until every kernel-dataplane node has a route (not
// the default route) to every pod on another node: the FIB the agents
// program from the datastore (VXLAN) or from BGP (none, IP-in-IP).
func waitNodeRoutes(ctx context.Context, nss map[string]*topo.Netns, nodes []Node, pods []Pod, within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, n := range nodes {
		if n.Dataplane != "kernel" {
			// The userspace FIB is not visible from outside: wait
			// until the agent has no route pending.
			if err := waitAgentRoutes(ctx, n, deadline); err != nil {
				return err
			}
			continue
		}
		for {
			var missing []string
			routes, err := nss[n.Name].Netlink().RouteList(nil, unix.AF_INET)
			if err != nil {
				return fmt.Errorf("%s: routes: %w", n.Name, err)
			}
			for _, p := range pods {
				if p.Node == n.Name {
					continue
				}
				ip := net.ParseIP(p.IP)
				found := false
				for _, r := range routes {
					if r.Dst != nil && r.Dst.Contains(ip) {
						if ones, _ := r.Dst.Mask.Size(); ones > 0 {
							found = true
						}
					}
				}
				if !found {
					missing = append(missing, p.Name+" "+p.IP)
				}
			}
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %s has no route to %s after %s", n.Name, strings.Join(missing, ", "), within)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}
