package bgptable

import "testing"

func TestPrefixes(t *testing.T) {
	v4, v6, err := Prefixes()
	if err != nil {
		t.Fatal(err)
	}
	// The counts documented in README.md; a truncated or swapped file fails here.
	if len(v4) != 901_899 || len(v6) != 160_147 {
		t.Fatalf("got %d IPv4 and %d IPv6 prefixes, want 901899 and 160147", len(v4), len(v6))
	}
	for _, p := range v4[:1000] {
		if !p.Addr().Is4() || p != p.Masked() {
			t.Fatalf("bad IPv4 prefix %v", p)
		}
	}
}
