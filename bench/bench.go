// Package bench runs Tabby's benchmark suites and reports their results.
//
// A suite produces Results: one measured value of one metric, for one case
// (the input, such as "v4-cold-random") and one implementation (such as
// "tabby" or the reference it is compared against). Every implementation of a
// suite reports the same case names, so users compute ratios from one run.
//
// Results are printed as a human table or, with JSON output, as one object per
// line: {"suite","case","impl","metric","value","unit"}. Case, impl and metric
// names are a public interface: scripts read them.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// Result is one measured value.
type Result struct {
	Suite  string  `json:"suite"`
	Case   string  `json:"case"`
	Impl   string  `json:"impl"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
}

// Options tune a suite run.
type Options struct {
	// Quick runs fewer iterations and smaller inputs, for smoke tests. Figures
	// from a quick run are not to be reported.
	Quick bool
	// BenchTime overrides how long each Go benchmark runs ("1s", "200ms", or
	// an iteration count such as "1000x"); empty means 1s (50ms when Quick).
	BenchTime string
	// Progress receives human progress lines (nil: discarded).
	Progress io.Writer
}

// Progressf writes one progress line, if progress is wanted.
func (o Options) Progressf(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// Suite is a named group of benchmark cases.
type Suite struct {
	Name string
	// Doc is one line for `tabby bench --help`.
	Doc string
	// Run measures every case and reports each value through emit.
	Run func(ctx context.Context, opt Options, emit func(Result)) error
}

var suites = map[string]Suite{}

// Register adds a suite. It is called from init functions; a duplicate name
// is a programming error and panics.
func Register(s Suite) {
	if _, dup := suites[s.Name]; dup {
		panic("bench: suite registered twice: " + s.Name)
	}
	suites[s.Name] = s
}

// Suites returns the registered suites sorted by name.
func Suites() []Suite {
	out := make([]Suite, 0, len(suites))
	for _, s := range suites {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Lookup returns the suite with the given name.
func Lookup(name string) (Suite, bool) {
	s, ok := suites[name]
	return s, ok
}

// Run runs one suite and returns its results. The suite name is filled in on
// every result.
func Run(ctx context.Context, s Suite, opt Options) ([]Result, error) {
	var out []Result
	err := s.Run(ctx, opt, func(r Result) {
		r.Suite = s.Name
		out = append(out, r)
	})
	if err != nil {
		return out, fmt.Errorf("bench %s: %w", s.Name, err)
	}
	return out, nil
}

// WriteJSON writes one JSON object per result, one per line.
func WriteJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	for _, r := range results {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable writes the results as a human table: one row per case and
// metric, one column per implementation, and, when there are exactly two
// implementations, the ratio of the first to the second, oriented so that a
// value above 1 means the first implementation is better.
func WriteTable(w io.Writer, results []Result) error {
	type key struct{ suite, cas, metric, unit string }
	var keys []key
	var impls []string
	vals := map[key]map[string]float64{}
	for _, r := range results {
		k := key{r.Suite, r.Case, r.Metric, r.Unit}
		if vals[k] == nil {
			vals[k] = map[string]float64{}
			keys = append(keys, k)
		}
		vals[k][r.Impl] = r.Value
		if !slices.Contains(impls, r.Impl) {
			impls = append(impls, r.Impl)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"suite", "case", "metric"}
	head = append(head, impls...)
	head = append(head, "unit")
	if len(impls) == 2 {
		head = append(head, "ratio")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, k := range keys {
		row := []string{k.suite, k.cas, k.metric}
		for _, impl := range impls {
			v, ok := vals[k][impl]
			if !ok {
				row = append(row, "-")
				continue
			}
			row = append(row, formatValue(v))
		}
		row = append(row, k.unit)
		if len(impls) == 2 {
			a, okA := vals[k][impls[0]]
			b, okB := vals[k][impls[1]]
			row = append(row, ratio(k.metric, a, b, okA && okB))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	return tw.Flush()
}

// lowerIsBetter reports whether a smaller value of the metric is better.
func lowerIsBetter(metric string) bool {
	switch {
	case strings.HasPrefix(metric, "ns_"), strings.HasPrefix(metric, "lat_"),
		strings.Contains(metric, "bytes"), strings.HasPrefix(metric, "allocs"),
		strings.HasPrefix(metric, "cpu_"), strings.HasPrefix(metric, "loss"),
		strings.HasSuffix(metric, "_ms"), strings.HasSuffix(metric, "_time"),
		metric == "p99", metric == "p50", metric == "program_time":
		return true
	}
	return false
}

func ratio(metric string, a, b float64, ok bool) string {
	if !ok || a == 0 || b == 0 {
		return "-"
	}
	if lowerIsBetter(metric) {
		return fmt.Sprintf("%.2fx", b/a)
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func formatValue(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e15:
		return fmt.Sprintf("%d", int64(v))
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
