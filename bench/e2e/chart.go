package e2e

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
)

// chartPanel is one bar chart of the SVG.
type chartPanel struct {
	metric string
	scale  float64
	unit   string
	title  string
}

var chartPanels = []chartPanel{
	{MetricPPS, 1e-6, "Mpps", "Delivered packet rate, max-rate phase (higher is better)"},
	{MetricLatP99, 1, "µs", "p99 one-way latency, fixed-rate phase (lower is better)"},
}

var implColors = map[string]string{ImplKernel: "#7f7f7f", ImplAFXDP: "#e8730c"}

// WriteSVG draws the results as an SVG: for each panel (delivered pps, p99
// latency) a group of bars per case, one bar per implementation.
func WriteSVG(w io.Writer, results []Result, title string) error {
	cases := byCase(results)
	impls := []string{}
	for _, c := range cases {
		for _, i := range c.impls {
			if !slices.Contains(impls, i) {
				impls = append(impls, i)
			}
		}
	}
	slices.SortStableFunc(impls, func(a, b string) int { return implRank(a) - implRank(b) })
	const (
		left, right, top = 70, 20, 50
		panelH, plotH    = 330, 220
		barW, groupGap   = 26, 22
	)
	groupW := len(impls)*barW + groupGap
	width := max(640, left+right+len(cases)*groupW)
	height := top + len(chartPanels)*panelH + 10
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(bw, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", left, esc(title))
	// Legend.
	lx := width - right - 90*len(impls)
	for i, impl := range impls {
		x := lx + 90*i
		fmt.Fprintf(bw, `<rect x="%d" y="30" width="12" height="12" fill="%s"/><text x="%d" y="40">%s</text>`+"\n",
			x, implColor(impl), x+16, esc(impl))
	}
	for pi, pn := range chartPanels {
		y0 := top + pi*panelH
		base := y0 + 30 + plotH // y of the x axis
		fmt.Fprintf(bw, `<text x="%d" y="%d" font-size="13">%s</text>`+"\n", left, y0+16, esc(pn.title))
		vmax := 0.0
		for _, c := range cases {
			for _, impl := range impls {
				if v, ok := c.get(impl, pn.metric); ok {
					vmax = max(vmax, v*pn.scale)
				}
			}
		}
		step := niceStep(vmax / 5)
		ymax := step * math.Ceil(vmax/step)
		if ymax <= 0 {
			ymax = 1
		}
		for t := 0.0; t <= ymax+step/2; t += step {
			y := float64(base) - t/ymax*plotH
			fmt.Fprintf(bw, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, width-right, y)
			fmt.Fprintf(bw, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, trimFloat(t))
		}
		fmt.Fprintf(bw, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`+"\n",
			base-plotH/2, base-plotH/2, esc(pn.unit))
		for ci, c := range cases {
			gx := left + groupGap/2 + ci*groupW
			for ii, impl := range impls {
				v, ok := c.get(impl, pn.metric)
				if !ok {
					continue
				}
				v *= pn.scale
				h := v / ymax * plotH
				x := gx + ii*barW
				fmt.Fprintf(bw, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s %s: %s %s</title></rect>`+"\n",
					x, float64(base)-h, barW-2, h, implColor(impl), esc(c.name), esc(impl), trimFloat(v), esc(pn.unit))
				fmt.Fprintf(bw, `<text x="%.1f" y="%.1f" font-size="9" text-anchor="middle">%s</text>`+"\n",
					float64(x)+float64(barW-2)/2, float64(base)-h-3, short(v))
			}
			cx := gx + len(impls)*barW/2
			fmt.Fprintf(bw, `<text x="%d" y="%d" text-anchor="end" transform="rotate(-35 %d %d)">%s</text>`+"\n",
				cx, base+14, cx, base+14, esc(c.name))
		}
		fmt.Fprintf(bw, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, base, width-right, base)
	}
	fmt.Fprintln(bw, `</svg>`)
	return bw.Flush()
}

func implRank(impl string) int {
	switch impl {
	case ImplKernel:
		return 0
	case ImplAFXDP:
		return 1
	}
	return 2
}

func implColor(impl string) string {
	if c, ok := implColors[impl]; ok {
		return c
	}
	return "#1f77b4"
}

func esc(s string) string { return html.EscapeString(s) }

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	for s[len(s)-1] == '0' {
		s = s[:len(s)-1]
	}
	if s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	return s
}

// short formats a bar label with three significant digits.
func short(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1 || v == 0:
		return fmt.Sprintf("%.2f", v)
	default:
		// Small values (a kernel policy case's Mpps) keep their digits.
		return fmt.Sprintf("%.3g", v)
	}
}
