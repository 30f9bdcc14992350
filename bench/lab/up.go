package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore/etcd"
)

// EtcdPort is where the lab's etcd relay listens in the router namespace.
const EtcdPort = 2379

// Up starts a lab: it runs `<Self> lab supervise` detached (its output in
// the lab directory's lab.log) and waits until the supervisor reports the
// lab ready or failed, or exits.
// prepare, if not nil, runs once the lab directory exists (before the
// supervisor starts) and may set cfg.CNIBin.
func Up(ctx context.Context, cfg Config, timeout time.Duration, prepare func(cfg *Config, dir string) error) (*State, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Preflight(); err != nil {
		return nil, err
	}
	if st, err := LoadState(cfg.Name); err == nil && st.Alive() {
		return nil, fmt.Errorf("lab %q is up (supervisor pid %d); run tabby lab down first", cfg.Name, st.PID)
	}
	// Leftovers of a crashed lab of this name, and of crashed topologies.
	_ = os.RemoveAll(Dir(cfg.Name))
	_, _ = topo.Cleanup()
	if err := os.MkdirAll(Dir(cfg.Name), 0o755); err != nil {
		return nil, err
	}
	if prepare != nil {
		if err := prepare(&cfg, Dir(cfg.Name)); err != nil {
			_ = os.RemoveAll(Dir(cfg.Name))
			return nil, err
		}
	}
	if cfg.CNIBin == "" {
		return nil, errors.New("no CNI plugin directory")
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(Dir(cfg.Name), "lab.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(cfg.Self, "lab", "supervise", string(cfgJSON))
	cmd.Env = append(os.Environ(), cfg.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start supervisor: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			if st, e := LoadState(cfg.Name); e == nil && st.Error != "" {
				return st, fmt.Errorf("lab failed: %s (log: %s)", st.Error, logf.Name())
			}
			return nil, fmt.Errorf("supervisor exited: %v; log %s:\n%s", err, logf.Name(), tail(logf.Name(), 20))
		case <-deadline.C:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return nil, fmt.Errorf("lab not ready after %s; log %s:\n%s", timeout, logf.Name(), tail(logf.Name(), 20))
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return nil, ctx.Err()
		case <-tick.C:
			st, err := LoadState(cfg.Name)
			if err != nil {
				continue
			}
			switch st.Status {
			case "ready":
				_ = cmd.Process.Release()
				return st, nil
			case "failed":
				<-exited
				return st, fmt.Errorf("lab failed: %s (log: %s)", st.Error, logf.Name())
			}
		}
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Supervise builds the lab described by cfg (as JSON), reports it ready in
// the state file, serves the control socket and keeps the lab until ctx
// ends; then it tears everything down.
func Supervise(ctx context.Context, cfgJSON string, log io.Writer) error {
	var cfg Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	st := &State{Config: cfg, Status: "starting", PID: os.Getpid(), Started: time.Now()}
	if err := os.MkdirAll(Dir(cfg.Name), 0o755); err != nil {
		return err
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(log, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	tp, err := topo.New("tlab")
	if err != nil {
		return err
	}
	st.Topology = tp.Name
	_ = st.save()
	sv := &supervisor{tp: tp, st: st, logf: logf, nss: map[string]*topo.Netns{}}
	defer func() {
		logf("tearing down %s", tp.Name)
		if err := tp.Close(); err != nil {
			logf("teardown: %v", err)
		}
		if st.Status != "failed" {
			_ = os.Remove(statePath(cfg.Name))
		}
	}()
	if err := sv.build(ctx); err != nil {
		sv.mu.Lock()
		st.Status, st.Error = "failed", err.Error()
		_ = st.save()
		sv.mu.Unlock()
		logf("failed: %v", err)
		return err
	}
	stopControl, err := sv.serveControl(ctx)
	if err != nil {
		st.Status, st.Error = "failed", err.Error()
		_ = st.save()
		return err
	}
	defer stopControl()
	sv.mu.Lock()
	st.Status = "ready"
	err = st.save()
	sv.mu.Unlock()
	if err != nil {
		return err
	}
	logf("lab %s ready: %d nodes, %d pods", cfg.Name, len(st.Nodes), len(st.Pods))
	<-ctx.Done()
	logf("stopping")
	stopControl()
	// Stop the agents gently first (SIGTERM), then topo kills what is left.
	sv.mu.Lock()
	nodes := append([]Node(nil), st.Nodes...)
	sv.mu.Unlock()
	for _, n := range nodes {
		_ = syscall.Kill(n.PID, syscall.SIGTERM)
	}
	for _, n := range nodes {
		for i := 0; i < 50 && syscall.Kill(n.PID, 0) == nil && !zombie(n.PID); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// supervisor owns a lab: its topology and processes. mu guards st (the
// control socket's handlers change node PIDs).
type supervisor struct {
	tp   *topo.Topology
	logf func(string, ...any)
	nss  map[string]*topo.Netns
	rt   *topo.Netns

	mu sync.Mutex
	st *State
	// restarting serialises agent restarts.
	restarting sync.Mutex
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}

func subnetGW(s int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("192.168.%d.1/24", 100+s))
}
func nodeAddr(s, i int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("192.168.%d.%d/24", 100+s, 10+i))
}

func (sv *supervisor) save() error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.st.save()
}

func (sv *supervisor) build(ctx context.Context) error {
	tp, st, logf := sv.tp, sv.st, sv.logf
	cfg := st.Config
	dir := Dir(cfg.Name)
	rt, err := tp.Namespace("rt")
	if err != nil {
		return err
	}
	sv.rt = rt
	st.Router = rt.Name
	if err := rt.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	for s := 1; s <= cfg.Subnets; s++ {
		br := fmt.Sprintf("br%d", s)
		la := netlink.NewLinkAttrs()
		la.Name = br
		if err := rt.Netlink().LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
			return fmt.Errorf("router: bridge %s: %w", br, err)
		}
		if err := rt.SetUp(br); err != nil {
			return err
		}
		if err := rt.AddAddr(br, subnetGW(s)); err != nil {
			return err
		}
	}

	// etcd in the router namespace, reachable at every gateway address
	// and on a unix socket in the lab directory.
	etcdDir := filepath.Join(dir, "etcd")
	ecmd := rt.Command(context.Background(), cfg.Self, "lab", "etcd", "--dir", etcdDir,
		"--listen", fmt.Sprintf("0.0.0.0:%d", EtcdPort))
	ecmd.Env = append(os.Environ(), cfg.Env...)
	elog, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return err
	}
	defer elog.Close()
	ecmd.Stdout, ecmd.Stderr = elog, elog
	if err := tp.Start(ecmd); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	st.EtcdPID = ecmd.Process.Pid
	st.Etcd = fmt.Sprintf("http://%s:%d", subnetGW(1).Addr(), EtcdPort)
	st.EtcdSocket = filepath.Join(etcdDir, "etcd.sock")
	_ = sv.save()
	if err := waitFile(ctx, filepath.Join(etcdDir, "ready"), 60*time.Second, ecmd); err != nil {
		return fmt.Errorf("etcd: %w; log:\n%s", err, tail(elog.Name(), 10))
	}
	logf("etcd up in %s", rt.Name)
	store, closeStore, err := OpenStore(st)
	if err != nil {
		return err
	}
	defer closeStore()

	// Nodes.
	for i := 1; i <= cfg.Nodes; i++ {
		name := fmt.Sprintf("n%d", i)
		s := (i-1)%cfg.Subnets + 1
		n, err := tp.Namespace(name)
		if err != nil {
			return err
		}
		sv.nss[name] = n
		if _, _, err := tp.Veth(rt, name, n, "eth0", 1500); err != nil {
			return err
		}
		brl, err := rt.Link(fmt.Sprintf("br%d", s))
		if err != nil {
			return err
		}
		pl, err := rt.Link(name)
		if err != nil {
			return err
		}
		if err := rt.Netlink().LinkSetMaster(pl, brl); err != nil {
			return fmt.Errorf("router: %s master br%d: %w", name, s, err)
		}
		addr := nodeAddr(s, i)
		if err := n.AddAddr("eth0", addr); err != nil {
			return err
		}
		if err := n.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), subnetGW(s).Addr(), "eth0"); err != nil {
			return err
		}
		for k, v := range map[string]string{"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0",
			"net.ipv4.conf.default.rp_filter": "0"} {
			if err := n.Sysctl(k, v); err != nil {
				return err
			}
		}
		st.Nodes = append(st.Nodes, Node{Name: name, Netns: n.Name, Subnet: s, Address: addr.String(),
			Gateway: subnetGW(s).Addr().String(), Socket: filepath.Join(dir, name+".sock"),
			Log: filepath.Join(dir, name+".log"), HealthURL: "http://127.0.0.1:9099",
			Dataplane: cfg.NodeDataplane(i - 1)})
	}

	// BIRD on the router before the agents, so that their sessions come
	// up at the first try.
	if cfg.NeedsBIRD() {
		b, err := startBIRD(ctx, tp, rt, dir, st.Nodes)
		if err != nil {
			return err
		}
		st.BIRD = b
		_ = sv.save()
		logf("BIRD up in %s (pid %d)", rt.Name, b.PID)
	}

	// Agents: the first alone (it creates the default pool), then the rest.
	if len(st.Nodes) > 0 {
		if err := sv.startAgent(0); err != nil {
			return err
		}
		if err := waitReady(ctx, st.Nodes[0], 90*time.Second); err != nil {
			return err
		}
	}
	for i := 1; i < len(st.Nodes); i++ {
		if err := sv.startAgent(i); err != nil {
			return err
		}
	}
	for _, nd := range st.Nodes[1:] {
		if err := waitReady(ctx, nd, 90*time.Second); err != nil {
			return err
		}
	}
	logf("%d agents ready", len(st.Nodes))
	if cfg.NeedsBIRD() {
		for _, nd := range st.Nodes {
			if err := labelNode(ctx, store, nd.Name, LabelSubnet, fmt.Sprint(nd.Subnet)); err != nil {
				return err
			}
		}
		if err := applyAll(ctx, store, routerPeers(cfg.Subnets)); err != nil {
			return err
		}
		logf("nodes labelled %s; BGPPeers to the router created", LabelSubnet)
	}

	// Pods through the CNI plugin, labelled as an orchestrator does.
	cni := libcni.NewCNIConfigWithCacheDir([]string{cfg.CNIBin}, filepath.Join(dir, "cni-cache"), nil)
	for i, nd := range st.Nodes {
		list, err := cniConfList(cfg, nd)
		if err != nil {
			return err
		}
		for j := 1; j <= cfg.PodsPerNode; j++ {
			name := fmt.Sprintf("%sp%d", nd.Name, j)
			pns, err := tp.Namespace(name)
			if err != nil {
				return err
			}
			ns, labels := podMeta(i+1, j)
			p := Pod{Name: name, Node: nd.Name, Netns: pns.Name, ContainerID: "lab-" + pns.Name, Namespace: ns,
				Labels: labels}
			ip, _, err := cniAdd(ctx, cni, list, nd.Netns, p)
			if err != nil {
				return err
			}
			p.IP = ip.String()
			if err := labelEndpoint(ctx, store, nd.Name, p); err != nil {
				return fmt.Errorf("label pod %s: %w", name, err)
			}
			st.Pods = append(st.Pods, p)
			_ = sv.save()
			logf("pod %s on %s: %s (%s, %v)", name, nd.Name, p.IP, ns, labels)
		}
	}
	if err := waitLabels(ctx, st.Nodes, st.Pods, 30*time.Second); err != nil {
		return err
	}
	if err := waitNodeRoutes(ctx, sv.nss, st.Nodes, st.Pods, 60*time.Second); err != nil {
		return err
	}
	if cfg.NeedsBIRD() {
		if err := waitRouterRoutes(ctx, rt, st.Pods, 60*time.Second); err != nil {
			out, _ := st.BIRD.Command(ctx, "show", "protocols")
			return fmt.Errorf("%w; BIRD:\n%s", err, out)
		}
		logf("router routes every pod")
	}
	return nil
}

// startAgent starts node i's agent (its log appended to).
func (sv *supervisor) startAgent(i int) error {
	sv.mu.Lock()
	cfg, nd := sv.st.Config, sv.st.Nodes[i]
	sv.mu.Unlock()
	n := sv.nss[nd.Name]
	c := n.Command(context.Background(), cfg.Self, "agent")
	c.Env = append(os.Environ(), cfg.Env...)
	c.Env = append(c.Env, agentEnv(cfg, &nd, Dir(cfg.Name))...)
	lf, err := os.OpenFile(nd.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	c.Stdout, c.Stderr = lf, lf
	err = sv.tp.Start(c)
	lf.Close()
	if err != nil {
		return fmt.Errorf("start agent %s: %w", nd.Name, err)
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	sv.st.Nodes[i].PID = c.Process.Pid
	return sv.st.save()
}

// cniConfList is the lab's network configuration for node nd.
func cniConfList(cfg Config, nd Node) (*libcni.NetworkConfigList, error) {
	return libcni.ConfListFromBytes([]byte(fmt.Sprintf(
		`{"cniVersion":"1.1.0","name":"tabby-lab","plugins":[{"type":"tabby","agent_socket":%q,"log_level":"warning","mtu":%d}]}`,
		nd.Socket, cfg.MTU())))
}

// cniAdd runs CNI ADD for pod p (its namespace exists) inside the node's
// namespace, as a container runtime on that node does, and returns the
// pod's IPv4 address and how long ADD took.
func cniAdd(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList, nodeNetns string,
	p Pod) (netip.Addr, time.Duration, error) {
	var res *current.Result
	var took time.Duration
	err := inNetns(nodeNetns, func() error {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		t0 := time.Now()
		r, err := cni.AddNetworkList(cctx, list, runtimeConf(p))
		took = time.Since(t0)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return netip.Addr{}, took, fmt.Errorf("CNI ADD %s on %s: %w", p.Name, p.Node, err)
	}
	for _, ip := range res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap(), took, nil
		}
	}
	return netip.Addr{}, took, fmt.Errorf("CNI ADD %s on %s: no IPv4 address in %v", p.Name, p.Node, res.IPs)
}

// cniDel runs CNI DEL for pod p inside the node's namespace and returns
// how long it took.
func cniDel(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList, nodeNetns string,
	p Pod) (time.Duration, error) {
	var took time.Duration
	err := inNetns(nodeNetns, func() error {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		t0 := time.Now()
		err := cni.DelNetworkList(cctx, list, runtimeConf(p))
		took = time.Since(t0)
		return err
	})
	if err != nil {
		return took, fmt.Errorf("CNI DEL %s on %s: %w", p.Name, p.Node, err)
	}
	return took, nil
}

func runtimeConf(p Pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: "/run/netns/" + p.Netns, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name}, {"IgnoreUnknown", "1"}}}
}

func agentEnv(cfg Config, nd *Node, dir string) []string {
	env := map[string]string{
		"NODENAME":       nd.Name,
		"ETCD_ENDPOINTS": fmt.Sprintf("http://%s:%d", nd.Gateway, EtcdPort),
		"STATE_DIR":      filepath.Join(dir, nd.Name),
		"DATAPLANE":      nd.Dataplane,
		"INTERFACES":     "eth0",
		"IP":             nd.Address,
		"IPV4POOL_CIDR":  cfg.PoolCIDR,
		"CNI_SOCKET":     nd.Socket,
		"HEALTH_LISTEN":  "127.0.0.1:9099",
		"METRICS_LISTEN": "127.0.0.1:9099",
		"BGP":            fmt.Sprint(cfg.BGP()),
		"DEBOUNCE":       "20ms",
		"LOG_LEVEL":      "info",
		"IPV4POOL_IPIP":  "Never",
		"IPV4POOL_VXLAN": "Never",
	}
	switch cfg.Encap {
	case "ipip":
		env["IPV4POOL_IPIP"] = "Always"
	case "ipip-crosssubnet":
		env["IPV4POOL_IPIP"] = "CrossSubnet"
	case "vxlan":
		env["IPV4POOL_VXLAN"] = "Always"
	case "vxlan-crosssubnet":
		env["IPV4POOL_VXLAN"] = "CrossSubnet"
	}
	if nd.Dataplane == "kernel" && cfg.Mixed() {
		// Veths everywhere: a kernel pod's offloaded checksum would
		// reach an afxdp node's pod uncompleted (see podChecksumOffload).
		env["POD_CHECKSUM_OFFLOAD"] = "off"
	}
	var out []string
	for k, v := range env {
		out = append(out, agent.EnvPrefix+k+"="+v)
	}
	return out
}

func waitFile(ctx context.Context, path string, within time.Duration, c *exec.Cmd) error {
	deadline := time.Now().Add(within)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if c.ProcessState != nil || (c.Process != nil && zombie(c.Process.Pid)) {
			return errors.New("process exited")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitReady(ctx context.Context, nd Node, within time.Duration) error {
	deadline := time.Now().Add(within)
	cli := agent.NewClient(nd.Socket)
	var last string
	for {
		if nd.PID > 0 && zombie(nd.PID) {
			return fmt.Errorf("agent %s exited; log %s:\n%s", nd.Name, nd.Log, tail(nd.Log, 15))
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s, err := cli.Status(cctx)
		cancel()
		if err == nil && s.Ready {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = strings.Join(s.NotReady, "; ")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent %s not ready after %s: %s; log %s:\n%s", nd.Name, within, last, nd.Log, tail(nd.Log, 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Etcd runs the lab's etcd (data in dir) with a TCP relay on listen and
// one on the unix socket dir/etcd.sock, writes dir/ready when it serves,
// and runs until ctx ends.
func Etcd(ctx context.Context, dir, listen string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	e, err := etcd.StartEmbedded(ctx, etcd.EmbeddedConfig{Dir: filepath.Join(dir, "data"), Name: "lab", NoFsync: true})
	if err != nil {
		return err
	}
	defer e.Close()
	target := strings.TrimPrefix(e.Endpoints()[0], "http://")
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	sock := filepath.Join(dir, "etcd.sock")
	_ = os.Remove(sock)
	uln, err := net.Listen("unix", sock)
	if err != nil {
		ln.Close()
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
		uln.Close()
	}()
	go func() {
		for {
			c, err := uln.Accept()
			if err != nil {
				return
			}
			go relay(c, target)
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(target+"\n"), 0o644); err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go relay(c, target)
	}
}

func relay(c net.Conn, target string) {
	defer c.Close()
	u, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(u, c)
	go cp(c, u)
	<-done
	<-done
}
