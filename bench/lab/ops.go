package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netns"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/agent"
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
		for _, pid := range append([]int{st.EtcdPID}, nodePIDs(st)...) {
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
	fmt.Fprintf(w, "etcd: %s (pid %d, in %s)\n\n", st.Etcd, st.EtcdPID, st.Router)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNETNS\tSUBNET\tADDRESS\tPID\tAGENT\tROUTES\tENDPOINTS")
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
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", n.Name, n.Netns, n.Subnet, n.Address, n.PID, detail,
			routes, eps)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tNETNS\tIP")
	for _, p := range st.Pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.Node, p.Netns, p.IP)
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
func inNetns(name string, fn func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer h.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter %s: %w", name, err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// CheckPort is the port of the TCP and UDP echo servers in the pods.
const CheckPort = 7777

// Result is one pair and protocol of the connectivity matrix.
type Result struct {
	From, To, Kind, Proto string
	OK                    bool
	Err                   string
	RTT                   time.Duration
}

// Check runs the connectivity matrix: every ordered pair of pods, with
// ICMP (ping in the source pod), TCP and UDP (echo servers in every pod,
// clients opened in the source pod). It prints a table and a summary, and
// fails if any pair fails.
func Check(ctx context.Context, name string, w io.Writer) ([]Result, error) {
	st, err := LoadState(name)
	if err != nil {
		return nil, err
	}
	if !st.Alive() || st.Status != "ready" {
		return nil, fmt.Errorf("lab %q is not running (status %s)", name, st.Status)
	}
	if len(st.Pods) < 2 {
		return nil, errors.New("fewer than two pods")
	}
	subnet := map[string]int{}
	for _, n := range st.Nodes {
		subnet[n.Name] = n.Subnet
	}
	// Echo servers.
	var lns []io.Closer
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for _, p := range st.Pods {
		var tl net.Listener
		var ul net.PacketConn
		err := inNetns(p.Netns, func() error {
			var err error
			if tl, err = net.Listen("tcp4", fmt.Sprintf(":%d", CheckPort)); err != nil {
				return err
			}
			ul, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", CheckPort))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("echo server in %s: %w", p.Name, err)
		}
		lns = append(lns, tl, ul)
		go serveTCP(tl)
		go serveUDP(ul)
	}
	var jobs []*Result
	podOf := map[string]Pod{}
	for _, a := range st.Pods {
		podOf[a.Name] = a
		for _, b := range st.Pods {
			if a.Name == b.Name {
				continue
			}
			kind := "other-node"
			switch {
			case a.Node == b.Node:
				kind = "same-node"
			case subnet[a.Node] != subnet[b.Node]:
				kind = "other-subnet"
			}
			for _, proto := range []string{"icmp", "tcp", "udp"} {
				jobs = append(jobs, &Result{From: a.Name, To: b.Name, Kind: kind, Proto: proto})
			}
		}
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func(j *Result) {
			defer wg.Done()
			defer func() { <-sem }()
			from, to := podOf[j.From], podOf[j.To]
			t0 := time.Now()
			var err error
			// A first packet may wait for ARP and route programming:
			// three tries.
			for try := 0; try < 3; try++ {
				if err = probe(ctx, j.Proto, from, to); err == nil {
					break
				}
			}
			j.RTT = time.Since(t0)
			j.OK = err == nil
			if err != nil {
				j.Err = err.Error()
			}
		}(j)
	}
	wg.Wait()

	// Table: one row per pair, a column per protocol.
	type key struct{ from, to string }
	rows := map[key]map[string]*Result{}
	var order []key
	for _, j := range jobs {
		k := key{j.From, j.To}
		if rows[k] == nil {
			rows[k] = map[string]*Result{}
			order = append(order, k)
		}
		rows[k][j.Proto] = j
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tIP\tPATH\tICMP\tTCP\tUDP")
	failed := 0
	var failures []string
	perKind := map[string][2]int{}
	for _, k := range order {
		r := rows[k]
		cell := func(p string) string {
			if r[p].OK {
				return "ok"
			}
			return "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.from, k.to, podOf[k.to].IP, r["icmp"].Kind, cell("icmp"),
			cell("tcp"), cell("udp"))
		for _, p := range []string{"icmp", "tcp", "udp"} {
			c := perKind[r[p].Kind]
			c[1]++
			if r[p].OK {
				c[0]++
			} else {
				failed++
				failures = append(failures, fmt.Sprintf("%s -> %s %s: %s", k.from, k.to, p, r[p].Err))
			}
			perKind[r[p].Kind] = c
		}
	}
	tw.Flush()
	if len(failures) > 0 {
		fmt.Fprintln(w, "\nFailures:")
		sort.Strings(failures)
		for i, f := range failures {
			if i == 20 {
				fmt.Fprintf(w, "  ... %d more\n", len(failures)-20)
				break
			}
			fmt.Fprintln(w, "  "+f)
		}
	}
	var kinds []string
	for _, k := range []string{"same-node", "other-node", "other-subnet"} {
		if c, ok := perKind[k]; ok {
			kinds = append(kinds, fmt.Sprintf("%s %d/%d", k, c[0], c[1]))
		}
	}
	res := make([]Result, len(jobs))
	for i, j := range jobs {
		res[i] = *j
	}
	fmt.Fprintf(w, "\nSummary: %d/%d checks passed (%d pairs × icmp,tcp,udp; %s)\n", len(jobs)-failed, len(jobs),
		len(order), strings.Join(kinds, ", "))
	if failed > 0 {
		return res, fmt.Errorf("%d of %d checks failed", failed, len(jobs))
	}
	return res, nil
}

func serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(c, io.LimitReader(c, 1024))
		}()
	}
}

func serveUDP(c net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = c.WriteTo(buf[:n], addr)
	}
}

func probe(ctx context.Context, proto string, from, to Pod) error {
	msg := fmt.Sprintf("tabby-lab %s->%s %d", from.Name, to.Name, time.Now().UnixNano())
	switch proto {
	case "icmp":
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", from.Netns, "ping", "-c", "1", "-W", "1", "-q",
			to.IP).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ping: %v: %s", err, lastLine(string(out)))
		}
		return nil
	case "tcp":
		var c net.Conn
		err := inNetns(from.Netns, func() error {
			var err error
			c, err = net.DialTimeout("tcp4", net.JoinHostPort(to.IP, fmt.Sprint(CheckPort)), 2*time.Second)
			return err
		})
		if err != nil {
			return err
		}
		defer c.Close()
		return echo(c, msg, true)
	case "udp":
		var c net.Conn
		err := inNetns(from.Netns, func() error {
			var err error
			c, err = net.Dial("udp4", net.JoinHostPort(to.IP, fmt.Sprint(CheckPort)))
			return err
		})
		if err != nil {
			return err
		}
		defer c.Close()
		return echo(c, msg, false)
	}
	return fmt.Errorf("unknown protocol %s", proto)
}

func echo(c net.Conn, msg string, closeWrite bool) error {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok && closeWrite {
		_ = tc.CloseWrite()
	}
	buf := make([]byte, len(msg)+16)
	got := 0
	for got < len(msg) {
		n, err := c.Read(buf[got:])
		got += n
		if err != nil {
			if got >= len(msg) {
				break
			}
			return err
		}
		if !closeWrite {
			break
		}
	}
	if string(buf[:got]) != msg {
		return fmt.Errorf("echo mismatch: %q", buf[:got])
	}
	return nil
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}
