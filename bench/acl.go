package bench

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/acl/acltest"
)

func init() {
	Register(Suite{
		Name: "acl",
		Doc: "network policy: classify ns/packet for 10..100k rules, tabby's compiled classifier vs the " +
			"first-match reference; conntrack hit; compile time and memory (10k endpoints x 1k policies); " +
			"incremental recompiles",
		Run: runACL,
	})
}

// aclRuleCounts are the rules-N cases.
var aclRuleCounts = []int{10, 100, 1000, 10000, 100000}

const aclBatch = 256

var aclSink acl.Verdict

func runACL(ctx context.Context, opt Options, emit func(Result)) error {
	for _, n := range aclRuleCounts {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := aclRules(opt, n, emit); err != nil {
			return err
		}
	}
	if err := aclConntrack(opt, emit); err != nil {
		return err
	}
	return aclCompile(ctx, opt, emit)
}

// aclRules measures one rules-N case: the RuleScale world's target endpoint
// has n ingress rules; packets come from pods, CIDR borders and random
// addresses.
func aclRules(opt Options, n int, emit func(Result)) error {
	name := fmt.Sprintf("rules-%d", n)
	if opt.Quick {
		n = min(n, 1000)
	}
	w := acltest.RuleScale(1, n)
	start := time.Now()
	cp, err := acl.Compile(&w.State, acl.Options{Node: acltest.TargetNode})
	if err != nil {
		return err
	}
	ref, err := acl.NewReference(&w.State, acl.Options{Node: acltest.TargetNode})
	if err != nil {
		return err
	}
	opt.Progressf("acl %s: %d rules compiled in %v", name, cp.Stats().Rules, time.Since(start).Round(time.Millisecond))
	pkts := w.TargetPackets(2, 1<<14)
	out := make([]acl.Check, aclBatch)
	m := Measure(opt, aclBatch, func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			cp.CheckBatch(pkts[i:i+aclBatch], out)
			i += aclBatch
			if i+aclBatch > len(pkts) {
				i = 0
			}
		}
		aclSink = out[0].Verdict
	})
	emit(Result{Case: name, Impl: "tabby", Metric: "ns_per_op", Value: m.NsPerOp, Unit: "ns"})
	emit(Result{Case: name, Impl: "tabby", Metric: "allocs_per_op", Value: m.AllocsPerOp, Unit: "allocs"})
	// The reference is slow with many rules: one packet per iteration, and
	// testing.Benchmark samples as many as fit in the bench time.
	m = Measure(opt, 1, func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			v, _, _ := ref.Evaluate(&pkts[i])
			aclSink = v
			i++
			if i == len(pkts) {
				i = 0
			}
		}
	})
	emit(Result{Case: name, Impl: "reference", Metric: "ns_per_op", Value: m.NsPerOp, Unit: "ns"})
	emit(Result{Case: name, Impl: "reference", Metric: "allocs_per_op", Value: m.AllocsPerOp, Unit: "allocs"})
	return nil
}

// aclConntrack measures the established fast path: batches of packets of
// 32k open flows (both directions) through a Filter.
func aclConntrack(opt Options, emit func(Result)) error {
	w := acltest.RuleScale(1, 1000)
	cp, err := acl.Compile(&w.State, acl.Options{Node: acltest.TargetNode})
	if err != nil {
		return err
	}
	f := acl.NewFilter(acl.FilterConfig{})
	pkts := w.TargetPackets(3, 1<<15)
	var flows []acl.Packet
	out := make([]acl.Decision, aclBatch)
	for i := 0; i+aclBatch <= len(pkts); i += aclBatch {
		f.Process(cp, pkts[i:i+aclBatch], out, 1)
		for j, d := range out {
			if d.Verdict == acl.Allowed {
				p := pkts[i+j]
				flows = append(flows, p)
				r := p
				r.Src4, r.Dst4, r.SrcPort, r.DstPort = p.Dst4, p.Src4, p.DstPort, p.SrcPort
				if p.Proto == 1 {
					r.DstPort = 0
				}
				flows = append(flows, r)
			}
		}
	}
	for len(flows)%aclBatch != 0 {
		flows = flows[:len(flows)-1]
	}
	if len(flows) == 0 {
		return fmt.Errorf("acl conntrack: no allowed flows")
	}
	now := int64(2)
	m := Measure(opt, aclBatch, func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			f.Process(cp, flows[i:i+aclBatch], out, now)
			i += aclBatch
			if i == len(flows) {
				i = 0
			}
		}
	})
	st := f.Stats()
	if st.Established == 0 {
		return fmt.Errorf("acl conntrack: no hits")
	}
	emit(Result{Case: "conntrack-hit", Impl: "tabby", Metric: "ns_per_op", Value: m.NsPerOp, Unit: "ns"})
	emit(Result{Case: "conntrack-hit", Impl: "tabby", Metric: "allocs_per_op", Value: m.AllocsPerOp, Unit: "allocs"})
	return nil
}

// aclCompile measures a full compile of a cluster (10k endpoints × 1k
// policies; a tenth of that when quick) and incremental recompiles.
func aclCompile(ctx context.Context, opt Options, emit func(Result)) error {
	eps, pols := 10000, 1000
	if opt.Quick {
		eps, pols = 1000, 100
	}
	w := acltest.Cluster(1, eps, pols)
	runs := 3
	if opt.Quick {
		runs = 1
	}
	var best time.Duration
	var st acl.Stats
	var c *acl.Compiler
	var heap uint64
	for r := 0; r < runs; r++ {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		c = acl.NewCompiler(acl.Options{})
		for _, n := range w.Namespaces {
			c.SetNamespace(n)
		}
		for _, e := range w.Endpoints {
			if err := c.SetEndpoint(e); err != nil {
				return err
			}
		}
		for _, p := range w.Policies {
			if err := c.SetPolicy(p); err != nil {
				return err
			}
		}
		cp, s := c.Compile()
		d := time.Since(start)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(cp)
		if r == 0 || d < best {
			best, st = d, s
		}
		heap = after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	opt.Progressf("acl compile: %d endpoints, %d policies, %d rules: %v, %d classifiers, %d B tables, %d B heap",
		st.Endpoints, st.Policies, st.Rules, best.Round(time.Millisecond), st.Classifiers, st.MemoryBytes, heap)
	cas := "compile-10k-endpoints-1k-policies"
	emit(Result{Case: cas, Impl: "tabby", Metric: "compile_ms", Value: ms(best), Unit: "ms"})
	emit(Result{Case: cas, Impl: "tabby", Metric: "bytes", Value: float64(st.MemoryBytes), Unit: "B"})
	emit(Result{Case: cas, Impl: "tabby", Metric: "heap_bytes", Value: float64(heap), Unit: "B"})

	// Incremental: one pod's labels change (it joins another app), then
	// changes back; one policy's port changes.
	iters := 10
	if opt.Quick {
		iters = 2
	}
	pod := w.Endpoints[1]
	var lab time.Duration
	for i := 0; i < iters; i++ {
		e := pod
		e.Labels = map[string]string{"app": fmt.Sprintf("app%d", i%3), "tier": "web", "moved": fmt.Sprint(i)}
		start := time.Now()
		if err := c.SetEndpoint(e); err != nil {
			return err
		}
		c.Compile()
		lab += time.Since(start)
	}
	var edit time.Duration
	for i := 0; i < iters; i++ {
		p := w.Policies[(7*i)%len(w.Policies)]
		p.Ingress = append([]acl.Rule{{Action: acl.Allow, Protocol: acl.ProtoTCP,
			Destination: acl.EntityRule{Ports: []acl.Port{{Min: uint16(20000 + i), Max: uint16(20000 + i)}}}}}, p.Ingress...)
		start := time.Now()
		if err := c.SetPolicy(p); err != nil {
			return err
		}
		_, s := c.Compile()
		edit += time.Since(start)
		if i == 0 {
			opt.Progressf("acl policy edit: rebuilt %d of %d classifiers", s.Built, s.Classifiers)
		}
	}
	emit(Result{Case: "incremental-label-change", Impl: "tabby", Metric: "compile_ms", Value: ms(lab) / float64(iters), Unit: "ms"})
	emit(Result{Case: "incremental-policy-edit", Impl: "tabby", Metric: "compile_ms", Value: ms(edit) / float64(iters), Unit: "ms"})
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
