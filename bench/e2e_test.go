package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/bench/e2e"
)

// TestE2ESuiteQuick runs the e2e suite in quick mode (20k routes, 64-byte
// frames, ~1 s phases, policy-1000 but not policy-10000): every case,
// implementation and metric must be reported, both implementations must
// deliver traffic, the policy case must have passed its functional checks
// and let no denied frame through, and no namespace of the harness may
// remain.
func TestE2ESuiteQuick(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the e2e suite needs root (network namespaces, XDP, AF_XDP sockets)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: iproute2 (ip) not installed")
	}
	for _, env := range []string{EnvE2ESizes, EnvE2ECases, EnvE2EImpls, EnvE2EDuration, EnvE2ELatDuration, EnvE2EReps, EnvE2ERoutes, EnvE2EKernelRPS} {
		t.Setenv(env, "")
	}
	chart := filepath.Join(t.TempDir(), "e2e.svg")
	t.Setenv(EnvChart, chart)
	s, ok := Lookup("e2e")
	if !ok {
		t.Fatal("e2e suite not registered")
	}
	var progress strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 85*time.Second)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, s, Options{Quick: true, Progress: &progress})
	t.Logf("quick e2e took %v; progress:\n%s", time.Since(start).Round(time.Millisecond), progress.String())
	if errors.Is(err, e2e.ErrBusy) {
		t.Skipf("skipping: %v (a full run takes minutes)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	got := map[[3]string]float64{}
	for _, r := range res {
		if r.Suite != "e2e" {
			t.Errorf("result of suite %q", r.Suite)
		}
		got[[3]string{r.Case, r.Impl, r.Metric}] = r.Value
	}
	want, err := e2e.ExpectedResults(e2e.Quick())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("missing result %s/%s/%s", k[0], k[1], k[2])
		}
	}
	for _, c := range []string{"forward-64", "vxlan-encap-64", "vxlan-decap-64"} {
		for _, impl := range []string{e2e.ImplKernel, e2e.ImplAFXDP} {
			if v := got[[3]string{c, impl, e2e.MetricPPS}]; !(v > 0) {
				t.Errorf("%s %s delivered %v pps", c, impl, v)
			}
		}
	}
	if v := got[[3]string{"ipip-encap-64", e2e.ImplAFXDP, e2e.MetricPPS}]; !(v > 0) {
		t.Errorf("ipip-encap-64 afxdp delivered %v pps", v)
	}
	// policy-1000-64: afxdp always, kernel when nft is installed.
	if !slices.Contains(want, [3]string{"policy-1000-64", e2e.ImplAFXDP, e2e.MetricPPS}) {
		t.Error("quick run without policy-1000-64")
	}
	for _, impl := range []string{e2e.ImplKernel, e2e.ImplAFXDP} {
		key := func(m string) [3]string { return [3]string{"policy-1000-64", impl, m} }
		if !slices.Contains(want, key(e2e.MetricPPS)) {
			t.Logf("policy-1000-64 %s not run (nft not installed?)", impl)
			continue
		}
		if v := got[key(e2e.MetricPPS)]; !(v > 0) {
			t.Errorf("policy-1000-64 %s delivered %v pps", impl, v)
		}
		if v := got[key(e2e.MetricPolicyLoad)]; !(v > 0) {
			t.Errorf("policy-1000-64 %s loaded its policy in %v ms", impl, v)
		}
		if v := got[key(e2e.MetricDeniedSent)]; !(v > 1 && v < 10) {
			t.Errorf("policy-1000-64 %s: %v%% of the frames of denied flows, want about 5%%", impl, v)
		}
		if v := got[key(e2e.MetricDeniedLeak)]; v != 0 {
			t.Errorf("policy-1000-64 %s: %v%% of the denied frames reached the sink", impl, v)
		}
	}
	for _, impl := range []string{e2e.ImplKernel, e2e.ImplAFXDP} {
		if v := got[[3]string{e2e.CaseRouteLoad, impl, e2e.MetricRoutes}]; v != 20000 {
			t.Errorf("%s loaded %v routes, want 20000", impl, v)
		}
	}
	if b, err := os.ReadFile(chart); err != nil || !strings.Contains(string(b), "<svg") {
		t.Errorf("chart %s: %v", chart, err)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, e2e.Default().Prefix) {
			t.Errorf("namespace left behind: %s", line)
		}
	}
}

func TestE2EFromEnv(t *testing.T) {
	t.Setenv(EnvE2ESizes, "128, 512,64")
	t.Setenv(EnvE2ECases, "forward,vxlan-encap")
	t.Setenv(EnvE2EImpls, "afxdp")
	t.Setenv(EnvE2EDuration, "2s")
	t.Setenv(EnvE2ELatDuration, "1s")
	t.Setenv(EnvE2EReps, "5")
	t.Setenv(EnvE2ERoutes, "1000")
	t.Setenv(EnvE2EKernelRPS, "0")
	cfg := e2e.Default()
	if err := e2eFromEnv(&cfg); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(cfg.Sizes) != "[64 1500 128 512]" || fmt.Sprint(cfg.PolicySizes) != "[64 128 512]" ||
		fmt.Sprint(cfg.Families) != "[forward vxlan-encap]" ||
		fmt.Sprint(cfg.Impls) != "[afxdp]" || cfg.Duration != 2*time.Second || cfg.LatencyDuration != time.Second ||
		cfg.Reps != 5 || cfg.Routes != 1000 || !cfg.NoKernelRPS {
		t.Errorf("config from env: %+v", cfg)
	}
	t.Setenv(EnvE2ESizes, "=256")
	cfg = e2e.Default()
	if err := e2eFromEnv(&cfg); err != nil || fmt.Sprint(cfg.Sizes) != "[256]" || fmt.Sprint(cfg.PolicySizes) != "[256]" {
		t.Errorf("replacing sizes: %v %v %v", cfg.Sizes, cfg.PolicySizes, err)
	}
	t.Setenv(EnvE2ESizes, "")
	t.Setenv(EnvE2ECases, "policy-1000,policy-10000")
	cfg = e2e.Default()
	if err := e2eFromEnv(&cfg); err != nil || fmt.Sprint(cfg.Families) != "[policy-1000 policy-10000]" {
		t.Errorf("policy cases: %v %v", cfg.Families, err)
	}
	t.Setenv(EnvE2EReps, "many")
	if err := e2eFromEnv(&cfg); err == nil {
		t.Error("bad reps accepted")
	}
}
