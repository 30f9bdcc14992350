package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/control/resources"
)

// needBIRD returns the paths of bird and birdc, installing Debian's bird2
// if they are missing; it skips the test if that fails.
func needBIRD(t *testing.T) (bird, birdc string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	find := func() bool {
		var err1, err2 error
		bird, err1 = exec.LookPath("bird")
		birdc, err2 = exec.LookPath("birdc")
		return err1 == nil && err2 == nil
	}
	if find() {
		return
	}
	t.Log("bird2 not installed; installing it with apt-get")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	apt := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	out, err := apt("install", "-y", "bird2")
	if err != nil { // perhaps stale package lists
		apt("update")
		out, err = apt("install", "-y", "bird2")
	}
	if err != nil || !find() {
		t.Skipf("BIRD 2 is not installed and `apt-get install -y bird2` failed (%v): %s", err, lastLines(string(out), 5))
	}
	return
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// birdInstance is a BIRD daemon in a namespace.
type birdInstance struct {
	t     *testing.T
	birdc string
	sock  string
	log   string
}

// startBIRD writes cfg to a temporary directory and runs BIRD in the
// foreground in n (killed when the topology closes).
func startBIRD(t *testing.T, tp *topo.Topology, n *topo.Netns, bird, birdc, cfg string) *birdInstance {
	t.Helper()
	dir := t.TempDir()
	b := &birdInstance{t: t, birdc: birdc, sock: filepath.Join(dir, "bird.ctl"), log: filepath.Join(dir, "bird.log")}
	conf := filepath.Join(dir, "bird.conf")
	cfg = strings.ReplaceAll(cfg, "@LOG@", b.log)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := n.Command(context.Background(), bird, "-f", "-c", conf, "-s", b.sock)
	out := &lockedWriter{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := tp.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logb, _ := os.ReadFile(b.log)
			t.Logf("bird output:\n%s\nbird log:\n%s", out.String(), lastLines(string(logb), 40))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.tryCmd("show", "status"); err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("bird did not start: %s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *birdInstance) tryCmd(args ...string) (string, error) {
	out, err := exec.Command(b.birdc, append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	return string(out), err
}

func (b *birdInstance) cmd(args ...string) string {
	b.t.Helper()
	out, err := b.tryCmd(args...)
	if err != nil {
		b.t.Fatalf("birdc %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// waitRoutes waits until `birdc show route` lists every prefix of want and
// none of unwanted, and returns its output.
func (b *birdInstance) waitRoutes(timeout time.Duration, want, unwanted []string) string {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := b.cmd("show", "route", "all")
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(out, w)
		}
		for _, u := range unwanted {
			ok = ok && !strings.Contains(out, u)
		}
		if ok {
			return out
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("bird routes after %v: want %q, not %q; have:\n%s", timeout, want, unwanted, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// birdTopology makes the namespaces of a test against BIRD (named by
// prefix): tabby (192.0.2.1/24) and bird (192.0.2.2/24), joined by a veth
// whose ends are both eth0.
func birdTopology(t *testing.T, prefix string) (tp *topo.Topology, tabby, bird *topo.Netns) {
	t.Helper()
	tp = topo.ForTest(t, prefix)
	tabby, err := tp.Namespace("tabby")
	if err != nil {
		t.Fatal(err)
	}
	bird, err = tp.Namespace("bird")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tp.Veth(tabby, "eth0", bird, "eth0", 1500); err != nil {
		t.Fatal(err)
	}
	if err := tabby.AddAddr("eth0", netip.MustParsePrefix("192.0.2.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := bird.AddAddr("eth0", netip.MustParsePrefix("192.0.2.2/24")); err != nil {
		t.Fatal(err)
	}
	return tp, tabby, bird
}

// md5Supported reports whether the kernel accepts TCP_MD5SIG in n.
func md5Supported(n *topo.Netns) error {
	return n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sig := unix.TCPMD5Sig{Keylen: 4}
		copy(sig.Key[:], "test")
		sig.Addr.Family = unix.AF_INET
		copy(sig.Addr.Data[2:], []byte{192, 0, 2, 2})
		return unix.SetsockoptTCPMD5Sig(fd, unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
	})
}

const birdConfig = `
log "@LOG@" all;
router id 192.0.2.2;
protocol device { scan time 10; }
protocol static static1 {
	ipv4;
	route 203.0.113.0/24 blackhole;
}
protocol static static2 {
	ipv4;
	route 198.51.100.0/25 blackhole;
}
protocol bgp tabby {
	local 192.0.2.2 as 65001;
	neighbor 192.0.2.1 as 64512;
	%s
	graceful restart on;
	connect delay time 1;
	connect retry time 2;
	error wait time 1, 4;
	ipv4 {
		import all;
		export where source = RTS_STATIC;
	};
}
`

// TestBIRDInterop runs Tabby's speaker and BIRD 2 in two namespaces joined
// by a veth (192.0.2.1 Tabby, AS 64512; 192.0.2.2 BIRD, AS 65001), eBGP:
// the session establishes with graceful restart negotiated, each learns the
// other's routes, withdrawals propagate both ways; and the same with a
// TCP-MD5 password.
func TestBIRDInterop(t *testing.T) {
	bird, birdc := needBIRD(t)
	for _, tc := range []struct{ name, password string }{{"plain", ""}, {"md5", "tabby-md5-secret"}} {

		t.Run(tc.name, func(t *testing.T) {
			tp, tn, bn := birdTopology(t, "bgpb")
			extra := ""
			if tc.password != "" {
				if err := md5Supported(tn); err != nil {
					t.Skipf("TCP-MD5 not supported by this kernel (setsockopt TCP_MD5SIG: %v)", err)
				}
				extra = fmt.Sprintf("password %q;", tc.password)
			}
			b := startBIRD(t, tp, bn, bird, birdc, fmt.Sprintf(birdConfig, extra))

			// Tabby's desired state, computed from resources as the agent will.
			res := Resources{
				Node:    "tabby-1",
				Nodes:   []*resources.Node{node("tabby-1", "192.0.2.1/24", nil)},
				Configs: []*resources.BGPConfiguration{defaultConfig(64512, true, 0)},
				Peers: []*resources.BGPPeer{{ObjectMeta: resources.ObjectMeta{Name: "bird"},
					Spec: resources.BGPPeerSpec{PeerIP: "192.0.2.2", ASNumber: 65001}}},
				Affinities: []*resources.BlockAffinity{
					affinity("tabby-1", "10.65.0.0/26", resources.AffinityConfirmed),
					affinity("tabby-1", "10.65.0.64/26", resources.AffinityConfirmed),
				},
			}
			if tc.password != "" {
				res.Peers[0].Spec.Password = &resources.BGPPassword{Value: tc.password}
			}
			sp := startNsSpeaker(t, tp, tn)
			start := time.Now()
			sp.reconcile(mustCompute(t, res))
			ps := sp.waitEstablished(netip.MustParseAddr("192.0.2.2"), 30*time.Second)
			t.Logf("established in %v: %+v", time.Since(start).Round(time.Millisecond), ps)

			proto := b.cmd("show", "protocols", "all", "tabby")
			t.Logf("birdc show protocols all tabby:\n%s", proto)
			for _, w := range []string{"Established", "Neighbor AS:      64512", "Graceful restart"} {
				if !strings.Contains(proto, w) {
					t.Errorf("birdc show protocols all tabby: missing %q:\n%s", w, proto)
				}
			}

			// Tabby's blocks in BIRD, BIRD's static routes in Tabby.
			routes := b.waitRoutes(10*time.Second, []string{"10.65.0.0/26", "10.65.0.64/26", "AS64512"}, nil)
			t.Logf("birdc show route all:\n%s", routes)
			sp.rec.waitFor(10*time.Second, "BIRD's static routes", hasExactly(map[string]string{
				"203.0.113.0/24": "192.0.2.2", "198.51.100.0/25": "192.0.2.2"}))

			// Withdrawal, Tabby → BIRD.
			res.Affinities = res.Affinities[:1]
			sp.reconcile(mustCompute(t, res))
			b.waitRoutes(10*time.Second, []string{"10.65.0.0/26"}, []string{"10.65.0.64/26"})

			// Withdrawal, BIRD → Tabby.
			b.cmd("disable", "static2")
			sp.rec.waitFor(10*time.Second, "198.51.100.0/25 withdrawn", hasExactly(map[string]string{"203.0.113.0/24": "192.0.2.2"}))

			st := sp.status()
			if p := st.Peers[0]; p.Received != 1 || p.Accepted != 1 || p.Advertised != 1 || p.ASN != 65001 {
				t.Errorf("status %+v", p)
			}
			sp.rec.checkNoDuplicates()
			if tc.password != "" {
				return
			}

			// Graceful restart: Tabby's speaker crashes; BIRD keeps its
			// route (stale) instead of withdrawing it, and the restarted
			// speaker takes over without a gap.
			sp.kill()
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				b.waitRoutes(time.Millisecond, []string{"10.65.0.0/26"}, nil)
				time.Sleep(200 * time.Millisecond)
			}
			proto = b.cmd("show", "protocols", "all", "tabby")
			if strings.Contains(proto, "Established") {
				t.Errorf("session still established after the speaker was killed:\n%s", proto)
			}
			t.Logf("2s after the speaker was killed, BIRD still routes 10.65.0.0/26; protocol:\n%s", lastLines(proto, 12))
			sp2 := startNsSpeaker(t, tp, tn)
			sp2.reconcile(mustCompute(t, res))
			sp2.waitEstablished(netip.MustParseAddr("192.0.2.2"), 30*time.Second)
			b.waitRoutes(10*time.Second, []string{"10.65.0.0/26"}, nil)
			sp2.rec.waitFor(10*time.Second, "BIRD's route again", hasExactly(map[string]string{"203.0.113.0/24": "192.0.2.2"}))
		})
	}
}

// TestBIRDMD5Mismatch: with different TCP-MD5 keys the session never comes
// up (the kernel drops the unsigned or badly signed segments), which shows
// the password is in force.
func TestBIRDMD5Mismatch(t *testing.T) {
	bird, birdc := needBIRD(t)
	tp, tn, bn := birdTopology(t, "bgpm")
	if err := md5Supported(tn); err != nil {
		t.Skipf("TCP-MD5 not supported by this kernel (setsockopt TCP_MD5SIG: %v)", err)
	}
	b := startBIRD(t, tp, bn, bird, birdc, fmt.Sprintf(birdConfig, `password "birds-key";`))
	sp := startNsSpeaker(t, tp, tn)
	sp.reconcile(Desired{
		Global: Global{ASN: 64512, RouterID: netip.MustParseAddr("192.0.2.1"), ListenPort: 179,
			ListenAddresses: []netip.Addr{netip.MustParseAddr("192.0.2.1")}},
		Peers: []Peer{{Address: netip.MustParseAddr("192.0.2.2"), ASN: 65001, Password: "tabbys-key",
			LocalAddress: netip.MustParseAddr("192.0.2.1"), Source: SourceExplicit, Name: "bird"}},
	})
	time.Sleep(4 * time.Second)
	if st := sp.status(); st.Peers[0].Established {
		t.Fatalf("session established with mismatched MD5 keys: %+v", st.Peers[0])
	}
	if proto := b.cmd("show", "protocols", "tabby"); strings.Contains(proto, "Established") {
		t.Fatalf("bird: session established with mismatched MD5 keys:\n%s", proto)
	}
}
