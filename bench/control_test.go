package bench

import (
	"context"
	"testing"
)

// TestQuickControl smoke-tests the control suite: ipam-assign reports a
// positive rate and latencies with their units.
func TestQuickControl(t *testing.T) {
	s, ok := Lookup("control")
	if !ok {
		t.Fatal("suite control not registered")
	}
	res, err := Run(context.Background(), s, Options{Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"per_s": "assign/s", "p50": "ms", "p99": "ms"}
	got := map[string]Result{}
	for _, r := range res {
		if r.Suite != "control" || r.Case != "ipam-assign" || r.Impl != "tabby" {
			t.Errorf("unexpected result %+v", r)
		}
		got[r.Metric] = r
	}
	for metric, unit := range want {
		r, ok := got[metric]
		switch {
		case !ok:
			t.Errorf("missing metric %s", metric)
		case r.Unit != unit:
			t.Errorf("%s: unit %q, want %q", metric, r.Unit, unit)
		case !(r.Value > 0):
			t.Errorf("%s: value %v", metric, r.Value)
		}
	}
	if got["p99"].Value < got["p50"].Value {
		t.Errorf("p99 %v < p50 %v", got["p99"].Value, got["p50"].Value)
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
