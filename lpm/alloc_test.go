package lpm

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"runtime"
	"testing"
	"time"
)

// TestLookupAllocs pins Lookup and LookupBatch at zero allocations, with
// hits in tbl24, in groups and in IPv6 nodes.
func TestLookupAllocs(t *testing.T) {
	rng := newRand(t, 31)
	v4, v6 := realTable(t)
	t4, _ := ipv4.fill(t, rng, append(sample(rng, v4, 5000), longPrefixes(rng, 500)...))
	t6, _ := ipv6.fill(t, rng, sample(rng, v6, 5000))
	addrs4 := make([]uint32, 256)
	addrs6 := make([][16]byte, 256)
	for i := range addrs4 {
		addrs4[i] = rng.Uint32()
		addrs6[i] = randomAddr6(rng)
	}
	nhs := make([]uint32, 256)
	var sink uint32
	cases := []struct {
		name string
		f    func()
	}{
		{"Table4.Lookup", func() {
			for _, a := range addrs4 {
				nh, _ := t4.Lookup(a)
				sink += nh
			}
		}},
		{"Table4.LookupBatch", func() { t4.LookupBatch(addrs4, nhs) }},
		{"Table6.Lookup", func() {
			for _, a := range addrs6 {
				nh, _ := t6.Lookup(a)
				sink += nh
			}
		}},
		{"Table6.LookupBatch", func() { t6.LookupBatch(addrs6, nhs) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tc.f); n != 0 {
				t.Errorf("%v allocations per run, want 0", n)
			}
		})
	}
	_ = sink
}

// TestInline checks that the compiler can inline the single-address lookups,
// which keeps them cheap in per-packet loops: it builds the package with
// -gcflags=-m and reads the compiler's inlining decisions.
func TestInline(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package")
	}
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("inlining budget checked on 64-bit amd64 and arm64")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "build", "-gcflags=-m", ".")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out.String())
	}
	for _, fn := range []string{"(*Table4).Lookup", "(*Table6).Lookup"} {
		if !regexp.MustCompile(`can inline ` + regexp.QuoteMeta(fn) + `\b`).Match(out.Bytes()) {
			t.Errorf("%s cannot be inlined", fn)
		}
	}
}
