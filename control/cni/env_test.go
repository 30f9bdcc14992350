package cni_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/cni"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// plugins builds the plugin (as `tabby`) and the reference plugins from
// the module into a bin directory of the test (removed with it).
func plugins(t *testing.T) string {
	t.Helper()
	binDir := t.TempDir()
	cmd := osexec.Command("go", "build", "-o", binDir+"/",
		"github.com/tabbynet/tabby/cmd/tabby-cni",
		"github.com/containernetworking/plugins/plugins/meta/portmap",
		"github.com/containernetworking/plugins/plugins/meta/bandwidth",
		"github.com/containernetworking/plugins/plugins/meta/tuning",
		"github.com/containernetworking/plugins/plugins/main/loopback")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.Rename(filepath.Join(binDir, "tabby-cni"), filepath.Join(binDir, "tabby")); err != nil {
		t.Fatal(err)
	}
	return binDir
}

// env is one node: a namespace "node" (uplink up0 to a peer) where the
// agent's kernel dataplane runs and the runtime (the test, through libcni)
// executes the plugins, as kubelet does on a host.
type env struct {
	t     *testing.T
	tp    *topo.Topology
	node  *topo.Netns
	agent *agent.Agent
	sock  string
	cli   *agent.Client
	cni   *libcni.CNIConfig
	bin   string
	pods  int
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	if _, err := osexec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	requireRoot(t)
	e := &env{t: t, bin: plugins(t)}
	e.tp = topo.ForTest(t, "tbcni")
	var err error
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	e.node, err = e.tp.Namespace("node")
	must(err)
	peer, err := e.tp.Namespace("peer")
	must(err)
	_, _, err = e.tp.Veth(e.node, "up0", peer, "p0", 1500)
	must(err)
	must(e.node.AddAddr("up0", netip.MustParsePrefix("192.168.70.1/24")))
	must(peer.AddAddr("p0", netip.MustParsePrefix("192.168.70.2/24")))
	// A default route, as hosts have: proxy ARP answers for 169.254.1.1
	// only when the node routes it out of another interface.
	must(e.node.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("192.168.70.2"), "up0"))

	dir := t.TempDir()
	e.sock = filepath.Join(dir, "agent.sock")
	srv := etcdtest.Server(t)
	fl, err := agent.FlagLayer(map[string]string{
		"node-name": "n1", "etcd-endpoints": strings.Join(srv.Endpoints(), ","), "etcd-prefix": etcdtest.Prefix(t),
		"state-dir": dir, "dataplane": "kernel", "interfaces": "up0", "ipv4-pool-cidr": "10.65.0.0/16",
		"ipv6-pool-cidr": "fd00:65::/48",
		"health-listen":  "127.0.0.1:0", "metrics-listen": "127.0.0.1:0", "cni-socket": e.sock, "debounce": "10ms",
		"log-level": "warn"})
	must(err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	level := slog.LevelWarn
	a, err := agent.Start(ctx, agent.Options{Layers: []*agent.ConfigLayer{fl}, Netns: e.node.Handle(),
		Logger:        slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level})),
		ProbeInterval: 300 * time.Millisecond, StartTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("close agent: %v", err)
		}
	})
	e.agent = a
	e.cli = agent.NewClient(e.sock)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := e.cli.Status(context.Background())
		if err == nil && st.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready: %v %+v", err, st.NotReady)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{e.bin}, filepath.Join(dir, "cache"), nil)
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// pod is a container's network namespace, removed with the topology.
type pod struct {
	ns *topo.Netns
	rt *libcni.RuntimeConf
}

func (p *pod) path() string { return "/run/netns/" + p.ns.Name }

func (e *env) newPod(name string) *pod {
	e.t.Helper()
	e.pods++
	n, err := e.tp.Namespace(fmt.Sprintf("p%d", e.pods))
	if err != nil {
		e.t.Fatal(err)
	}
	p := &pod{ns: n}
	p.rt = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("ctr-%s-%d", name, e.pods), NetNS: p.path(), IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", name}, {"IgnoreUnknown", "1"}}}
	return p
}

// inNode runs fn (a libcni call: the plugins it executes inherit the
// thread's namespace) in the node namespace.
func (e *env) inNode(fn func() error) error { return e.node.Do(fn) }

func (e *env) add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	var res types.Result
	err := e.inNode(func() error {
		var err error
		res, err = e.cni.AddNetworkList(context.Background(), list, rt)
		return err
	})
	return res, err
}

func (e *env) check(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return e.inNode(func() error { return e.cni.CheckNetworkList(context.Background(), list, rt) })
}

func (e *env) del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return e.inNode(func() error { return e.cni.DelNetworkList(context.Background(), list, rt) })
}

// confList builds a conflist: tabby's plugin object with extra fields
// (JSON fragments), then the other plugins (JSON objects).
func confList(t *testing.T, version, tabbyExtra string, sock string, others ...string) *libcni.NetworkConfigList {
	t.Helper()
	tabby := fmt.Sprintf(`{"type":"tabby","agent_socket":%q,"log_level":"warning","mtu":1400%s}`, sock, tabbyExtra)
	return confListRaw(t, version, append([]string{tabby}, others...)...)
}

func confListRaw(t *testing.T, version string, plugins ...string) *libcni.NetworkConfigList {
	t.Helper()
	s := fmt.Sprintf(`{"cniVersion":%q,"name":"k8s-pod-network","plugins":[%s]}`, version, strings.Join(plugins, ","))
	l, err := libcni.ConfListFromBytes([]byte(s))
	if err != nil {
		t.Fatalf("conflist %s: %v", s, err)
	}
	return l
}

// cniCode returns the CNI error code of err (0 if err is no CNI error).
func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// hostVeths lists the tab* links in the node namespace.
func (e *env) hostVeths() []string {
	e.t.Helper()
	links, err := e.node.Netlink().LinkList()
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, cni.HostVethPrefix) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// inUse is the number of allocated addresses in this node's blocks.
func (e *env) inUse() int {
	e.t.Helper()
	st, err := e.cli.Status(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, b := range st.Blocks {
		n += b.InUse
	}
	return n
}

func (e *env) endpoints() []agent.EndpointResponse {
	e.t.Helper()
	eps, err := e.cli.Endpoints(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return eps
}

// assertClean fails unless no endpoint, no allocated address and no host
// veth is left.
func (e *env) assertClean() {
	e.t.Helper()
	if eps := e.endpoints(); len(eps) != 0 {
		var ids []string
		for _, ep := range eps {
			ids = append(ids, ep.ContainerID)
		}
		e.t.Errorf("endpoints left in the agent: %v", ids)
	}
	if n := e.inUse(); n != 0 {
		e.t.Errorf("%d addresses left allocated", n)
	}
	if v := e.hostVeths(); len(v) != 0 {
		e.t.Errorf("host veths left: %v", v)
	}
}

// link returns a link of a namespace's netlink handle.
func link(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func exec(name string, args ...string) (string, error) {
	out, err := osexec.Command(name, args...).CombinedOutput()
	return string(out), err
}
