package bench

import (
	"context"
	"testing"
)

// TestQuickBGP smoke-tests the bgp suite: both cases report positive
// figures with their units.
func TestQuickBGP(t *testing.T) {
	s, ok := Lookup("bgp")
	if !ok {
		t.Fatal("suite bgp not registered")
	}
	res, err := Run(context.Background(), s, Options{Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[[2]string]string{
		{"bgp-100k-routes", "program_time"}: "ms",
		{"bgp-100k-routes", "routes_per_s"}: "routes/s",
		{"route-propagation", "p50"}:        "ms",
		{"route-propagation", "p99"}:        "ms",
	}
	got := map[[2]string]Result{}
	for _, r := range res {
		if r.Suite != "bgp" || r.Impl != "tabby" {
			t.Errorf("unexpected result %+v", r)
		}
		got[[2]string{r.Case, r.Metric}] = r
		t.Logf("%s %s = %.2f %s", r.Case, r.Metric, r.Value, r.Unit)
	}
	for k, unit := range want {
		r, ok := got[k]
		switch {
		case !ok:
			t.Errorf("missing %s/%s", k[0], k[1])
		case r.Unit != unit:
			t.Errorf("%s/%s: unit %q, want %q", k[0], k[1], r.Unit, unit)
		case !(r.Value > 0):
			t.Errorf("%s/%s: value %v", k[0], k[1], r.Value)
		}
	}
}
