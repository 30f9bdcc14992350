package bench

import (
	"fmt"
	"testing"
)

// TestQuickACL smoke-tests the acl suite on small inputs: every case
// reports every metric with a positive value (allocations: zero).
func TestQuickACL(t *testing.T) {
	got := runQuick(t, "acl", "20ms")
	var want []key
	for _, n := range aclRuleCounts {
		for _, impl := range []string{"tabby", "reference"} {
			want = append(want, key{fmt.Sprintf("rules-%d", n), impl, "ns_per_op"})
		}
	}
	want = append(want,
		key{"conntrack-hit", "tabby", "ns_per_op"},
		key{"compile-10k-endpoints-1k-policies", "tabby", "compile_ms"},
		key{"compile-10k-endpoints-1k-policies", "tabby", "bytes"},
		key{"incremental-label-change", "tabby", "compile_ms"},
		key{"incremental-policy-edit", "tabby", "compile_ms"})
	for _, k := range want {
		r, ok := got[k]
		if !ok {
			t.Errorf("missing %+v", k)
			continue
		}
		if r.Value <= 0 {
			t.Errorf("%+v: value %v", k, r.Value)
		}
	}
	for _, n := range aclRuleCounts {
		k := key{fmt.Sprintf("rules-%d", n), "tabby", "allocs_per_op"}
		// Stray runtime allocations during a run show up as tiny fractions.
		if r, ok := got[k]; !ok || r.Value >= 0.01 {
			t.Errorf("%+v: %+v, want 0 allocations", k, r)
		}
	}
	if r := got[key{"conntrack-hit", "tabby", "allocs_per_op"}]; r.Value >= 0.01 {
		t.Errorf("conntrack-hit allocations: %v", r.Value)
	}
}
