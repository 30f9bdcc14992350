// Package agent_test runs Tabby's node agent (control/agent) with the
// Kubernetes datastore against a real kube-apiserver (test/kubeapi): each
// agent in a network namespace of its own with the kernel dataplane,
// nodes joined by an underlay bridge, pods as namespaces whose veths the
// test sets up as the CNI plugin would.
package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sclient "k8s.io/client-go/kubernetes"

	"github.com/vishvananda/netlink"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/test/kubeapi"
)

func TestMain(m *testing.M) { kubeapi.Main(m) }

// The test network: nodes on one underlay subnet (a bridge in namespace
// "ul", which also holds the nodes' default gateway), pods in the default
// pool of the first agent.
const (
	underlayGW = "192.168.77.1/24"
	poolCIDR   = "10.77.0.0/16"
	podMTU     = 1450 // VXLAN
	vxlanDev   = "vxlan.tabby"
)

// env is one test's cluster: the apiserver's datastore, the topology and
// the nodes. Everything is removed in t.Cleanup.
type env struct {
	t          *testing.T
	tp         *topo.Topology
	ul         *topo.Netns
	kubeconfig string
	kds        *kubernetes.Datastore
	cs         k8sclient.Interface
	// store is a view of the datastore as the CLI has it (resources and
	// the agent kinds).
	store *agent.Store
	nodes []*node
}

// node is one node namespace and its agent.
type node struct {
	name string
	ns   *topo.Netns
	addr netip.Prefix
	dir  string
	lv   *slog.LevelVar
	a    *agent.Agent
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: network namespaces, netlink and nftables (run as root, as CI does)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s (scripts/deps.sh installs it): %v", tool, err)
		}
	}
}

// newEnv purges the datastore of what earlier tests left and builds
// namespaces for the named nodes (agents are started by start).
func newEnv(t *testing.T, names ...string) *env {
	t.Helper()
	requireRoot(t)
	e := &env{t: t, kubeconfig: kubeapi.Kubeconfig(t)}
	e.kds = kubeapi.Datastore(t, kubernetes.Config{})
	e.cs = e.kds.Clientset()
	e.store = &agent.Store{DS: e.kds, Objects: agent.NewKubernetesObjects(e.kds)}
	e.purge()
	e.tp = topo.ForTest(t, "tak")
	var err error
	if e.ul, err = e.tp.Namespace("ul"); err != nil {
		t.Fatal(err)
	}
	must(t, e.ul.Netlink().LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}))
	must(t, e.ul.SetUp("br0"))
	must(t, e.ul.AddAddr("br0", netip.MustParsePrefix(underlayGW)))
	br, err := e.ul.Link("br0")
	must(t, err)
	gw := netip.MustParsePrefix(underlayGW).Addr()
	for i, name := range names {
		n := &node{name: name, addr: netip.MustParsePrefix(fmt.Sprintf("192.168.77.%d/24", 11+i)), dir: t.TempDir()}
		if n.ns, err = e.tp.Namespace(name); err != nil {
			t.Fatal(err)
		}
		_, _, err := e.tp.Veth(e.ul, "ul-"+name, n.ns, "eth0", 1500)
		must(t, err)
		port, err := e.ul.Link("ul-" + name)
		must(t, err)
		must(t, e.ul.Netlink().LinkSetMaster(port, br))
		must(t, n.ns.AddAddr("eth0", n.addr))
		// The default route also makes proxy ARP answer for the pods'
		// gateway 169.254.1.1 (as on a real node).
		must(t, n.ns.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), gw, "eth0"))
		for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.rp_filter", "0"},
			{"net.ipv4.conf.default.rp_filter", "0"}} {
			must(t, n.ns.Sysctl(kv[0], kv[1]))
		}
		e.nodes = append(e.nodes, n)
	}
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// node returns the node named name.
func (e *env) node(name string) *node {
	for _, n := range e.nodes {
		if n.name == name {
			return n
		}
	}
	e.t.Fatalf("no node %s", name)
	return nil
}

// purge deletes every Tabby object: the resources and the agent kinds.
func (e *env) purge() {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, info := range resources.Kinds() {
		keys, err := e.kds.ListKeys(ctx, info.Kind)
		must(t, err)
		for _, k := range keys {
			if _, err := e.kds.Delete(ctx, k, ""); err != nil && !datastore.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	for _, info := range agent.AgentKinds() {
		if info.Kind == agent.KindWorkloadEndpoint {
			continue // not stored with Kubernetes
		}
		objs, err := e.store.List(ctx, info.Kind)
		must(t, err)
		for _, o := range objs {
			if _, err := e.store.Delete(ctx, agent.KeyOfObject(o), ""); err != nil && !datastore.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
}

// agentConfig returns the configuration of n's agent: the datastore keys
// as the environment of a DaemonSet pod would give them, the rest as
// flags (extra overrides or, with an empty value, removes a flag).
func (e *env) agentConfig(n *node, extra map[string]string) []*agent.ConfigLayer {
	t := e.t
	t.Helper()
	envLayer, unknown := agent.EnvLayer([]string{
		agent.EnvPrefix + "DATASTORE=kubernetes",
		agent.EnvPrefix + "KUBECONFIG=" + e.kubeconfig,
		agent.EnvPrefix + "NODENAME=" + n.name,
	})
	if len(unknown) > 0 {
		t.Fatalf("unknown variables %v", unknown)
	}
	flags := map[string]string{
		"state-dir": n.dir, "dataplane": "kernel", "interfaces": "eth0", "node-address": n.addr.String(),
		"ipv4-pool-cidr": poolCIDR, "ipv4-pool-vxlan": "Always", "bgp-enabled": "false",
		"health-listen": "127.0.0.1:0", "metrics-listen": "127.0.0.1:0", "cni-socket": filepath.Join(n.dir, "agent.sock"), "debounce": "10ms",
		"log-level": "info",
	}
	for k, v := range extra {
		if v == "" {
			delete(flags, k)
		} else {
			flags[k] = v
		}
	}
	fl, err := agent.FlagLayer(flags)
	must(t, err)
	return []*agent.ConfigLayer{envLayer, fl}
}

// start starts n's agent in n's namespace and waits until it is ready;
// it is closed in t.Cleanup (before the namespaces go).
func (e *env) start(n *node, extra map[string]string) *agent.Agent {
	t := e.t
	t.Helper()
	n.lv = new(slog.LevelVar)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	begin := time.Now()
	a, err := agent.Start(ctx, agent.Options{Layers: e.agentConfig(n, extra), Netns: n.ns.Handle(),
		Logger: testLogger(t, n.name, n.lv), LevelVar: n.lv, ProbeInterval: 500 * time.Millisecond,
		StartTimeout: 60 * time.Second})
	if err != nil {
		t.Fatalf("start agent %s: %v", n.name, err)
	}
	n.a = a
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("close agent %s: %v", n.name, err)
		}
	})
	waitFor(t, "agent "+n.name+" ready", 60*time.Second, func() bool { return a.Status(ctx).Ready })
	t.Logf("agent %s ready in %s", n.name, time.Since(begin).Round(time.Millisecond))
	return a
}

// stop stops n's agent (Close is idempotent: the cleanup's call is a
// no-op).
func (e *env) stop(n *node) {
	e.t.Helper()
	if err := n.a.Close(); err != nil {
		e.t.Errorf("close agent %s: %v", n.name, err)
	}
	n.a = nil
}

// testLogger logs to the test at the level lv holds (set by the agent
// from its configuration), only with -v.
func testLogger(t *testing.T, node string, lv *slog.LevelVar) *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = tWriter{t}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})).With("test_node", node)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// namespace creates a Kubernetes namespace (a unique name from prefix)
// with a service account for the pods; both are deleted in t.Cleanup
// (the namespace stays Terminating: no controller-manager runs).
func (e *env) namespace(prefix string, labels map[string]string) string {
	t := e.t
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000_000)
	_, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: labels}}, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() { e.cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	_, err = e.cs.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name: "pods", Namespace: name}}, metav1.CreateOptions{})
	must(t, err)
	return name
}

// pod is a pod: a namespace with eth0, plumbed as Tabby's CNI plugin
// does (veth, /32, default route via 169.254.1.1 answered by proxy ARP,
// host route), its address from the agent's endpoint API, and its
// Kubernetes Pod object with the address in status.podIPs, as the kubelet
// reports it.
type pod struct {
	name, k8sNs string
	node        *node
	netns       *topo.Netns
	hostIf      string
	containerID string
	ip          netip.Addr
	resp        agent.EndpointResponse
}

// addPod creates pod name of Kubernetes namespace k8sNs on n.
func (e *env) addPod(n *node, k8sNs, name string, labels map[string]string) *pod {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := &pod{name: name, k8sNs: k8sNs, node: n, hostIf: "tab" + name, containerID: "ctr-" + name}
	var err error
	if p.netns, err = e.tp.Namespace(name); err != nil {
		t.Fatal(err)
	}
	_, _, err = e.tp.Veth(n.ns, p.hostIf, p.netns, "eth0", podMTU)
	must(t, err)
	mac, err := p.netns.MAC("eth0")
	must(t, err)
	p.resp, err = agent.NewClient(n.a.Addr("cni")).AddEndpoint(ctx, agent.EndpointRequest{ContainerID: p.containerID,
		Namespace: k8sNs, Pod: name, InterfaceName: p.hostIf, MAC: mac.String(), Labels: labels,
		ServiceAccount: "pods"})
	if err != nil {
		t.Fatalf("add endpoint %s on %s: %v", name, n.name, err)
	}
	if len(p.resp.IPs) != 1 {
		t.Fatalf("endpoint %s: addresses %v", name, p.resp.IPs)
	}
	p.ip = netip.MustParsePrefix(p.resp.IPs[0]).Addr()
	for _, kv := range [][2]string{{"net.ipv4.conf." + p.hostIf + ".proxy_arp", "1"},
		{"net.ipv4.neigh." + p.hostIf + ".proxy_delay", "0"}, {"net.ipv4.conf." + p.hostIf + ".forwarding", "1"}} {
		must(t, n.ns.Sysctl(kv[0], kv[1]))
	}
	must(t, n.ns.AddRoute(netip.PrefixFrom(p.ip, 32), netip.Addr{}, p.hostIf))
	must(t, p.netns.AddAddr("eth0", netip.PrefixFrom(p.ip, 32)))
	must(t, p.netns.AddRoute(netip.MustParsePrefix("169.254.1.1/32"), netip.Addr{}, "eth0"))
	must(t, p.netns.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("169.254.1.1"), "eth0"))

	k8sPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k8sNs, Labels: labels},
		Spec: corev1.PodSpec{NodeName: n.name, ServiceAccountName: "pods", AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "app", Image: "example.com/app",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
	}
	created, err := e.cs.CoreV1().Pods(k8sNs).Create(ctx, k8sPod, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() {
		err := e.cs.CoreV1().Pods(k8sNs).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete pod %s/%s: %v", k8sNs, name, err)
		}
	})
	created.Status.Phase = corev1.PodRunning
	created.Status.PodIP = p.ip.String()
	created.Status.PodIPs = []corev1.PodIP{{IP: p.ip.String()}}
	_, err = e.cs.CoreV1().Pods(k8sNs).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	must(t, err)
	return p
}

// serve answers TCP connections on port in the pod with "ok" until the
// test ends.
func (p *pod) serve(t *testing.T, port int) {
	t.Helper()
	var ln net.Listener
	must(t, p.netns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
}

// connect reports whether a TCP connection from p to dst:port gets the
// server's answer within a second (a dropped SYN times out).
func (p *pod) connect(dst *pod, port int) error {
	return p.netns.Do(func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(dst.ip, uint16(port)).String(), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if string(b) != "ok" {
			return fmt.Errorf("answer %q", b)
		}
		return nil
	})
}

// expectTraffic waits until a connection from src to dst:port succeeds
// (allowed) or fails (not allowed) three times in a row: policy reaches
// the kernel a little after the apiserver accepted it.
func expectTraffic(t *testing.T, src, dst *pod, port int, allowed bool) {
	t.Helper()
	what := fmt.Sprintf("%s -> %s:%d (%s) allowed=%v", src.name, dst.name, port, dst.ip, allowed)
	streak := 0
	var last error
	deadline := time.Now().Add(20 * time.Second)
	for streak < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so within 20s (last: %v)", what, last)
		}
		last = src.connect(dst, port)
		if (last == nil) == allowed {
			streak++
		} else {
			streak = 0
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("%s: ok", what)
}

// protoRoutes returns the routes control/routes installed in n
// (protocol 116), as `ip route` prints them.
func protoRoutes(t *testing.T, n *node) string {
	t.Helper()
	out, err := n.ns.Run("ip", "-4", "route", "show", "proto", "116")
	must(t, err)
	return out
}

// applyYAML decodes documents and applies them through s.
func applyYAML(t *testing.T, s *agent.Store, doc string) []agent.Object {
	t.Helper()
	objs, err := agent.Decode([]byte(doc))
	must(t, err)
	var out []agent.Object
	for _, o := range objs {
		o.Default()
		stored, _, err := s.Apply(context.Background(), o)
		if err != nil {
			t.Fatalf("apply %s: %v", agent.KeyOfObject(o), err)
		}
		out = append(out, stored)
	}
	return out
}

// errorIs fails unless err matches target.
func errorIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

// contains fails unless s holds every one of subs.
func contains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Fatalf("%s: no %q in:\n%s", what, sub, s)
		}
	}
}
