package bench

import (
	"testing"
)

// TestQuickLPM smoke-tests the lpm suite on small inputs: every case reports
// every metric for both implementations, with a positive value.
func TestQuickLPM(t *testing.T) {
	got := runQuick(t, "lpm", "20ms")
	var want []key
	for _, fam := range []string{"v4", "v6"} {
		for _, c := range lpmLookupCases {
			for _, impl := range []string{"tabby", "bart"} {
				want = append(want, key{fam + "-" + c.name, impl, "ns_per_op"}, key{fam + "-" + c.name, impl, "allocs_per_op"})
			}
		}
		for _, impl := range []string{"tabby", "bart"} {
			want = append(want, key{fam + "-insert-full-table", impl, "routes_per_s"},
				key{fam + "-full-table", impl, "bytes"}, key{fam + "-full-table", impl, "bytes_heap"})
		}
	}
	for _, impl := range []string{"tabby", "bart"} {
		want = append(want, key{"v4-update-churn", impl, "routes_per_s"})
	}
	units := map[string]string{"ns_per_op": "ns", "allocs_per_op": "allocs", "routes_per_s": "routes/s", "bytes": "B", "bytes_heap": "B"}
	for _, k := range want {
		r, ok := got[k]
		switch {
		case !ok:
			t.Errorf("missing %+v", k)
		case r.Unit != units[k.metric]:
			t.Errorf("%+v: unit %q, want %q", k, r.Unit, units[k.metric])
		case k.metric == "allocs_per_op":
			if r.Value < 0 {
				t.Errorf("%+v: value %v", k, r.Value)
			}
		case r.Value <= 0:
			t.Errorf("%+v: value %v, want > 0", k, r.Value)
		}
		delete(got, k)
	}
	for k := range got {
		t.Errorf("unexpected result %+v", k)
	}
}
