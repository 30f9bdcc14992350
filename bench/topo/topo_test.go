package topo

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

func TestTopologyPingAndClose(t *testing.T) {
	tp := ForTest(t, "tt")
	a, err := tp.Namespace("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := tp.Namespace("b")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tp.Veth(a, "eth0", b, "eth0", 1400); err != nil {
		t.Fatal(err)
	}
	if err := a.AddAddr("eth0", netip.MustParsePrefix("10.99.0.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := b.AddAddr("eth0", netip.MustParsePrefix("10.99.0.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := a.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if out, err := a.Run("cat", "/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("ip_forward in a = %q, %v", out, err)
	}
	if out, err := b.Run("cat", "/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(out) != "0" {
		t.Fatalf("sysctl leaked into b: ip_forward = %q, %v", out, err)
	}
	if out, err := a.Run("ping", "-c", "1", "-W", "2", "10.99.0.2"); err != nil {
		// ping may be missing; fall back to a TCP round trip is overkill here:
		// the netlink link state is what we check then.
		if _, lookErr := exec.LookPath("ping"); lookErr == nil {
			t.Fatalf("ping: %v\n%s", err, out)
		}
	}
	l, err := a.Link("eth0")
	if err != nil || l.Attrs().MTU != 1400 {
		t.Fatalf("link %v err %v, want MTU 1400", l, err)
	}
	cmd := a.Command(context.Background(), "sleep", "600")
	if err := tp.Start(cmd); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	if nsExists(a.Name) || nsExists(b.Name) {
		t.Fatal("namespaces left after Close")
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatal("process left running after Close")
	}
	if _, err := os.Stat(tp.statePath()); !os.IsNotExist(err) {
		t.Fatal("state file left after Close")
	}
	if err := tp.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCleanupStale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	tp, err := New("ts")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Close() })
	n, err := tp.Namespace("x")
	if err != nil {
		t.Fatal(err)
	}
	// Pretend the owner died: rewrite the state with a PID that cannot exist.
	tp.st.PID = 1 << 30
	if err := tp.save(); err != nil {
		t.Fatal(err)
	}
	cleaned, err := Cleanup()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range cleaned {
		found = found || c == tp.Name
	}
	if !found || nsExists(n.Name) {
		t.Fatalf("Cleanup cleaned %v, namespace still there: %v", cleaned, nsExists(n.Name))
	}
	// A live topology is left alone.
	live := ForTest(t, "tl")
	ln, err := live.Namespace("y")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Cleanup(); err != nil {
		t.Fatal(err)
	}
	if !nsExists(ln.Name) {
		t.Fatal("Cleanup removed a live topology")
	}
	b, _ := os.ReadFile(live.statePath())
	var st state
	if err := json.Unmarshal(b, &st); err != nil || len(st.Namespaces) != 1 {
		t.Fatalf("state file %s: %v", b, err)
	}
}
