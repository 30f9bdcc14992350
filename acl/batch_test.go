package acl_test

import (
	"fmt"
	"testing"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/acl/acltest"
)

func TestCheckBatchMatchesCheck(t *testing.T) {
	w := acltest.Generate(42, acltest.Small)
	cp, err := acl.Compile(&w.State, acl.Options{Node: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	pkts := w.Packets(1, 1000)
	out := make([]acl.Check, len(pkts))
	cp.CheckBatch(pkts[:999], out)
	for i := range pkts[:999] {
		if got := cp.Check(&pkts[i]); got != out[i] {
			t.Fatalf("packet %d: batch %+v, single %+v", i, out[i], got)
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	for _, n := range []int{100, 10000, 100000} {
		w := acltest.RuleScale(1, n)
		cp, err := acl.Compile(&w.State, acl.Options{Node: acltest.TargetNode})
		if err != nil {
			b.Fatal(err)
		}
		pkts := w.TargetPackets(2, 1<<14)
		out := make([]acl.Check, 256)
		b.Run(fmt.Sprintf("rules-%d/batch", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				cp.CheckBatch(pkts[i:i+256], out)
				i = (i + 256) % len(pkts)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256), "ns/pkt")
		})
		b.Run(fmt.Sprintf("rules-%d/single", n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				for j := 0; j < 256; j++ {
					out[j] = cp.Check(&pkts[i+j])
				}
				i = (i + 256) % len(pkts)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256), "ns/pkt")
		})
	}
}
