package selector

import (
	"strings"
	"testing"
)

func TestParseAndMatch(t *testing.T) {
	labels := map[string]string{"app": "web", "tier": "front", "env": "prod", "k8s.io/name": "x-y"}
	tests := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"all()", true},
		{" all ( ) ", true},
		{"app == 'web'", true},
		{`app=="web"`, true},
		{"app == 'db'", false},
		{"app != 'db'", true},
		{"missing != 'x'", true},
		{"missing == 'x'", false},
		{"has(app)", true},
		{"has(missing)", false},
		{"!has(missing)", true},
		{"app in {'web','db'}", true},
		{"app in {}", false},
		{"app not in {}", true},
		{"app not in {'web'}", false},
		{"missing not in {'web'}", true},
		{"missing in {'web'}", false},
		{"app == 'web' && tier == 'front'", true},
		{"app == 'web' && tier == 'back'", false},
		{"app == 'db' || tier == 'front'", true},
		{"!(app == 'db' || tier == 'back')", true},
		{"!app == 'web'", false},
		{"(app == 'web' || app == 'db') && !(env in {'dev', 'test'})", true},
		{"k8s.io/name == 'x-y'", true},
		{"app contains 'e'", true},
		{"app starts with 'we'", true},
		{"app ends with 'eb'", true},
		{"app ends with 'x'", false},
		{"global()", false},
		{"!global()", true},
		{"has == 'x'", false},
		{"has(has)", false},
		{"in == 'x'", false},
		{"not == 'x' || all()", true},
	}
	for _, tt := range tests {
		t.Run(tt.sel, func(t *testing.T) {
			s, err := Parse(tt.sel)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.sel, err)
			}
			if got := s.MatchesMap(labels); got != tt.want {
				t.Errorf("%q (canonical %q) = %v, want %v", tt.sel, s, got, tt.want)
			}
			s2, err := Parse(s.String())
			if err != nil || s2.String() != s.String() {
				t.Errorf("reparse of %q: %v, %q", s, err, s2)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, bad := range []string{
		"app", "app ==", "app == web", "app == 'web", "(app == 'x'", "app == 'x')", "app in {'a' 'b'}",
		"app in 'a'", "has(app", "has()", "&& app == 'x'", "app == 'x' &&", "app not 'x'", "!", "all(",
		"app starts 'x'", "a == 'x' | b == 'y'", "=='x'", strings.Repeat("(", 200) + "all()" + strings.Repeat(")", 200),
	} {
		if s, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %q, want error", bad, s)
		}
	}
}

func TestGlobal(t *testing.T) {
	s := MustParse("global() || ns == 'a'")
	if !s.Matches(Labels{Global: true}) || s.Matches(Labels{Map: map[string]string{"ns": "b"}}) {
		t.Fatal("global() evaluation")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "all()", "a == 'b'", "a in {'x', \"y\"} && !has(c)", "(a != 'b' || c not in {}) && d starts with 'q'", "global()"} {
		f.Add(s)
	}
	sets := []map[string]string{nil, {"a": "b"}, {"a": "x", "c": "", "d": "qq"}, {"has": "y", "in": "'"}}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		s2, err := Parse(s.String())
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", s, in, err)
		}
		if s2.String() != s.String() {
			t.Fatalf("canonical form not stable: %q -> %q", s, s2)
		}
		for _, m := range sets {
			for _, g := range []bool{false, true} {
				l := Labels{Map: m, Global: g}
				if s.Matches(l) != s2.Matches(l) {
					t.Fatalf("%q and its canonical form %q disagree on %v", in, s, l)
				}
			}
		}
	})
}
