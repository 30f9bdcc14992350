package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

// podLab is a node for an agent with the afxdp dataplane whose pods are
// made by the real CNI plugin through libcni, as kubelet would:
//
//	peer p0 192.168.60.2/24 ── up0 192.168.60.1/24 node ── tab<hash> ── eth0 pod
//
// The node does not forward in the kernel (ip_forward 0 on up0; the CNI
// plugin enables forwarding on each pod veth, which proxy ARP needs), so
// pod-to-pod traffic the kernel forwarded would show in its ForwDatagrams
// counter.
type podLab struct {
	t          *testing.T
	tp         *topo.Topology
	node, peer *topo.Netns
	cni        *libcni.CNIConfig
	list       *libcni.NetworkConfigList
	sock       string
	flags      map[string]string
	pods       map[string]*labPod
}

type labPod struct {
	ns          *topo.Netns
	containerID string
	ip          netip.Addr
	veth        string
}

// buildCNIPlugin builds cmd/tabby-cni as "tabby" into a directory of the
// test.
func buildCNIPlugin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "tabby"), "github.com/tabbynet/tabby/cmd/tabby-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("go build tabby-cni: %v\n%s", err, out)
	}
	return dir
}

func newPodLab(t *testing.T) *podLab {
	t.Helper()
	requireRoot(t)
	bin := buildCNIPlugin(t)
	l := &podLab{t: t, tp: topo.ForTest(t, "tbpod"), pods: map[string]*labPod{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	l.node, l.peer = nodeAndPeer(t, l.tp, "192.168.60")
	// Proxy ARP answers for 169.254.1.1 only when the node routes it out
	// of another interface: a default route, as hosts have.
	must(l.node.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("192.168.60.2"), "up0"))

	dir := t.TempDir()
	l.sock = filepath.Join(dir, "agent.sock")
	srv := etcdtest.Server(t)
	l.flags = map[string]string{
		"node-name": "n1", "etcd-endpoints": strings.Join(srv.Endpoints(), ","), "etcd-prefix": etcdtest.Prefix(t),
		"state-dir": dir, "dataplane": "afxdp", "interfaces": "up0", "ipv4-pool-cidr": "10.66.0.0/16",
		"health-listen": "127.0.0.1:0", "metrics-listen": "127.0.0.1:0", "cni-socket": l.sock, "debounce": "10ms",
		"log-level": "debug", "max-pods": "8",
	}
	l.list, err = libcni.ConfListFromBytes([]byte(fmt.Sprintf(
		`{"cniVersion":"1.1.0","name":"tabby-test","plugins":[{"type":"tabby","agent_socket":%q,"log_level":"warning","mtu":1500}]}`,
		l.sock)))
	must(err)
	l.cni = libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(dir, "cni-cache"), nil)
	return l
}

// start starts an agent in the node namespace (closed in t.Cleanup unless
// the test closed it).
func (l *podLab) start() *Agent {
	l.t.Helper()
	fl, err := FlagLayer(l.flags)
	if err != nil {
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := Start(ctx, Options{Layers: []*ConfigLayer{fl}, Logger: testLogger(l.t), Netns: l.node.Handle(),
		ProbeInterval: 300 * time.Millisecond, StartTimeout: 30 * time.Second})
	if err != nil {
		l.t.Fatalf("start agent: %v", err)
	}
	l.t.Cleanup(func() { a.Close() })
	waitReady(l.t, a, 200, 20*time.Second)
	return a
}

func (l *podLab) runtimeConf(p *labPod, name string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.containerID, NetNS: "/run/netns/" + p.ns.Name, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", name}, {"IgnoreUnknown", "1"}}}
}

// add creates a pod namespace and runs CNI ADD for it in the node
// namespace.
func (l *podLab) add(name string) *labPod {
	l.t.Helper()
	ns, err := l.tp.Namespace(name)
	if err != nil {
		l.t.Fatal(err)
	}
	p := &labPod{ns: ns, containerID: "ctr-" + name + "-" + randHex(4)}
	var res *current.Result
	err = l.node.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := l.cni.AddNetworkList(ctx, l.list, l.runtimeConf(p, name))
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		l.t.Fatalf("CNI ADD %s: %v", name, err)
	}
	if len(res.IPs) != 1 || len(res.Interfaces) != 2 {
		l.t.Fatalf("CNI ADD %s: result %+v", name, res)
	}
	p.ip, _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	p.veth = res.Interfaces[0].Name
	l.pods[name] = p
	return p
}

// del runs CNI DEL for a pod (the plugin deletes the veth, then the
// agent's endpoint).
func (l *podLab) del(name string) {
	l.t.Helper()
	p := l.pods[name]
	err := l.node.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return l.cni.DelNetworkList(ctx, l.list, l.runtimeConf(p, name))
	})
	if err != nil {
		l.t.Fatalf("CNI DEL %s: %v", name, err)
	}
	delete(l.pods, name)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// ping sends count echo requests from pod a to pod b; it returns an error
// unless all were answered.
func (l *podLab) ping(a, b string, count int) error {
	_, err := l.pods[a].ns.Run("ping", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", "-q", l.pods[b].ip.String())
	return err
}

// tcpExchange sends size bytes from pod a to an echo server in pod b over
// TCP and checks the echo.
func (l *podLab) tcpExchange(a, b string, size int) error {
	var ln net.Listener
	if err := l.pods[b].ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(l.pods[b].ip.String(), "7100"))
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(c, c)
	}()
	var c net.Conn
	if err := l.pods[a].ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", net.JoinHostPort(l.pods[b].ip.String(), "7100"), 3*time.Second)
		return err
	}); err != nil {
		return fmt.Errorf("connect %s -> %s: %w", a, b, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := make([]byte, size)
	rand.Read(msg)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("write %s -> %s: %w", a, b, werr)
	}
	if err != nil {
		return fmt.Errorf("read echo %s -> %s after %d bytes: %w", a, b, len(got), err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo %s -> %s: %d bytes back, want %d identical", a, b, len(got), len(msg))
	}
	return nil
}

// kernelForwarded returns the node kernel's IPv4 ForwDatagrams counter.
func (l *podLab) kernelForwarded() uint64 {
	l.t.Helper()
	out, err := l.node.Run("cat", "/proc/net/snmp")
	if err != nil {
		l.t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "ForwDatagrams" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	l.t.Fatal("no ForwDatagrams in /proc/net/snmp")
	return 0
}

// enginePorts returns the names of the engine's interfaces.
func enginePorts(a *Agent) []string {
	var out []string
	for _, i := range a.dp.(*afxdpDataplane).eng.Stats().Interfaces {
		out = append(out, i.Name)
	}
	return out
}

func waitPorts(t *testing.T, a *Agent, want ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("engine ports %v", want), 10*time.Second, func() bool {
		have := map[string]bool{}
		for _, n := range enginePorts(a) {
			have[n] = true
		}
		if len(have) != len(want) {
			return false
		}
		for _, n := range want {
			if !have[n] {
				return false
			}
		}
		return true
	})
}

// TestAgentAFXDPPods runs an afxdp agent whose pods are made by the CNI
// plugin: each pod's veth becomes an engine port when the pod is added;
// pod-to-pod ICMP and TCP on the node go through the engine (its counters
// grow, the kernel forwards nothing); deleting a pod detaches its veth
// (already deleted by the plugin) while the others keep working; a failed
// attach fails the CNI ADD with the reason; a restarted agent attaches the
// pods that exist; no frame leaks.
func TestAgentAFXDPPods(t *testing.T) {
	l := newPodLab(t)
	a := l.start()
	ctx := context.Background()
	eng := func() *afxdpDataplane { return a.dp.(*afxdpDataplane) }

	for _, name := range []string{"pa", "pb", "pc"} {
		p := l.add(name)
		// The reply came after the veth was attached and routed: the
		// first ping of the pod succeeds.
		if name != "pa" {
			if err := l.ping("pa", name, 1); err != nil {
				t.Fatalf("first ping pa -> %s right after ADD: %v", name, err)
			}
		}
		is, ok := eng().eng.Interface(p.veth)
		if !ok || !is.Runtime || is.XDPMode != afxdp.XDPDriver || is.SocketMode != afxdp.ModeCopy {
			t.Fatalf("pod %s: veth %s in the engine: %v %+v", name, p.veth, ok, is)
		}
	}
	waitPorts(t, a, "up0", l.pods["pa"].veth, l.pods["pb"].veth, l.pods["pc"].veth)

	before, fwd := eng().eng.Counters(), l.kernelForwarded()
	for _, pair := range [][2]string{{"pa", "pb"}, {"pb", "pc"}, {"pc", "pa"}} {
		if err := l.ping(pair[0], pair[1], 3); err != nil {
			t.Errorf("ping %s -> %s: %v", pair[0], pair[1], err)
		}
		if err := l.tcpExchange(pair[0], pair[1], 200_000); err != nil {
			t.Errorf("TCP %s -> %s: %v", pair[0], pair[1], err)
		}
	}
	after := eng().eng.Counters()
	if d := after.ToLocal - before.ToLocal; d < 3*2*3+3*2*100 {
		t.Errorf("engine delivered %d frames to local pods during 9 pings and 3 TCP exchanges of 200 kB", d)
	}
	if d := l.kernelForwarded() - fwd; d != 0 {
		t.Errorf("the node's kernel forwarded %d datagrams: pod traffic bypassed the engine", d)
	}
	if c := after; c.Dropped() != 0 {
		t.Logf("engine drops: %+v", a.Status(ctx).Drops)
	}
	for _, name := range []string{"pa", "pb", "pc"} {
		is, _ := eng().eng.Interface(l.pods[name].veth)
		if is.Steering.RedirectPod == 0 {
			t.Errorf("steering on %s redirected nothing: %+v", l.pods[name].veth, is.Steering)
		}
	}
	code, metrics := httpGet(t, "http://"+a.Addr("metrics")+"/metrics")
	for _, m := range []string{
		`tabby_dataplane_interface_operations_total{op="attach",result="ok",socket_mode="copy",xdp_mode="native"} 3`,
		`tabby_dataplane_interfaces{origin="pod"} 3`, `tabby_dataplane_interfaces{origin="config"} 1`,
	} {
		if code != 200 || !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	// A pool created while the agent runs is steered to the engine (no
	// restart): a pod from it is reachable.
	extra := netip.MustParsePrefix("10.98.0.0/24")
	if _, _, err := a.Store().Apply(ctx, Wrap(&resources.IPPool{ObjectMeta: resources.ObjectMeta{Name: "extra"},
		Spec: resources.IPPoolSpec{CIDR: extra.String(), BlockSize: 28}})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new pool steered to the engine", 10*time.Second, func() bool {
		return slices.Contains(eng().eng.PodCIDRs(), extra)
	})
	defaultList := l.list
	extraList, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(
		`{"cniVersion":"1.1.0","name":"tabby-test","plugins":[{"type":"tabby","agent_socket":%q,"log_level":"warning","mtu":1500,"ipam":{"type":"tabby-ipam","ipv4_pools":["extra"]}}]}`,
		l.sock)))
	if err != nil {
		t.Fatal(err)
	}
	l.list = extraList
	pd := l.add("pd")
	if !extra.Contains(pd.ip) {
		t.Fatalf("pod pd got %s, not from the new pool %s", pd.ip, extra)
	}
	if err := l.ping("pa", "pd", 2); err != nil {
		t.Errorf("ping pa -> pd (new pool): %v", err)
	}
	l.del("pd")
	l.list = defaultList

	// Delete pb: its veth goes first (the plugin), then the endpoint and
	// the port. pa and pc keep working.
	vethB, ipB := l.pods["pb"].veth, l.pods["pb"].ip
	l.del("pb")
	waitPorts(t, a, "up0", l.pods["pa"].veth, l.pods["pc"].veth)
	if err := l.ping("pa", "pc", 3); err != nil {
		t.Errorf("ping pa -> pc after deleting pb: %v", err)
	}
	if err := l.tcpExchange("pc", "pa", 100_000); err != nil {
		t.Errorf("TCP pc -> pa after deleting pb: %v", err)
	}
	if _, err := l.pods["pa"].ns.Run("ping", "-c", "1", "-W", "1", ipB.String()); err == nil {
		t.Errorf("the deleted pod's address %s still answers", ipB)
	}
	if _, ok := eng().eng.Interface(vethB); ok {
		t.Errorf("deleted pod's veth %s still an engine port", vethB)
	}
	// The deleted pods' flows (pd's pings, pb's TCP exchanges) left the
	// engine's conntrack: a pod reusing an address inherits nothing.
	waitFor(t, "the deleted pods' flows forgotten", 5*time.Second, func() bool {
		return metricValue(t, a, `tabby_dataplane_conntrack_deleted_total{family="ipv4"}`) >= 2
	})
	if !strings.Contains(func() string { _, m := httpGet(t, "http://"+a.Addr("metrics")+"/metrics"); return m }(),
		`tabby_dataplane_interface_operations_total{op="detach",result="ok",socket_mode="copy",xdp_mode="native"} 2`) { // pd, pb
		t.Error("/metrics lacks the detach")
	}

	// An interface that cannot be attached fails the ADD with the reason,
	// and nothing stays: no endpoint, no address.
	_, err = NewClient(l.sock).AddEndpoint(ctx, EndpointRequest{ContainerID: "ctr-ghost", Namespace: "shop",
		Pod: "ghost", InterfaceName: "tabghost0"})
	if err == nil || !strings.Contains(err.Error(), "tabghost0 does not exist") || !strings.Contains(err.Error(), "dataplane") {
		t.Errorf("ADD with a missing veth: %v", err)
	} else {
		t.Logf("ADD with a missing veth: %v", err)
	}
	if addrs, err := a.ipam.IPsByHandle(ctx, "ctr-ghost"); err != nil || len(addrs) != 0 {
		t.Errorf("failed ADD left addresses %v (%v)", addrs, err)
	}

	if st := eng().eng.Stats(); st.InvalidReleases != 0 {
		t.Errorf("invalid frame releases: %d", st.InvalidReleases)
	}

	// Restart: the engine closes with every frame back (Close fails
	// otherwise) and leaves the pods' veths without XDP; the new agent
	// attaches the pods that exist.
	if err := a.Close(); err != nil {
		t.Fatalf("close agent: %v", err)
	}
	for _, name := range []string{"pa", "pc"} {
		if l.xdpOn(l.pods[name].veth) {
			t.Errorf("XDP program left on %s after the agent stopped", l.pods[name].veth)
		}
	}
	a = l.start()
	waitPorts(t, a, "up0", l.pods["pa"].veth, l.pods["pc"].veth)
	waitFor(t, "pa -> pc after the restart", 10*time.Second, func() bool { return l.ping("pa", "pc", 1) == nil })
	if err := l.tcpExchange("pa", "pc", 100_000); err != nil {
		t.Errorf("TCP pa -> pc after the restart: %v", err)
	}

	// pa's veth replaced by a new one of the same name (what a repeated
	// ADD of a recreated sandbox does): the next ADD re-attaches it.
	pa := l.pods["pa"]
	oldIdx := a.dp.(*afxdpDataplane).ports.byName[pa.veth].ifindex
	for _, c := range [][]string{
		{"node", "ip", "link", "del", pa.veth},
		{"node", "ip", "link", "add", pa.veth, "type", "veth", "peer", "name", "eth0", "netns", pa.ns.Name},
		{"node", "ip", "link", "set", pa.veth, "up"},
		{"node", "sysctl", "-qw", "net.ipv4.conf." + pa.veth + ".proxy_arp=1", "net.ipv4.conf." + pa.veth + ".forwarding=1",
			"net.ipv4.neigh." + pa.veth + ".proxy_delay=0"},
		{"node", "ip", "route", "add", pa.ip.String() + "/32", "dev", pa.veth, "scope", "link"},
		{"pa", "ip", "link", "set", "eth0", "up"},
		{"pa", "ip", "addr", "add", pa.ip.String() + "/32", "dev", "eth0"},
		{"pa", "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
		{"pa", "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
	} {
		ns := l.node
		if c[0] == "pa" {
			ns = pa.ns
		}
		if _, err := ns.Run(c[1], c[2:]...); err != nil {
			t.Fatal(err)
		}
	}
	mac, err := pa.ns.MAC("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(l.sock).AddEndpoint(ctx, EndpointRequest{ContainerID: pa.containerID, Namespace: "shop",
		Pod: "pa", Endpoint: "eth0", InterfaceName: pa.veth, MAC: mac.String()}); err != nil {
		t.Fatalf("ADD after the veth was replaced: %v", err)
	}
	if p, ok := a.dp.(*afxdpDataplane).ports.get(pa.veth); !ok || p.ifindex == oldIdx {
		t.Errorf("port of the replaced veth: %+v %v (old ifindex %d)", p, ok, oldIdx)
	}
	if err := l.ping("pa", "pc", 1); err != nil {
		t.Errorf("ping pa -> pc after the veth was replaced: %v", err)
	}
	l.del("pa")
	l.del("pc")
	waitPorts(t, a, "up0")
	if err := a.Close(); err != nil {
		t.Fatalf("close agent: %v", err)
	}
	if _, err := os.Stat(l.sock); !os.IsNotExist(err) {
		t.Errorf("CNI socket left: %v", err)
	}
}

// xdpOn reports whether a node interface has an XDP program.
func (l *podLab) xdpOn(ifname string) bool {
	l.t.Helper()
	link, err := l.node.Link(ifname)
	if err != nil {
		l.t.Fatal(err)
	}
	x := link.Attrs().Xdp
	return x != nil && (x.Attached || x.ProgId != 0)
}
