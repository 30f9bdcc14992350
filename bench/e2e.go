package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tabbynet/tabby/bench/e2e"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

func init() {
	Register(Suite{
		Name: "e2e",
		Doc: "end to end, gen -> dut -> sink namespaces: kernel forwarding vs the afxdp dataplane (pps, loss, latency, CPU); " +
			"cases forward, vxlan-encap, vxlan-decap, ipip-encap at 64 and 1500 bytes, and policy-1000, policy-10000 at 64 bytes " +
			"(network policy of 1k/10k rules: nftables rendered from the same model vs Tabby's classifiers); root",
		Run: runE2E,
	})
}

// Environment variables of the e2e suite (the bench command has no
// per-suite flags).
const (
	// EnvChart is where the SVG chart goes (default DefaultE2EChart).
	EnvChart = "TABBY_BENCH_CHART"
	// EnvE2ESizes adds or replaces frame sizes: "128,512" adds, "=64,128"
	// replaces. It applies to the routing/encapsulation cases (default 64
	// and 1500) and to the policy cases (default 64 only) alike.
	EnvE2ESizes = "TABBY_BENCH_E2E_SIZES"
	// EnvE2ECases restricts the case families (comma-separated: forward,
	// vxlan-encap, vxlan-decap, ipip-encap, policy-1000, policy-10000).
	EnvE2ECases = "TABBY_BENCH_E2E_CASES"
	// EnvE2EImpls restricts the implementations (kernel, afxdp).
	EnvE2EImpls = "TABBY_BENCH_E2E_IMPLS"
	// EnvE2EDuration, EnvE2ELatDuration: send windows ("5s").
	EnvE2EDuration    = "TABBY_BENCH_E2E_DURATION"
	EnvE2ELatDuration = "TABBY_BENCH_E2E_LAT_DURATION"
	// EnvE2EReps is the number of throughput runs per (case, impl).
	EnvE2EReps = "TABBY_BENCH_E2E_REPS"
	// EnvE2ERoutes is the number of BGP prefixes loaded (0: all).
	EnvE2ERoutes = "TABBY_BENCH_E2E_ROUTES"
	// EnvE2EKernelRPS=0 turns off RPS for the kernel implementation (the
	// kernel then forwards on the generator's CPU).
	EnvE2EKernelRPS = "TABBY_BENCH_E2E_KERNEL_RPS"
	// EnvE2EPinWorker=1 pins the afxdp DUT's worker to the CPU the traffic
	// thread does not use.
	EnvE2EPinWorker = "TABBY_BENCH_E2E_PIN_WORKER"
	// EnvE2EPoll sets the afxdp DUT worker's poll mode (adaptive, busy,
	// interrupt).
	EnvE2EPoll = "TABBY_BENCH_E2E_POLL"
	// EnvE2ENice sets the afxdp DUT worker's nice value (-20..19).
	EnvE2ENice = "TABBY_BENCH_E2E_NICE"
	// EnvE2ERing sets the afxdp DUT's ring size (a power of two).
	EnvE2ERing = "TABBY_BENCH_E2E_RING"
	// EnvE2EBatch sets the afxdp DUT worker's receive batch (1..256).
	EnvE2EBatch = "TABBY_BENCH_E2E_BATCH"
)

// DefaultE2EChart is the chart path when EnvChart is unset.
const DefaultE2EChart = "bench-results/e2e.svg"

func runE2E(ctx context.Context, opt Options, emit func(Result)) error {
	if os.Geteuid() != 0 {
		// Not an error: `tabby bench all` goes on with the other suites.
		opt.Progressf("e2e: skipped: %v", e2e.ErrNotRoot)
		return nil
	}
	cfg := e2e.Default()
	if opt.Quick {
		cfg = e2e.Quick()
	}
	if err := e2eFromEnv(&cfg); err != nil {
		return err
	}
	var all []e2e.Result
	cfg.Progress = func(format string, args ...any) { opt.Progressf("e2e: "+format, args...) }
	cfg.Emit = func(r e2e.Result) {
		all = append(all, r)
		emit(Result{Case: r.Case, Impl: r.Impl, Metric: r.Metric, Value: r.Value, Unit: r.Unit})
	}
	_, err := e2e.Run(ctx, cfg)
	for _, line := range e2e.Summarize(all) {
		opt.Progressf("e2e summary: %s", line)
	}
	if len(all) > 0 {
		path := os.Getenv(EnvChart)
		if path == "" {
			path = DefaultE2EChart
		}
		if cerr := writeE2EChart(path, all, opt.Quick); cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			opt.Progressf("e2e: chart written to %s", path)
		}
	}
	return err
}

func writeE2EChart(path string, results []e2e.Result, quick bool) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("e2e chart: %w", err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("e2e chart: %w", err)
	}
	title := "tabby bench e2e: kernel vs afxdp"
	if quick {
		title += " (quick run: not for reporting)"
	}
	if err := e2e.WriteSVG(f, results, title); err != nil {
		f.Close()
		return fmt.Errorf("e2e chart: %w", err)
	}
	return f.Close()
}

// e2eFromEnv applies the TABBY_BENCH_E2E_* variables to cfg.
func e2eFromEnv(cfg *e2e.Config) error {
	list := func(v string) []string {
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	if v := os.Getenv(EnvE2ESizes); v != "" {
		replace := strings.HasPrefix(v, "=")
		var sizes []int
		for _, s := range list(strings.TrimPrefix(v, "=")) {
			n, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("%s: %w", EnvE2ESizes, err)
			}
			sizes = append(sizes, n)
		}
		if replace {
			cfg.Sizes, cfg.PolicySizes = sizes, sizes
		} else {
			if len(cfg.PolicySizes) == 0 {
				cfg.PolicySizes = []int{64}
			}
			for _, n := range sizes {
				if !containsInt(cfg.Sizes, n) {
					cfg.Sizes = append(cfg.Sizes, n)
				}
				if !containsInt(cfg.PolicySizes, n) {
					cfg.PolicySizes = append(cfg.PolicySizes, n)
				}
			}
		}
	}
	if v := os.Getenv(EnvE2ECases); v != "" {
		cfg.Families = list(v)
	}
	if v := os.Getenv(EnvE2EImpls); v != "" {
		cfg.Impls = list(v)
	}
	if v := os.Getenv(EnvE2EKernelRPS); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%s: %w", EnvE2EKernelRPS, err)
		}
		cfg.NoKernelRPS = !on
	}
	if v := os.Getenv(EnvE2EPinWorker); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%s: %w", EnvE2EPinWorker, err)
		}
		cfg.PinWorker = on
	}
	if v := os.Getenv(EnvE2EPoll); v != "" {
		m, err := afxdp.ParsePollMode(v)
		if err != nil {
			return fmt.Errorf("%s: %w", EnvE2EPoll, err)
		}
		cfg.PollMode = m
	}
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{{EnvE2EDuration, &cfg.Duration}, {EnvE2ELatDuration, &cfg.LatencyDuration}} {
		if v := os.Getenv(d.env); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%s: %w", d.env, err)
			}
			*d.dst = x
		}
	}
	for _, n := range []struct {
		env string
		dst *int
	}{{EnvE2EReps, &cfg.Reps}, {EnvE2ERoutes, &cfg.Routes}, {EnvE2ENice, &cfg.WorkerNice}, {EnvE2ERing, &cfg.RingSize}, {EnvE2EBatch, &cfg.BatchSize}} {
		if v := os.Getenv(n.env); v != "" {
			x, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%s: %w", n.env, err)
			}
			*n.dst = x
		}
	}
	return nil
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
