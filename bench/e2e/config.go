package e2e

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"
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
)

// Families lists every case family in the order cases run.
var Families = []string{FamilyForward, FamilyVXLANEncap, FamilyVXLANDecap, FamilyIPIPEncap}

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
	// Sizes are the pod frame sizes in bytes (Ethernet, no FCS), 64..1500.
	Sizes []int
	// Families selects case families (nil: all of Families).
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
// about one second per phase, one rep. Its figures are not to be reported.
func Quick() Config {
	c := Default()
	c.Sizes = []int{64}
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
	if len(c.Families) == 0 {
		c.Families = Families
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
	for _, s := range c.Sizes {
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

// supports reports whether impl can run the case (no IPIP module here).
func (c caseSpec) supports(impl string) bool {
	return !(impl == ImplKernel && c.family == FamilyIPIPEncap)
}

// cases returns the cases of cfg in run order: by size, then family.
func (c *Config) cases() []caseSpec {
	var out []caseSpec
	for _, s := range c.Sizes {
		for _, f := range Families {
			if slices.Contains(c.Families, f) {
				out = append(out, caseSpec{family: f, size: s})
			}
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
			if !cs.supports(impl) {
				continue
			}
			for _, m := range caseMetrics {
				out = append(out, [3]string{cs.name(), impl, m})
			}
		}
	}
	return out, nil
}

// caseMetrics are the metrics every (case, impl) reports.
var caseMetrics = []string{MetricPPS, MetricGenPPS, MetricLoss, MetricSinkDrop, MetricCPU, MetricGenCPU,
	MetricEngineCPU, MetricLatRate, MetricLatLoss, MetricLatP50, MetricLatP99, MetricLatP999}
