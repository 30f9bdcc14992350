package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
)

// lab is one node for an agent, built with bench/topo and removed in
// t.Cleanup:
//
//	peer  p0 192.168.50.2/24 ── up0 192.168.50.1/24  node  tabpod1 ── pod0  pod
//
// (interface names that the host has not, as nstest.OpenRaw looks names
// up in /sys). The agent's engine runs in node on up0 (the uplink) and tabpod1 (a pod's
// host-side veth, created before the agent so that the engine owns it).
type lab struct {
	t               *testing.T
	tp              *topo.Topology
	node, peer, pod *topo.Netns
	// MACs of node/eth0, peer/p0, node/tabpod1, pod/eth0.
	nodeMAC, peerMAC, vethMAC, podMAC net.HardwareAddr
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, XDP and AF_XDP sockets")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
}

// nodeAndPeer creates the namespaces "node" and "peer" of tp joined by a
// veth (node/up0 = <subnet>.1/24, peer/p0 = <subnet>.2/24), with IPv4
// forwarding off on the node as on a fresh host: the agent turns it on.
func nodeAndPeer(t *testing.T, tp *topo.Topology, subnet string) (node, peer *topo.Netns) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	node, err = tp.Namespace("node")
	must(err)
	peer, err = tp.Namespace("peer")
	must(err)
	_, _, err = tp.Veth(node, "up0", peer, "p0", 1500)
	must(err)
	must(node.AddAddr("up0", netip.MustParsePrefix(subnet+".1/24")))
	must(peer.AddAddr("p0", netip.MustParsePrefix(subnet+".2/24")))
	must(node.Sysctl("net.ipv4.ip_forward", "0"))
	return node, peer
}

func newLab(t *testing.T) *lab {
	t.Helper()
	requireRoot(t)
	l := &lab{t: t, tp: topo.ForTest(t, "tbag")}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	l.node, l.peer = nodeAndPeer(t, l.tp, "192.168.50")
	l.pod, err = l.tp.Namespace("pod")
	must(err)
	_, _, err = l.tp.Veth(l.node, "tabpod1", l.pod, "pod0", 1500)
	must(err)
	for _, x := range []struct {
		ns  *topo.Netns
		ifn string
		mac *net.HardwareAddr
	}{{l.node, "up0", &l.nodeMAC}, {l.peer, "p0", &l.peerMAC}, {l.node, "tabpod1", &l.vethMAC}, {l.pod, "pod0", &l.podMAC}} {
		*x.mac, err = x.ns.MAC(x.ifn)
		must(err)
	}
	return l
}

// raw opens a packet socket on ifname in n (closed in t.Cleanup).
func (l *lab) raw(n *topo.Netns, ifname string) *nstest.Raw {
	return nstest.OpenRaw(l.t, &nstest.NS{Name: n.Name}, ifname)
}

// xdpAttached reports whether ifname in n has an XDP program.
func (l *lab) xdpAttached(n *topo.Netns, ifname string) bool {
	l.t.Helper()
	link, err := n.Link(ifname)
	if err != nil {
		l.t.Fatal(err)
	}
	x := link.Attrs().Xdp
	return x != nil && (x.Attached || x.ProgId != 0)
}

// udpFrame builds an Ethernet frame of a UDP datagram from the peer.
func (l *lab) udpFrame(t *testing.T, dst netip.Addr, port uint16, payload string) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: l.peerMAC, DstMAC: l.nodeMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(192, 168, 50, 2).To4(),
		DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(port)}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func hasPayload(p string) func([]byte) bool {
	return func(b []byte) bool {
		pk := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
		app := pk.ApplicationLayer()
		return app != nil && bytes.HasPrefix(app.Payload(), []byte(p))
	}
}

// testLogger logs to the test at Warn (Debug with -v).
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// agentFlags are the configuration of a lab agent, as flags; extra
// overrides.
func (l *lab) agentFlags(t *testing.T, endpoints []string, prefix string, extra map[string]string) map[string]string {
	dir := t.TempDir()
	f := map[string]string{
		"node-name": "n1", "etcd-endpoints": strings.Join(endpoints, ","), "etcd-prefix": prefix,
		"state-dir": dir, "dataplane": "afxdp", "interfaces": "up0,tabpod1", "xdp-mode": "native",
		"ipv4-pool-cidr": "10.65.0.0/16", "health-listen": "127.0.0.1:0", "metrics-listen": "127.0.0.1:0",
		"cni-socket": filepath.Join(dir, "agent.sock"), "debounce": "10ms", "log-level": "debug",
	}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

// startAgent starts an agent in the lab's node namespace, closed in
// t.Cleanup (before the topology is removed).
func (l *lab) startAgent(t *testing.T, flags map[string]string) *Agent {
	t.Helper()
	fl, err := FlagLayer(flags)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := Start(ctx, Options{Layers: []*ConfigLayer{fl}, Logger: testLogger(t), Netns: l.node.Handle(),
		ProbeInterval: 300 * time.Millisecond, StartTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("close agent: %v", err)
		}
	})
	return a
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady polls /readyz until its status is want.
func waitReady(t *testing.T, a *Agent, want int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body := httpGet(t, "http://"+a.Addr("health")+"/readyz")
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q after %s, want %d", code, body, within, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agentGoroutines returns the stacks of goroutines running agent,
// engine, BGP or etcd client code.
func agentGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		// The test, and the shared etcd server's own goroutines.
		if strings.Contains(g, "testing.tRunner") || strings.Contains(g, "agentGoroutines") ||
			strings.Contains(g, "go.etcd.io/etcd/server/") {
			continue
		}
		for _, pkg := range []string{"tabby/control/agent.", "tabby/datapath/", "tabby/control/bgp.",
			"etcd/client/v3.", "net/http.(*Server)", "net/http.(*persistConn)"} {
			if strings.Contains(g, pkg) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
