package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/internal/nsutil"
)

// Down stops the lab name (its supervisor tears everything down), then
// removes what a crashed lab left (topo.Cleanup) and the lab directory. It
// returns what it did, one line each.
func Down(name string) ([]string, error) {
	var did []string
	st, err := LoadState(name)
	if err == nil {
		if st.Alive() {
			_ = syscall.Kill(st.PID, syscall.SIGTERM)
			deadline := time.Now().Add(30 * time.Second)
			for st.Alive() && !zombie(st.PID) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if st.Alive() && !zombie(st.PID) {
				_ = syscall.Kill(st.PID, syscall.SIGKILL)
				time.Sleep(200 * time.Millisecond)
			}
			did = append(did, fmt.Sprintf("stopped supervisor %d (topology %s)", st.PID, st.Topology))
		}
		// Processes of a supervisor that died without cleaning up.
		pids := append([]int{st.EtcdPID}, nodePIDs(st)...)
		if st.BIRD != nil {
			pids = append(pids, st.BIRD.PID)
		}
		for _, pid := range pids {
			if pid > 0 && syscall.Kill(pid, 0) == nil && !zombie(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				did = append(did, fmt.Sprintf("killed leftover process %d", pid))
			}
		}
	}
	var cerr error
	if st != nil && st.Topology != "" {
		// topo.Cleanup leaves a topology whose owner is still a zombie
		// (not yet reaped by its new parent): clean this one directly.
		if ok, err := cleanTopology(st.Topology, st.PID); err != nil {
			cerr = err
		} else if ok {
			did = append(did, "removed leftover topology "+st.Topology)
		}
	}
	cleaned, err2 := topo.Cleanup()
	cerr = errors.Join(cerr, err2)
	for _, c := range cleaned {
		did = append(did, "removed leftover topology "+c)
	}
	if _, serr := os.Stat(Dir(name)); serr == nil {
		if rerr := os.RemoveAll(Dir(name)); rerr != nil {
			cerr = errors.Join(cerr, rerr)
		} else {
			did = append(did, "removed "+Dir(name))
		}
	}
	if _, serr := os.Stat(statePath(name)); err != nil && serr == nil && len(did) == 0 {
		return nil, err // a state file that cannot be read
	}
	return did, cerr
}

// cleanTopology removes the topology name recorded in topo's state dir
// when its owner (pid) is gone or a zombie.
func cleanTopology(name string, pid int) (bool, error) {
	path := filepath.Join(topo.StateDir, name+".json")
	b, err := os.ReadFile(path)
	if err != nil {
		return false, nil
	}
	if pid > 0 && syscall.Kill(pid, 0) == nil && !zombie(pid) {
		return false, fmt.Errorf("topology %s: owner %d still runs", name, pid)
	}
	var ts struct {
		Namespaces []string `json:"namespaces"`
		Processes  []int    `json:"processes"`
	}
	if err := json.Unmarshal(b, &ts); err != nil {
		return false, err
	}
	for _, p := range ts.Processes {
		_ = syscall.Kill(-p, syscall.SIGKILL)
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	var errs []error
	for _, ns := range ts.Namespaces {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
			continue
		}
		var out []byte
		var err error
		for i := 0; i < 20; i++ {
			if out, err = exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("ip netns delete %s: %v: %s", ns, err, strings.TrimSpace(string(out))))
		}
	}
	if len(errs) == 0 {
		_ = os.Remove(path)
	}
	return true, errors.Join(errs...)
}

func nodePIDs(st *State) []int {
	var out []int
	for _, n := range st.Nodes {
		out = append(out, n.PID)
	}
	return out
}

// PrintStatus writes the lab's nodes (agent readiness from /readyz on the
// agent's socket), pods and addresses. It returns an error unless the lab
// runs and every agent is ready.
func PrintStatus(ctx context.Context, name string, w io.Writer) error {
	st, err := LoadState(name)
	if err != nil {
		return err
	}
	alive := st.Alive()
	fmt.Fprintf(w, "Lab %s: %s, topology %s, supervisor pid %d (%s), up %s\n", st.Config.Name, st.Status, st.Topology,
		st.PID, map[bool]string{true: "running", false: "NOT RUNNING"}[alive], time.Since(st.Started).Round(time.Second))
	fmt.Fprintf(w, "Config: %d nodes, %d subnets, %d pods/node, dataplane %s, encap %s, pool %s\n", st.Config.Nodes,
		st.Config.Subnets, st.Config.PodsPerNode, st.Config.Dataplane, st.Config.Encap, st.Config.PoolCIDR)
	fmt.Fprintf(w, "etcd: %s (pid %d, in %s); from the host: TABBY_ETCD_ENDPOINTS=%s tabby get ...\n", st.Etcd,
		st.EtcdPID, st.Router, st.EtcdEndpoint())
	if st.BIRD != nil {
		est, total, err := st.BIRD.Sessions(ctx)
		if err != nil {
			fmt.Fprintf(w, "router BIRD (pid %d): %v\n", st.BIRD.PID, err)
		} else {
			fmt.Fprintf(w, "router BIRD (pid %d): %d/%d BGP sessions established (birdc -s %s show protocols)\n",
				st.BIRD.PID, est, total, st.BIRD.Socket)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNETNS\tSUBNET\tADDRESS\tDATAPLANE\tPID\tAGENT\tROUTES\tENDPOINTS")
	allReady := alive && st.Status == "ready"
	for _, n := range st.Nodes {
		ready, detail := readyz(ctx, n.Socket)
		if !ready {
			allReady = false
		}
		routes, eps := "-", "-"
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if s, err := agent.NewClient(n.Socket).Status(cctx); err == nil {
			routes = fmt.Sprintf("%d (pending %d, learned %d)", s.Routes.IPv4+s.Routes.IPv6, s.Routes.Pending, s.Routes.Learned)
			if s.Routes.Error != "" {
				routes += " error: " + s.Routes.Error
			}
			eps = fmt.Sprintf("%d local, %d total", s.Endpoints.Local, s.Endpoints.Total)
		}
		cancel()
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", n.Name, n.Netns, n.Subnet, n.Address, n.Dataplane,
			n.PID, detail, routes, eps)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tNETNS\tIP\tNAMESPACE\tLABELS")
	for _, p := range st.Pods {
		var ls []string
		for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
			ls = append(ls, k+"="+p.Labels[k])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Node, p.Netns, p.IP, p.Namespace, strings.Join(ls, ","))
	}
	tw.Flush()
	if !allReady {
		return errors.New("lab not ready")
	}
	return nil
}

// readyz asks the agent's /readyz on its endpoint API socket (the same
// handler as on its health listener, which is in the node namespace).
func readyz(ctx context.Context, sock string) (bool, string) {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://agent/readyz", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return false, "down"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK {
		return true, "ready"
	}
	return false, "not ready: " + strings.Join(strings.Fields(string(b)), " ")
}

// inNetns runs fn on a thread inside the named namespace; sockets fn opens
// stay in it.
func inNetns(name string, fn func() error) error { return nsutil.DoNamed(name, fn) }
