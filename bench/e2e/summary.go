package e2e

import (
	"fmt"
	"math"
	"strings"
)

// Thresholds of the bottleneck verdict.
const (
	// lossBound: below this loss (percent) the path delivered what the
	// generator offered, so the generator was the limit.
	lossBound = 1.0
	// starvedGen: a traffic thread below this share of its CPU (percent)
	// was starved by other load on the machine.
	starvedGen = 90.0
)

// Goals (issue #3): afxdp delivers at least ratio × the kernel's pps with a
// p99 latency no worse, for the cases whose name starts with prefix.
// Reported, never asserted.
var goals = []struct {
	prefix string
	ratio  float64
}{
	{FamilyForward + "-64", 1.3},
	{FamilyVXLANEncap + "-", 1.5},
}

// Bound says what limited one (case, impl) run.
type Bound string

// Bounds.
const (
	// BoundGenerator: the path delivered (almost) everything the generator
	// sent; the rate measures the generator, not the dut.
	BoundGenerator Bound = "generator-bound"
	// BoundDUT: frames were lost and the sink did not report dropping
	// them: the dut (or the veth into the sink) could not keep up.
	BoundDUT Bound = "dut-bound"
	// BoundSink: most of the loss was the sink's socket dropping frames.
	BoundSink Bound = "sink-bound"
)

// caseView is the results of one case, by implementation and metric.
type caseView struct {
	name  string
	impls []string
	vals  map[string]map[string]float64
}

func (v *caseView) get(impl, metric string) (float64, bool) {
	x, ok := v.vals[impl][metric]
	return x, ok && !math.IsNaN(x)
}

// byCase groups results by case, in the order the cases first appear.
func byCase(results []Result) []*caseView {
	var out []*caseView
	idx := map[string]*caseView{}
	for _, r := range results {
		if r.Case == CaseRouteLoad {
			continue
		}
		v := idx[r.Case]
		if v == nil {
			v = &caseView{name: r.Case, vals: map[string]map[string]float64{}}
			idx[r.Case] = v
			out = append(out, v)
		}
		if v.vals[r.Impl] == nil {
			v.vals[r.Impl] = map[string]float64{}
			v.impls = append(v.impls, r.Impl)
		}
		v.vals[r.Impl][r.Metric] = r.Value
	}
	return out
}

// Classify says what limited an implementation's throughput run from its
// loss and sink-drop percentages.
func Classify(lossPct, sinkDropPct float64) Bound {
	switch {
	case lossPct < lossBound:
		return BoundGenerator
	case sinkDropPct >= lossPct/2:
		return BoundSink
	default:
		return BoundDUT
	}
}

// Summarize turns results into human lines: per case, the delivered rates,
// what bounded each implementation, the afxdp/kernel ratios of pps and p99
// latency, and the goals (met or not; reported, not asserted).
func Summarize(results []Result) []string {
	var lines []string
	for _, v := range byCase(results) {
		var parts []string
		allGen := true
		for _, impl := range v.impls {
			pps, _ := v.get(impl, MetricPPS)
			gen, _ := v.get(impl, MetricGenPPS)
			loss, _ := v.get(impl, MetricLoss)
			sd, _ := v.get(impl, MetricSinkDrop)
			p99, _ := v.get(impl, MetricLatP99)
			b := Classify(loss, sd)
			allGen = allGen && b == BoundGenerator
			note := ""
			if gc, ok := v.get(impl, MetricGenCPU); ok && gc < starvedGen && b == BoundGenerator {
				note = fmt.Sprintf(" (the generator got only %.0f%% of its CPU: other load)", gc)
			}
			parts = append(parts, fmt.Sprintf("%s %.3f Mpps (generator %.3f, loss %.1f%%: %s%s; p99 %.1fµs)",
				impl, pps/1e6, gen/1e6, loss, b, note, p99))
		}
		line := v.name + ": " + strings.Join(parts, "; ")
		kp, okK := v.get(ImplKernel, MetricPPS)
		ap, okA := v.get(ImplAFXDP, MetricPPS)
		if okK && okA && kp > 0 {
			ratio := ap / kp
			line += fmt.Sprintf("; afxdp/kernel pps %.2fx", ratio)
			k99, okK99 := v.get(ImplKernel, MetricLatP99)
			a99, okA99 := v.get(ImplAFXDP, MetricLatP99)
			if okK99 && okA99 && a99 > 0 {
				line += fmt.Sprintf(", p99 kernel/afxdp %.2fx", k99/a99)
			}
			if allGen {
				line += " — generator-bound for both: the rates measure how fast the generator pushes into each path, not the dut's capacity"
			}
			for _, g := range goals {
				if v.name == g.prefix || (strings.HasSuffix(g.prefix, "-") && strings.HasPrefix(v.name, g.prefix)) {
					met := ratio >= g.ratio && (!okK99 || !okA99 || a99 <= k99)
					line += fmt.Sprintf("; goal afxdp >= %.1fx kernel pps with p99 no worse: %s", g.ratio, metWord(met))
				}
			}
		}
		line += policyNote(v)
		lines = append(lines, line)
	}
	return lines
}

// policyNote describes a policy case's policy loading and denied flows.
func policyNote(v *caseView) string {
	var parts []string
	for _, impl := range v.impls {
		load, ok := v.get(impl, MetricPolicyLoad)
		if !ok {
			continue
		}
		leak, _ := v.get(impl, MetricDeniedLeak)
		denied, _ := v.get(impl, MetricDeniedSent)
		parts = append(parts, fmt.Sprintf("%s loaded the policy in %.0f ms, %.1f%% of its frames were of denied flows, %.2f%% of those leaked",
			impl, load, denied, leak))
	}
	if len(parts) == 0 {
		return ""
	}
	return "; " + strings.Join(parts, "; ")
}

func metWord(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}
