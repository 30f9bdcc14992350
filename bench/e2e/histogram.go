package e2e

import (
	"math"
	"math/bits"
)

// histogram is a log-linear histogram of non-negative durations in
// nanoseconds: exact below 256 ns, then 128 buckets per power of two, so a
// value is known to within 1/128 (0.8%) of itself; a quantile is reported
// as its bucket's midpoint (≤0.4% off). Recording does not allocate.
type histogram struct {
	counts   []uint64
	n        uint64
	min, max int64
	sum      float64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // buckets per power of two
	histLinear  = 2 * histSub      // values below this get their own bucket
	histMaxExp  = 40               // values are clamped to 2^40 ns (~18 min)
	histBuckets = histLinear + histMaxExp*histSub
)

func newHistogram() *histogram {
	return &histogram{counts: make([]uint64, histBuckets), min: math.MaxInt64}
}

func histIndex(v int64) int {
	if v < histLinear {
		return int(v)
	}
	if v >= 1<<histMaxExp {
		v = 1<<histMaxExp - 1
	}
	e := bits.Len64(uint64(v)) - (histSubBits + 1)
	return histLinear + (e-1)*histSub + int(v>>e) - histSub
}

// histValue returns the midpoint of bucket i.
func histValue(i int) float64 {
	if i < histLinear {
		return float64(i)
	}
	e := (i-histLinear)/histSub + 1
	m := int64((i-histLinear)%histSub + histSub)
	low := m << e
	return float64(low) + float64(int64(1)<<e)/2
}

// record adds one value.
func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(v)]++
	h.n++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// count returns the number of values recorded.
func (h *histogram) count() uint64 { return h.n }

// quantile returns the value below which a fraction q of the values lie
// (0 when empty). The exact minimum and maximum are returned for q ≤ 0 and
// q ≥ 1.
func (h *histogram) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return float64(h.min)
	}
	if q >= 1 {
		return float64(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return min(max(histValue(i), float64(h.min)), float64(h.max))
		}
	}
	return float64(h.max)
}

// reset empties the histogram.
func (h *histogram) reset() {
	clear(h.counts)
	h.n, h.sum, h.min, h.max = 0, 0, math.MaxInt64, 0
}
