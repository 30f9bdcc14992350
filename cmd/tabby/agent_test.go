package main

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
)

// lockedWriter collects the agent's log for the test.
type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestAgentCommand runs `tabby agent` configured by environment variables
// and a file, in a network namespace (TABBY_NETNS) with the afxdp
// dataplane; registers a pod through the endpoint API, applies and deletes
// a policy with `tabby apply` / `tabby delete` while packets from a peer
// show it deny and allow, reads `tabby status`, and stops the agent as
// SIGTERM does (context cancelled): it exits cleanly and detaches XDP.
func TestAgentCommand(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, XDP and AF_XDP sockets")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	tp := topo.ForTest(t, "tbcmd")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	node, err := tp.Namespace("node")
	must(err)
	peer, err := tp.Namespace("peer")
	must(err)
	pod, err := tp.Namespace("pod")
	must(err)
	_, _, err = tp.Veth(node, "up0", peer, "p0", 1500)
	must(err)
	_, _, err = tp.Veth(node, "tabpod1", pod, "pod0", 1500)
	must(err)
	must(node.AddAddr("up0", netip.MustParsePrefix("192.168.60.1/24")))
	must(node.Sysctl("net.ipv4.ip_forward", "0"))
	nodeMAC, err := node.MAC("up0")
	must(err)
	peerMAC, err := peer.MAC("p0")
	must(err)
	podMAC, err := pod.MAC("pod0")
	must(err)

	useEtcd(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	t.Setenv("TABBY_NETNS", node.Name)
	t.Setenv("TABBY_NODENAME", "cmd-node")
	t.Setenv("TABBY_CNI_SOCKET", sock)
	t.Setenv("TABBY_HEALTH_LISTEN", "127.0.0.1:0")
	t.Setenv("TABBY_METRICS_LISTEN", "off")
	t.Setenv("TABBY_IPV4POOL_CIDR", "10.66.0.0/16")
	t.Setenv("TABBY_DATAPLANE", "afxdp") // the file says kernel: the environment wins
	cfg := file(t, "dataplane: kernel\ninterfaces: [up0, tabpod1]\nstateDir: "+dir+"\ndebounce: 10ms\nlogLevel: info\n")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &lockedWriter{}
	go func() { done <- runAgent(ctx, []string{"--config", cfg, "--xdp-mode", "native"}, logs, logs) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("agent did not stop")
		}
		return nil
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})

	// Ready: `tabby status` exits 0.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out, errs := tabby(t, "status", "--agent", sock)
		if code == 0 {
			if !strings.Contains(out, "cmd-node (afxdp dataplane)") {
				t.Errorf("status:\n%s", out)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("agent exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready: %s %s", out, errs)
		}
		time.Sleep(100 * time.Millisecond)
	}

	cli := agent.NewClient(sock)
	resp, err := cli.AddEndpoint(ctx, agent.EndpointRequest{ContainerID: "cmd-c1", Namespace: "shop", Pod: "web-1",
		InterfaceName: "tabpod1", MAC: podMAC.String(), Labels: map[string]string{"app": "web"}})
	must(err)
	ip := netip.MustParsePrefix(resp.IPs[0]).Addr()
	if !netip.MustParsePrefix("10.66.0.0/16").Contains(ip) {
		t.Fatalf("address %s not from the default pool", ip)
	}
	code, out, errs := tabby(t, "get", "wep", "-n", "shop", "-o", "wide")
	expect(t, "get endpoints", code, out, errs, 0, []string{"cmd-node-k8s-web-1-eth0", ip.String() + "/32", "cmd-c1", "tabpod1"}, nil)

	podRaw := nstest.OpenRaw(t, &nstest.NS{Name: pod.Name}, "pod0")
	peerRaw := nstest.OpenRaw(t, &nstest.NS{Name: peer.Name}, "p0")
	forwards := func(payload string, within time.Duration) bool {
		t.Helper()
		eth := &layers.Ethernet{SrcMAC: peerMAC, DstMAC: nodeMAC, EthernetType: layers.EthernetTypeIPv4}
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(192, 168, 60, 2).To4(),
			DstIP: ip.AsSlice()}
		udp := &layers.UDP{SrcPort: 40000, DstPort: 7000}
		udp.SetNetworkLayerForChecksum(ip4)
		buf := gopacket.NewSerializeBuffer()
		must(gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip4, udp, gopacket.Payload(payload)))
		must(peerRaw.Send(buf.Bytes()))
		_, err := podRaw.Recv(within, func(b []byte) bool {
			app := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default).ApplicationLayer()
			return app != nil && bytes.HasPrefix(app.Payload(), []byte(payload))
		})
		return err == nil
	}
	if !forwards("open", 5*time.Second) {
		t.Fatal("packet to the pod not forwarded")
	}
	deny := file(t, `
apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata: {name: deny-peer, namespace: shop}
spec:
  selector: app == 'web'
  ingress:
  - action: Deny
    source: {nets: [192.168.60.0/24]}
  - action: Allow
`)
	code, out, errs = tabby(t, "apply", "-f", deny)
	expect(t, "apply deny", code, out, errs, 0, []string{`networkpolicy "shop/deny-peer" created`}, nil)
	deadline = time.Now().Add(5 * time.Second)
	for forwards("denied", 200*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the applied policy does not deny")
		}
	}
	code, out, errs = tabby(t, "delete", "-f", deny)
	expect(t, "delete deny", code, out, errs, 0, []string{`networkpolicy "shop/deny-peer" deleted`}, nil)
	deadline = time.Now().Add(5 * time.Second)
	for !forwards("allowed", 200*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("traffic not allowed again after the policy was deleted")
		}
	}
	code, out, errs = tabby(t, "status", "--agent", sock)
	expect(t, "status", code, out, errs, 0, []string{"Datastore:  etcd, synced", "Endpoints:  1 local",
		"drop policy", "IPAM blocks:", "Routes:"}, nil)

	if _, err := cli.DeleteEndpoint(ctx, "cmd-c1"); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("agent exit: %v", err)
	}
	for _, ifn := range []string{"up0", "tabpod1"} {
		l, err := node.Link(ifn)
		must(err)
		if x := l.Attrs().Xdp; x != nil && (x.Attached || x.ProgId != 0) {
			t.Errorf("XDP program left on %s", ifn)
		}
	}
	if !strings.Contains(logs.String(), "agent stopped") {
		t.Errorf("no shutdown in the log:\n%s", logs.String())
	}
}
