package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
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

// labCase is one lab configuration of the e2e matrix.
type labCase struct {
	name      string
	dataplane string // kernel, afxdp, or a list given to the nodes in turn
	encap     string
	nodes     int
	// checks for `lab check --checks`; cycles for `lab pods` (0: not run).
	checks string
	cycles int
}

// labCases is the e2e matrix. Every case brings a lab up, runs `lab status`
// and `lab check` (and `lab pods`), and takes it down leaving nothing.
var labCases = []labCase{
	{name: "kernel-vxlan", dataplane: "kernel", encap: "vxlan", nodes: 3, checks: "all", cycles: 100},
	{name: "kernel-vxlan-crosssubnet", dataplane: "kernel", encap: "vxlan-crosssubnet", nodes: 3,
		checks: "matrix,policy,mtu,iperf3"},
	{name: "kernel-none-bird", dataplane: "kernel", encap: "none", nodes: 3, checks: "all"},
	// mixed: n1, n3 kernel on subnet 1, n2, n4 afxdp on subnet 2,
	// so the kernel's VXLAN device is the peer of Tabby's encap, and
	// iperf3 compares the two dataplanes in one run.
	{name: "afxdp-vxlan", dataplane: "afxdp", encap: "vxlan", nodes: 3, checks: "all", cycles: 100},
	{name: "mixed-vxlan", dataplane: "kernel,afxdp", encap: "vxlan", nodes: 4, checks: "all"},
	{name: "afxdp-ipip", dataplane: "afxdp", encap: "ipip", nodes: 3, checks: "matrix,policy,mtu,iperf3"},
	{name: "mixed-none-bird", dataplane: "kernel,afxdp", encap: "none", nodes: 4, checks: "all"},
	{name: "afxdp-none-bird", dataplane: "afxdp", encap: "none", nodes: 3, checks: "matrix,policy,mtu"},
}

// labRunning are the cases TestLab runs; TABBY_LAB_CASES (comma-separated
// names, or "all") replaces it, e.g. to try the afxdp cases by hand.
var labRunning = []string{"kernel-vxlan", "kernel-vxlan-crosssubnet", "kernel-none-bird", "afxdp-vxlan", "mixed-vxlan",
	"afxdp-ipip", "mixed-none-bird", "afxdp-none-bird"}

// TestLab is the e2e suite: for each running case a lab comes up (agents as
// processes, pods through the CNI plugin, two subnets), `lab check` runs the
// connectivity matrix, the policy scenarios, the MTU check, iperf3 and (with
// "all") an agent SIGKILL-and-restart during a TCP stream, `lab pods` cycles
// pods and checks for leaks, and `lab down` leaves no namespace, process or
// state file. Figures (iperf3, CNI latency) are logged, never judged.
func TestLab(t *testing.T) {
	requireLabTools(t)
	t.Setenv(envLabTestExec, "1")
	cniDir := buildCNIPlugin(t)
	names := labRunning
	if v := os.Getenv("TABBY_LAB_CASES"); v == "all" {
		names = nil
		for _, c := range labCases {
			names = append(names, c.name)
		}
	} else if v != "" {
		names = strings.Split(v, ",")
	}
	for _, n := range names {
		var tc *labCase
		for i := range labCases {
			if labCases[i].name == n {
				tc = &labCases[i]
			}
		}
		if tc == nil {
			t.Fatalf("no lab case %q", n)
		}
		t.Run(tc.name, func(t *testing.T) { runLabCase(t, *tc, cniDir) })
	}
}

func requireLabTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	// Installed by scripts/deps.sh (make deps): missing ones fail the test.
	for _, b := range []string{"ip", "ping", "go", "nft", "iperf3", "bird", "birdc"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("needs %s (scripts/deps.sh installs it)", b)
		}
	}
}

// buildCNIPlugin builds cmd/tabby-cni once for every lab of the test.
func buildCNIPlugin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "tabby-cni"),
		"github.com/tabbynet/tabby/cmd/tabby-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("build tabby-cni: %v\n%s", err, out)
	}
	return dir
}

// labRunner runs `tabby lab <args> --name <name>` in this process.
func labRunner(t *testing.T, name string) func(args ...string) (int, string, string) {
	return func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		code := run(ctx, append([]string{"lab"}, append(args, "--name", name)...), &out, &errb)
		return code, out.String(), errb.String()
	}
}

func runLabCase(t *testing.T, tc labCase, cniDir string) {
	name := fmt.Sprintf("t%d-%d", os.Getpid(), slices.IndexFunc(labCases, func(c labCase) bool { return c.name == tc.name }))
	labRun := labRunner(t, name)
	downed := false
	t.Cleanup(func() {
		if !downed {
			if t.Failed() {
				for _, f := range []string{"lab.log", "n1.log", "n2.log", "bird.log"} {
					if b, err := os.ReadFile(filepath.Join(lab.Dir(name), f)); err == nil {
						t.Logf("%s:\n%s", f, lastLines(string(b), 40))
					}
				}
			}
			labRun("down")
		}
	})
	t0 := time.Now()
	code, out, errs := labRun("up", "--nodes", fmt.Sprint(tc.nodes), "--subnets", "2", "--pods-per-node", "2",
		"--dataplane", tc.dataplane, "--encap", tc.encap, "--timeout", "90s", "--cni-bin", cniDir)
	if code != 0 {
		t.Fatalf("lab up: exit %d\n%s\n%s", code, out, errs)
	}
	t.Logf("up in %s:\n%s", time.Since(t0).Round(time.Millisecond), out)
	st, err := lab.LoadState(name)
	if err != nil {
		t.Fatal(err)
	}
	pods := tc.nodes * 2
	if len(st.Nodes) != tc.nodes || len(st.Pods) != pods || !st.Alive() {
		t.Fatalf("state: %d nodes, %d pods, alive %v", len(st.Nodes), len(st.Pods), st.Alive())
	}
	if tc.encap == "none" && (st.BIRD == nil || !strings.Contains(out, fmt.Sprintf("%d/%d BGP sessions established",
		tc.nodes, tc.nodes))) {
		t.Errorf("encap none across subnets: no router BIRD with every session established:\n%s", out)
	}

	code, out, errs = labRun("status")
	if code != 0 || strings.Count(out, " ready ") != tc.nodes {
		t.Errorf("lab status: exit %d\n%s\n%s", code, out, errs)
	}

	t0 = time.Now()
	code, out, errs = labRun("check", "--checks", tc.checks, "--iperf-time", "2s", "--json")
	t.Logf("check (%s):\n%s", time.Since(t0).Round(time.Millisecond), errs)
	if code != 0 {
		t.Fatalf("lab check: exit %d\n%s", code, out)
	}
	pairs := pods * (pods - 1)
	if !regexp.MustCompile(fmt.Sprintf(`\nmatrix +ok +%d/%d pass`, 3*pairs, 3*pairs)).MatchString(errs) {
		t.Errorf("check: no passing matrix row for %d probes", 3*pairs)
	}
	var want []string
	if tc.checks == "all" || strings.Contains(tc.checks, "policy") {
		for _, sc := range lab.PolicyScenarios() {
			want = append(want, fmt.Sprintf("policy %s", sc.Name))
		}
		want = append(want, "policy removed: matrix")
	}
	if tc.checks == "all" || strings.Contains(tc.checks, "mtu") {
		want = append(want, "mtu other-subnet", "mtu other-node")
	}
	if tc.checks == "all" {
		want = append(want, "restart: endpoints", "restart: matrix")
		if tc.dataplane == "kernel" {
			want = append(want, "kept flowing")
		}
	}
	for _, w := range want {
		if !strings.Contains(errs, w) {
			t.Errorf("check output lacks %q", w)
		}
	}
	if strings.Contains(errs, "FAIL") {
		t.Errorf("check output has a FAIL row")
	}
	figs := parseFigures(t, out)
	if tc.checks == "all" || strings.Contains(tc.checks, "iperf3") {
		n := 0
		for _, f := range figs {
			if strings.HasPrefix(f.Case, "iperf3-") && f.Metric == "throughput" && f.Unit == "Gbit/s" && f.Value > 0 {
				n++
			}
		}
		if n < 3 {
			t.Errorf("want iperf3 figures for same-node, other-node and other-subnet, have %+v", figs)
		}
	}

	if tc.cycles > 0 {
		t0 = time.Now()
		code, out, errs = labRun("pods", "--cycles", fmt.Sprint(tc.cycles), "--json")
		t.Logf("pods (%s):\n%s", time.Since(t0).Round(time.Millisecond), errs)
		if code != 0 {
			t.Fatalf("lab pods: exit %d\n%s", code, out)
		}
		got := map[string]bool{}
		for _, f := range parseFigures(t, out) {
			if f.Suite == "lab" && f.Unit == "ms" && f.Value > 0 {
				got[f.Case+"/"+f.Metric] = true
			}
		}
		for _, c := range []string{"cni-add", "cni-del", "add-to-first-packet"} {
			for _, m := range []string{"p50", "p99"} {
				if !got[c+"/"+m] {
					t.Errorf("lab pods: no figure %s %s in\n%s", c, m, out)
				}
			}
		}
		for _, w := range []string{"leak: IPAM", "leak: veths", "leak: routes", "leak: nftables", "leak: conntrack",
			"leak: agent endpoints", "leak: workload endpoints"} {
			if !strings.Contains(errs, w) {
				t.Errorf("lab pods output lacks %q", w)
			}
		}
	}

	pids := []int{st.PID, st.EtcdPID}
	if st.BIRD != nil {
		pids = append(pids, st.BIRD.PID)
	}
	st2, _ := lab.LoadState(name) // agents restarted by the check have new PIDs
	for _, n := range append(st.Nodes, st2.Nodes...) {
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

// TestLabRefusesKernelIPIP: IP-in-IP with the kernel dataplane needs the
// kernel's ipip module; without it `lab up` refuses before building
// anything, naming the reason and the alternatives. (With the module, the
// lab must come up and pass its matrix.)
func TestLabRefusesKernelIPIP(t *testing.T) {
	requireLabTools(t)
	t.Setenv(envLabTestExec, "1")
	name := fmt.Sprintf("t%d-ipip", os.Getpid())
	labRun := labRunner(t, name)
	t.Cleanup(func() { labRun("down") })
	supported := lab.IPIPSupported()
	if supported == nil {
		code, out, errs := labRun("up", "--nodes", "2", "--encap", "ipip", "--dataplane", "kernel", "--cni-bin",
			buildCNIPlugin(t))
		if code != 0 {
			t.Fatalf("this kernel has ipip, but lab up failed: %s\n%s", out, errs)
		}
		if code, out, errs = labRun("check", "--checks", "matrix"); code != 0 {
			t.Fatalf("lab check with kernel IP-in-IP: %s\n%s", out, errs)
		}
		return
	}
	code, out, errs := labRun("up", "--nodes", "2", "--encap", "ipip", "--dataplane", "kernel")
	if code == 0 {
		t.Fatalf("lab up --encap ipip --dataplane kernel succeeded without an ipip module:\n%s", out)
	}
	for _, w := range []string{"ipip", "IP-in-IP", "--dataplane afxdp", "--encap vxlan"} {
		if !strings.Contains(errs, w) {
			t.Errorf("error lacks %q: %s", w, errs)
		}
	}
	if _, err := os.Stat(lab.Dir(name)); err == nil {
		t.Errorf("a refused lab left %s", lab.Dir(name))
	}
	// A mixed lab with one kernel node is refused too; all-afxdp is not
	// (checked by Validate/Preflight alone: the afxdp agent cannot run
	// pods yet).
	for _, dp := range []string{"kernel,afxdp", "afxdp,kernel"} {
		cfg := lab.Config{Nodes: 2, Subnets: 2, Dataplane: dp, Encap: "ipip"}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Preflight(); err == nil {
			t.Errorf("dataplane %s, encap ipip: preflight passed", dp)
		}
	}
	cfg := lab.Config{Nodes: 2, Subnets: 2, Dataplane: "afxdp", Encap: "ipip"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Preflight(); err != nil {
		t.Errorf("dataplane afxdp, encap ipip: %v", err)
	}
}

func parseFigures(t *testing.T, out string) []lab.Figure {
	t.Helper()
	var figs []lab.Figure
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var f lab.Figure
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			t.Errorf("not a JSON figure: %q: %v", l, err)
			continue
		}
		figs = append(figs, f)
	}
	return figs
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
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
