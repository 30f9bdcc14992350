package bench

import (
	"testing"
)

// TestQuickControl smoke-tests the control suite: IPAM, BGP programming and
// route propagation report positive figures with their units, and nothing
// else.
func TestQuickControl(t *testing.T) {
	got := runQuick(t, "control", "")
	want := map[key]string{
		{"ipam-assign", "tabby", "per_s"}:            "assign/s",
		{"ipam-assign", "tabby", "p50"}:              "ms",
		{"ipam-assign", "tabby", "p99"}:              "ms",
		{"bgp-100k-routes", "tabby", "program_time"}: "ms",
		{"bgp-100k-routes", "tabby", "routes_per_s"}: "routes/s",
		{"route-propagation", "tabby", "p50"}:        "ms",
		{"route-propagation", "tabby", "p99"}:        "ms",
	}
	for k, unit := range want {
		r, ok := got[k]
		switch {
		case !ok:
			t.Errorf("missing %v", k)
		case r.Unit != unit:
			t.Errorf("%v: unit %q, want %q", k, r.Unit, unit)
		case !(r.Value > 0):
			t.Errorf("%v: value %v", k, r.Value)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected result %v", k)
		}
	}
	for _, c := range []string{"ipam-assign", "route-propagation"} {
		if p50, p99 := got[key{c, "tabby", "p50"}].Value, got[key{c, "tabby", "p99"}].Value; p99 < p50 {
			t.Errorf("%s: p99 %v < p50 %v", c, p99, p50)
		}
	}
	for _, tt := range []struct {
		bt    string
		quick bool
		ok    bool
	}{{"", true, true}, {"", false, true}, {"2s", false, true}, {"500x", false, true}, {"0x", false, false}, {"soon", false, false}} {
		if _, _, err := assignBudget(Options{BenchTime: tt.bt, Quick: tt.quick}); (err == nil) != tt.ok {
			t.Errorf("assignBudget(%q): %v", tt.bt, err)
		}
	}
}
