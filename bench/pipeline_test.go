package bench

import (
	"context"
	"testing"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/internal/bgptable"
)

func TestPipelineSuiteQuick(t *testing.T) {
	s, ok := Lookup("pipeline")
	if !ok {
		t.Fatal("pipeline suite not registered")
	}
	res, err := Run(context.Background(), s, Options{Quick: true, BenchTime: "200x"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"mem-port-replay/ns_per_op": true}
	for _, c := range []string{"v4-forward", "v4-vxlan-encap", "v4-ipip-encap", "v4-vxlan-decap"} {
		for _, m := range []string{"ns_per_op", "mpps", "allocs_per_op"} {
			want[c+"/"+m] = true
		}
	}
	for _, r := range res {
		if r.Suite != "pipeline" || r.Impl != "tabby" {
			t.Errorf("unexpected result %+v", r)
		}
		if r.Metric == "allocs_per_op" {
			if r.Value != 0 {
				t.Errorf("%s allocates %.2f per packet", r.Case, r.Value)
			}
		} else if r.Value <= 0 {
			t.Errorf("%s %s = %v, want > 0", r.Case, r.Metric, r.Value)
		}
		delete(want, r.Case+"/"+r.Metric)
	}
	for k := range want {
		t.Errorf("missing result %s", k)
	}
}

// BenchmarkPipeline is the pipeline suite as Go benchmarks, on the full table:
// go test ./bench -run '^$' -bench Pipeline -cpuprofile cpu.out
func BenchmarkPipeline(b *testing.B) {
	v4, _ := bgptable.MustPrefixes()
	for _, pc := range []pipelineCase{
		{name: "v4-forward", mode: datapath.EncapNone},
		{name: "v4-vxlan-encap", mode: datapath.EncapVXLAN},
		{name: "v4-ipip-encap", mode: datapath.EncapIPIP},
		{name: "v4-vxlan-decap", decap: true},
	} {
		w, _, _, err := pipelineSetup(v4, pc)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(pc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w.Poll()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*pipelineBatch), "ns/pkt")
		})
	}
}

// BenchmarkMemPortReplay is the mem port's share of the pipeline figures:
// receiving a batch of replayed 64-byte frames and releasing them.
func BenchmarkMemPortReplay(b *testing.B) {
	v4, _ := bgptable.MustPrefixes()
	_, port, _, err := pipelineSetup(v4[:1000], pipelineCase{name: "v4-forward"})
	if err != nil {
		b.Fatal(err)
	}
	frames := make([]datapath.Frame, pipelineBatch)
	b.ReportAllocs()
	for b.Loop() {
		n := port.Receive(frames)
		port.Release(frames[:n])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*pipelineBatch), "ns/pkt")
}
