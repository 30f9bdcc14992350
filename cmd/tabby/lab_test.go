package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/bench/lab"
)

// envLabTestExec makes the test binary act as the tabby binary: the lab
// runs os.Executable() for its supervisor, etcd and agents, which in a test
// is this binary.
const envLabTestExec = "LABTEST_TABBY_EXEC"

func init() {
	if os.Getenv(envLabTestExec) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
}

// TestLab brings a 3-node lab up (kernel dataplane, VXLAN, two subnets,
// agents as processes, pods through the CNI plugin), runs the connectivity
// matrix, and takes it down: no namespace, process or state file is left.
func TestLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	for _, b := range []string{"ip", "ping", "go"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("needs %s", b)
		}
	}
	t.Setenv(envLabTestExec, "1")
	name := fmt.Sprintf("t%d", os.Getpid())
	labRun := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		code := run(ctx, append([]string{"lab"}, append(args, "--name", name)...), &out, &errb)
		return code, out.String(), errb.String()
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			if t.Failed() {
				if b, err := os.ReadFile(lab.Dir(name) + "/lab.log"); err == nil {
					t.Logf("lab.log:\n%s", b)
				}
			}
			labRun("down")
		}
	})
	t0 := time.Now()
	code, out, errs := labRun("up", "--nodes", "3", "--subnets", "2", "--pods-per-node", "2", "--dataplane", "kernel",
		"--encap", "vxlan", "--timeout", "90s")
	if code != 0 {
		t.Fatalf("lab up: exit %d\n%s\n%s", code, out, errs)
	}
	t.Logf("up in %s:\n%s", time.Since(t0).Round(time.Millisecond), out)
	st, err := lab.LoadState(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 || len(st.Pods) != 6 || !st.Alive() {
		t.Fatalf("state: %d nodes, %d pods, alive %v", len(st.Nodes), len(st.Pods), st.Alive())
	}

	code, out, errs = labRun("status")
	if code != 0 || strings.Count(out, " ready ") != 3 {
		t.Errorf("lab status: exit %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = labRun("check")
	if code != 0 {
		t.Fatalf("lab check: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"Summary: 90/90 checks passed", "same-node 18/18", "other-node 24/24", "other-subnet 48/48"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("check:\n%s", out)

	pids := []int{st.PID, st.EtcdPID}
	for _, n := range st.Nodes {
		pids = append(pids, n.PID)
	}
	code, out, errs = labRun("down")
	downed = true
	if code != 0 {
		t.Fatalf("lab down: exit %d\n%s\n%s", code, out, errs)
	}
	nss, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(nss), st.Topology) {
		t.Errorf("namespaces left:\n%s", nss)
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
			t.Errorf("process %d still runs", pid)
		}
	}
	if _, err := os.Stat(lab.Dir(name)); err == nil {
		t.Errorf("%s left", lab.Dir(name))
	}
	if _, err := os.Stat("/run/tabby/topo/" + st.Topology + ".json"); err == nil {
		t.Errorf("topology state file of %s left", st.Topology)
	}
	// Down again is a no-op.
	if code, out, errs = labRun("down"); code != 0 || !strings.Contains(out, "nothing to remove") {
		t.Errorf("second down: exit %d\n%s\n%s", code, out, errs)
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}
