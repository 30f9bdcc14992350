package e2e

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tabbynet/tabby/datapath/afxdp"
)

// Implementation names, as they appear in results.
const (
	ImplKernel = "kernel"
	ImplAFXDP  = "afxdp"
)

// Case families. A case name is "<family>-<size>".
const (
	FamilyForward    = "forward"
	FamilyVXLANEncap = "vxlan-encap"
	FamilyVXLANDecap = "vxlan-decap"
	FamilyIPIPEncap  = "ipip-encap"
	// FamilyPolicy1k and FamilyPolicy10k are the policy cases: pod to pod
	// traffic through the dut enforcing a policy of 1,000 or 10,000 rules
	// (see the package documentation).
	FamilyPolicy1k  = "policy-1000"
	FamilyPolicy10k = "policy-10000"
)

// Families lists every case family in the order cases run.
var Families = []string{FamilyForward, FamilyVXLANEncap, FamilyVXLANDecap, FamilyIPIPEncap, FamilyPolicy1k, FamilyPolicy10k}

// DefaultFamilies are the families a run without Config.Families runs:
// every family.
var DefaultFamilies = Families

// policyRules returns the rule count of a policy family (0 for the
// others).
func policyRules(family string) int {
	switch family {
	case FamilyPolicy1k:
		return 1000
	case FamilyPolicy10k:
		return 10000
	}
	return 0
}

// Metric names (a public interface: scripts read them).
const (
	// MetricPPS is the delivered packet rate of the throughput phase.
	MetricPPS = "pps"
	// MetricGenPPS is the rate the generator achieved (frames the kernel
	// took from its TX ring per second).
	MetricGenPPS = "gen_pps"
	// MetricLoss is 1 − received/sent of the throughput phase, in percent.
	MetricLoss = "loss_pct"
	// MetricSinkDrop is the part of the loss the sink's own socket
	// reported (RX ring full, fill ring empty), in percent of sent.
	MetricSinkDrop = "sink_drop_pct"
	// MetricLatP50, MetricLatP99 and MetricLatP999 are one-way latency
	// percentiles of the fixed-rate phase, in µs.
	MetricLatP50  = "lat_p50_us"
	MetricLatP99  = "lat_p99_us"
	MetricLatP999 = "lat_p999_us"
	// MetricLatRate is the rate the latency phase sent at: its target is
	// LatencyFraction × the lower of the implementations' pps; it is lower
	// when the generator was starved of CPU (slots are skipped rather than
	// sent in a catch-up burst).
	MetricLatRate = "lat_rate_pps"
	// MetricLatLoss is the loss of the latency phase, in percent.
	MetricLatLoss = "lat_loss_pct"
	// MetricCPU is whole-machine busy CPU-seconds per million delivered
	// packets over the throughput phase.
	MetricCPU = "cpu_s_per_mpkt"
	// MetricGenCPU is the share of a CPU the traffic thread (generator and
	// sink) got during the throughput phase, in percent: below ~95% other
	// load on the machine took CPU time from the generator.
	MetricGenCPU = "gen_cpu_pct"
	// MetricEngineCPU is the CPU the harness process's other threads used
	// during the throughput phase, in percent of a CPU: for afxdp the
	// engine's worker (busy polling) and the Go runtime; for kernel the
	// runtime alone (the kernel forwards in softirq context).
	MetricEngineCPU = "engine_cpu_pct"
	// MetricLoadTime is how long loading the routes took (case
	// CaseRouteLoad), MetricRoutes how many were loaded.
	MetricLoadTime = "load_time"
	MetricRoutes   = "routes"
	// MetricPolicyLoad (policy cases) is how long installing the case's
	// policy took, in ms: for kernel `nft -f` of the rendered ruleset, for
	// afxdp acl.Compile plus Tables.SetPolicy.
	MetricPolicyLoad = "policy_load_ms"
	// MetricDeniedSent (policy cases) is the share of the throughput
	// phase's sent frames that belong to denied flows, in percent; they
	// are left out of pps and loss_pct (loss is 1 − received/allowed sent).
	MetricDeniedSent = "denied_sent_pct"
	// MetricDeniedLeak (policy cases) is the share of those denied frames
	// that reached the sink, in percent (0 unless the policy leaks).
	MetricDeniedLeak = "denied_leak_pct"
)

// CaseRouteLoad is the case under which route loading is reported.
const CaseRouteLoad = "route-load"

// Result is one measured value (the bench package's Result without the
// suite name).
type Result struct {
	Case   string
	Impl   string
	Metric string
	Value  float64
	Unit   string
}

// Config configures Run. Zero fields take the defaults (Default).
type Config struct {
	// Sizes are the pod frame sizes in bytes (Ethernet, no FCS), 64..1514,
	// of the routing and encapsulation cases.
	Sizes []int
	// PolicySizes are the frame sizes of the policy cases (nil: 64).
	PolicySizes []int
	// Families selects case families (nil: DefaultFamilies).
	Families []string
	// Impls selects implementations (nil: kernel and afxdp).
	Impls []string
	// Routes is how many prefixes of the real BGP table the dut loads
	// (0: all of them, about 900k).
	Routes int
	// Duration is the send window of a throughput phase.
	Duration time.Duration
	// Warmup is sent (and discarded) before each phase.
	Warmup time.Duration
	// LatencyDuration is the send window of a latency phase.
	LatencyDuration time.Duration
	// LatencyFraction is the latency phase's rate as a fraction of the
	// lower of the two implementations' throughput (default 0.5).
	LatencyFraction float64
	// Reps is how many throughput runs each (case, impl) gets, alternating
	// implementations (default 3). The run with the median delivered rate
	// is reported (all its figures, so they stay consistent).
	Reps int
	// Flows is the number of distinct flows (frame templates) per case.
	Flows int
	// Prefix names the topology's namespaces ("<prefix><hex>-<node>").
	Prefix string
	// NoKernelRPS disables RPS on the dut's ingress veth for the kernel
	// implementation. By default RPS moves the kernel's forwarding work to
	// the CPUs the traffic thread does not use, where the afxdp worker
	// runs too; without it the kernel forwards on the generator's CPU.
	NoKernelRPS bool
	// PinWorker pins the afxdp DUT's worker thread to the CPU the traffic
	// thread does not use (engine.Config.WorkerCPUs). Off by default: on
	// this shared 2-vCPU machine its effect was not measurable.
	PinWorker bool
	// PollMode is the afxdp DUT worker's poll mode (default adaptive, the
	// agent's default).
	PollMode afxdp.PollMode
	// WorkerNice is the afxdp DUT worker's nice value (engine.Config).
	WorkerNice int
	// RingSize is the afxdp DUT's ring size (engine.Config; 0: default).
	RingSize int
	// BatchSize is the afxdp DUT worker's receive batch (engine.Config; 0:
	// default).
	BatchSize int
	// Progress receives one line per step (nil: discarded).
	Progress func(format string, args ...any)
	// Emit, if set, receives every result as soon as it is measured.
	Emit func(Result)
	// Logger receives the engine's and sockets' setup messages (nil:
	// discarded).
	Logger *slog.Logger
}

// Default returns the configuration of a full run.
func Default() Config {
	return Config{
		Sizes:           []int{64, 1500},
		PolicySizes:     []int{64},
		Duration:        5 * time.Second,
		Warmup:          300 * time.Millisecond,
		LatencyDuration: 3 * time.Second,
		LatencyFraction: 0.5,
		Reps:            3,
		Flows:           4096,
		Prefix:          "tbe2e",
	}
}

// Quick returns a configuration for smoke tests: 20k routes, 64-byte frames,
// about one second per phase, one rep, every family but policy-10000. Its
// figures are not to be reported.
func Quick() Config {
	c := Default()
	c.Sizes = []int{64}
	c.PolicySizes = []int{64}
	c.Families = slices.DeleteFunc(slices.Clone(Families), func(f string) bool { return f == FamilyPolicy10k })
	c.Routes = 20000
	c.Duration = time.Second
	c.Warmup = 100 * time.Millisecond
	c.LatencyDuration = 500 * time.Millisecond
	c.Reps = 1
	c.Flows = 1024
	return c
}

// withDefaults fills zero fields from Default and validates.
func (c Config) withDefaults() (Config, error) {
	d := Default()
	if len(c.Sizes) == 0 {
		c.Sizes = d.Sizes
	}
	if len(c.PolicySizes) == 0 {
		c.PolicySizes = []int{64}
	}
	if len(c.Families) == 0 {
		c.Families = DefaultFamilies
	}
	if len(c.Impls) == 0 {
		c.Impls = []string{ImplKernel, ImplAFXDP}
	}
	if c.Duration <= 0 {
		c.Duration = d.Duration
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.LatencyDuration <= 0 {
		c.LatencyDuration = d.LatencyDuration
	}
	if c.LatencyFraction <= 0 || c.LatencyFraction > 1 {
		c.LatencyFraction = d.LatencyFraction
	}
	if c.Reps <= 0 {
		c.Reps = d.Reps
	}
	if c.Flows <= 0 {
		c.Flows = d.Flows
	}
	if c.Prefix == "" {
		c.Prefix = d.Prefix
	}
	if c.Progress == nil {
		c.Progress = func(string, ...any) {}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, s := range slices.Concat(c.Sizes, c.PolicySizes) {
		if s < minFrameLen || s > maxFrameLen {
			return c, fmt.Errorf("e2e: frame size %d out of range %d..%d", s, minFrameLen, maxFrameLen)
		}
	}
	for _, f := range c.Families {
		if !slices.Contains(Families, f) {
			return c, fmt.Errorf("e2e: unknown case family %q (want one of %s)", f, strings.Join(Families, ", "))
		}
	}
	for _, i := range c.Impls {
		if i != ImplKernel && i != ImplAFXDP {
			return c, fmt.Errorf("e2e: unknown implementation %q (want kernel or afxdp)", i)
		}
	}
	for _, f := range c.Families {
		if policyRules(f) > 0 && c.Flows < policyDenyEvery {
			return c, fmt.Errorf("e2e: %s needs at least %d flows, have %d", f, policyDenyEvery, c.Flows)
		}
	}
	if c.Routes < 0 {
		return c, fmt.Errorf("e2e: negative route count %d", c.Routes)
	}
	return c, nil
}

// caseSpec is one case: a family at one frame size.
type caseSpec struct {
	family string
	size   int
}

func (c caseSpec) name() string { return fmt.Sprintf("%s-%d", c.family, c.size) }

func (c caseSpec) isPolicy() bool { return policyRules(c.family) > 0 }

// supports reports whether impl can run the case, and if not why: this
// kernel has no IPIP module; the kernel's policy cases need nft.
func (c caseSpec) supports(impl string) (bool, string) {
	switch {
	case impl == ImplKernel && c.family == FamilyIPIPEncap:
		return false, "no IPIP module in this kernel"
	case impl == ImplKernel && c.isPolicy() && nftBinary() == "":
		return false, nftMissing
	}
	return true, ""
}

// cases returns the cases of cfg in run order: by size (Sizes, then the
// PolicySizes not among them), then family; policy families at
// PolicySizes only, the others at Sizes only.
func (c *Config) cases() []caseSpec {
	var out []caseSpec
	sizes := slices.Clone(c.Sizes)
	for _, s := range c.PolicySizes {
		if !slices.Contains(sizes, s) {
			sizes = append(sizes, s)
		}
	}
	for _, s := range sizes {
		for _, f := range Families {
			if !slices.Contains(c.Families, f) {
				continue
			}
			if policyRules(f) > 0 && !slices.Contains(c.PolicySizes, s) || policyRules(f) == 0 && !slices.Contains(c.Sizes, s) {
				continue
			}
			out = append(out, caseSpec{family: f, size: s})
		}
	}
	return out
}

// ExpectedResults lists the (case, impl, metric) triples a run of cfg
// produces for its cases (route loading excluded), for tests and scripts.
func ExpectedResults(cfg Config) ([][3]string, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var out [][3]string
	for _, cs := range cfg.cases() {
		for _, impl := range cfg.Impls {
			if ok, _ := cs.supports(impl); !ok {
				continue
			}
			for _, m := range cs.metrics() {
				out = append(out, [3]string{cs.name(), impl, m})
			}
		}
	}
	return out, nil
}

// caseMetrics are the metrics every (case, impl) reports.
var caseMetrics = []string{MetricPPS, MetricGenPPS, MetricLoss, MetricSinkDrop, MetricCPU, MetricGenCPU,
	MetricEngineCPU, MetricLatRate, MetricLatLoss, MetricLatP50, MetricLatP99, MetricLatP999}

// policyMetrics are what the policy cases report besides caseMetrics.
var policyMetrics = []string{MetricPolicyLoad, MetricDeniedSent, MetricDeniedLeak}

// metrics returns the metrics of the case, for every implementation.
func (c caseSpec) metrics() []string {
	if c.isPolicy() {
		return slices.Concat(caseMetrics, policyMetrics)
	}
	return caseMetrics
}
