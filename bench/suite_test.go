package bench

import (
	"context"
	"testing"
)

// key identifies one result of a suite.
type key struct{ cas, impl, metric string }

// runQuick runs the registered suite name in quick mode (benchTime per Go
// benchmark case; "" for the default) and indexes its results by
// case/impl/metric, failing on results that name another suite.
func runQuick(t *testing.T, name, benchTime string) map[key]Result {
	t.Helper()
	s, ok := Lookup(name)
	if !ok {
		t.Fatalf("suite %s not registered", name)
	}
	res, err := Run(context.Background(), s, Options{Quick: true, BenchTime: benchTime})
	if err != nil {
		t.Fatal(err)
	}
	got := map[key]Result{}
	for _, r := range res {
		if r.Suite != name {
			t.Errorf("result %+v: suite %q, want %q", r, r.Suite, name)
		}
		got[key{r.Case, r.Impl, r.Metric}] = r
	}
	return got
}
