package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/tabbynet/tabby/bench/topo"
	"github.com/tabbynet/tabby/internal/bgptable"
)

// ErrNotRoot is returned by Run when it cannot create namespaces.
var ErrNotRoot = errors.New("e2e: needs root (network namespaces, XDP, AF_XDP)")

// Run builds the topology, loads the routes, runs every case of cfg for every
// implementation (alternating: kernel, afxdp, kernel, afxdp, ... per case),
// tears everything down and returns the results. It returns the results
// measured so far together with an error if a step fails.
func Run(ctx context.Context, cfg Config) (results []Result, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	emit := func(r Result) {
		results = append(results, r)
		if cfg.Emit != nil {
			cfg.Emit(r)
		}
	}
	p := cfg.Progress
	unlock, err := lockMachine(ctx, p)
	if err != nil {
		return nil, err
	}
	defer unlock()
	runStart := time.Now()
	if cleaned, err := topo.Cleanup(); err != nil {
		return nil, fmt.Errorf("e2e: clean up earlier runs: %w", err)
	} else if len(cleaned) > 0 {
		p("removed leftovers of crashed runs: %v", cleaned)
	}
	// Two goroutines spin on locked threads during a phase (the traffic
	// endpoint and the engine's worker); extra Ps let the rest of the
	// runtime (timers, this goroutine, GC) run without preempting them.
	prevProcs := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(max(prevProcs, runtime.NumCPU()+2))
	defer runtime.GOMAXPROCS(prevProcs)
	// The traffic thread's pinning may have been inherited by threads the
	// runtime cloned from it; undo that.
	defer unpinThreads(0)

	// The afxdp DUT's worker runs in this process, next to the generator
	// and sink goroutines. A worker keeps a Go P while it polls; with
	// GOMAXPROCS = CPUs the harness's goroutines then queue for the other
	// P, and the worker is preempted every 10 ms (sysmon) whenever one is
	// runnable, which a separate agent process would not suffer: measured
	// p99 2.6 ms with 2 Ps against 0.27 ms with 4 on the 2-vCPU VM. One P
	// more than CPUs for the DUT worker and one for the traffic thread
	// (which also holds its P while it sends) remove that artifact; the OS
	// still shares the CPUs.
	if n := runtime.NumCPU() + 2; runtime.GOMAXPROCS(0) < n {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	}

	if bg, err := backgroundLoad(500 * time.Millisecond); err == nil {
		p("background load before the run: %.2f of %d CPUs busy (%s)", bg.cores, runtime.NumCPU(), bg)
	}

	tp, err := topo.New(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	defer func() {
		t0 := time.Now()
		if cerr := tp.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("e2e: teardown: %w", cerr))
		}
		p("teardown: namespaces of %s removed in %.1fs; whole run %.0fs", tp.Name, time.Since(t0).Seconds(),
			time.Since(runStart).Seconds())
	}()
	p("topology %s: gen -> dut -> sink (veths, MTU %d)", tp.Name, linkMTU)
	l, err := buildLab(tp)
	if err != nil {
		return nil, fmt.Errorf("e2e: topology: %w", err)
	}
	l.pollMode, l.nice, l.ring, l.batch = cfg.PollMode, cfg.WorkerNice, cfg.RingSize, cfg.BatchSize
	if cfg.PinWorker {
		l.workerCPU = dutWorkerCPU()
	}

	v4, _, err := bgptable.Prefixes()
	if err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	routes := usableRoutes(v4, cfg.Routes)
	p("routes: %d of the %d IPv4 prefixes of the real BGP table (excluding ranges that overlap the lab's)", len(routes), len(v4))

	duts := map[string]dutImpl{}
	var loads []Result
	if slices.Contains(cfg.Impls, ImplKernel) {
		if err := l.setupKernelDataplane(!cfg.NoKernelRPS); err != nil {
			return results, fmt.Errorf("e2e: kernel dataplane: %w", err)
		}
		p("kernel: loading %d routes through rtnetlink (%d per sendmsg)...", len(routes), routeBatch)
		t0 := time.Now()
		if err := loadKernelRoutes(l.dut, routes, sinkIP, dutOutIf); err != nil {
			return results, fmt.Errorf("e2e: kernel routes: %w", err)
		}
		d := time.Since(t0)
		p("kernel: %d routes loaded in %.2fs (%.0f routes/s); vxlan.calico + FDB/neighbour for the remote VTEP; RPS on dut/%s: %v",
			len(routes), d.Seconds(), float64(len(routes))/d.Seconds(), dutInIf, !cfg.NoKernelRPS)
		loads = append(loads, Result{Case: CaseRouteLoad, Impl: ImplKernel, Metric: MetricLoadTime, Value: d.Seconds(), Unit: "s"},
			Result{Case: CaseRouteLoad, Impl: ImplKernel, Metric: MetricRoutes, Value: float64(len(routes)), Unit: "routes"})
		duts[ImplKernel] = &kernelDUT{l: l}
	}
	if slices.Contains(cfg.Impls, ImplAFXDP) {
		p("afxdp: inserting %d routes into datapath.Tables...", len(routes))
		a, d, err := newAFXDPDUT(l, routes, cfg.Logger)
		if err != nil {
			return results, fmt.Errorf("e2e: afxdp tables: %w", err)
		}
		p("afxdp: %d routes inserted in %.2fs (%.0f routes/s)", len(routes), d.Seconds(), float64(len(routes))/d.Seconds())
		loads = append([]Result{{Case: CaseRouteLoad, Impl: ImplAFXDP, Metric: MetricLoadTime, Value: d.Seconds(), Unit: "s"},
			{Case: CaseRouteLoad, Impl: ImplAFXDP, Metric: MetricRoutes, Value: float64(len(routes)), Unit: "routes"}}, loads...)
		duts[ImplAFXDP] = a
	}
	for _, r := range loads {
		emit(r)
	}

	ep, err := newEndpoint(l, cfg.Logger)
	if err != nil {
		return results, fmt.Errorf("e2e: traffic endpoint: %w", err)
	}
	defer func() {
		if cerr := ep.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("e2e: close traffic endpoint: %w", cerr))
		}
	}()
	stopWatch := context.AfterFunc(ctx, ep.interrupt)
	defer stopWatch()
	p("generator on gen/%s and sink on sink/%s: AF_XDP copy mode, traffic thread pinned to cpu%d", genIf, sinkIf, trafficCPU)

	r := &runner{cfg: &cfg, l: l, ep: ep, duts: duts, emit: emit, routes: routes}
	for _, cs := range cfg.cases() {
		if err := ctx.Err(); err != nil {
			return results, err
		}
		if err := r.runCase(ctx, cs); err != nil {
			return results, fmt.Errorf("e2e: %s: %w", cs.name(), err)
		}
	}
	return results, nil
}

// backgroundLoad samples how busy the machine is before the run.
func backgroundLoad(d time.Duration) (cpuDelta, error) {
	a, err := readCPUStat()
	if err != nil {
		return cpuDelta{}, err
	}
	time.Sleep(d)
	b, err := readCPUStat()
	if err != nil {
		return cpuDelta{}, err
	}
	return a.to(b), nil
}

type runner struct {
	cfg    *Config
	l      *lab
	ep     *endpoint
	duts   map[string]dutImpl
	emit   func(Result)
	routes []netip.Prefix
	// policies caches the policy worlds by rule count.
	policies map[int]*policyWorld
}

// runCase runs the throughput phases (alternating implementations, Reps
// times), then a latency phase per implementation at a rate both sustained,
// and emits the case's results.
func (r *runner) runCase(ctx context.Context, cs caseSpec) (err error) {
	cfg, p := r.cfg, r.cfg.Progress
	var impls []string
	for _, impl := range cfg.Impls {
		if ok, why := cs.supports(impl); ok {
			impls = append(impls, impl)
		} else {
			p("%s: %s skipped (%s)", cs.name(), impl, why)
		}
	}
	if len(impls) == 0 {
		return nil
	}
	fs, err := buildFlows(cs, cfg.Flows, macs{gen: r.l.genMAC, dutIn: r.l.dutInMAC}, r.routes, 1)
	if err != nil {
		return err
	}
	policyLoad := map[string]time.Duration{}
	if cs.isPolicy() {
		unload, perr := r.setupPolicy(ctx, cs, impls, fs, policyLoad)
		defer func() {
			if uerr := unload(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("unload policy: %w", uerr))
			}
		}()
		if perr != nil {
			return perr
		}
	}
	thr := map[string][]phaseResult{}
	for rep := range cfg.Reps {
		for _, impl := range impls {
			res, dr, err := r.runPhase(ctx, cs, impl, phase{flows: fs, warmup: cfg.Warmup, duration: cfg.Duration})
			if err != nil {
				return fmt.Errorf("%s throughput: %w", impl, err)
			}
			thr[impl] = append(thr[impl], res)
			p("%s %s rep %d/%d: sent %d (%.3f Mpps)%s delivered %d (%.3f Mpps) loss %.2f%%; sink socket drops %d, reordered %d, stray %d; "+
				"machine %.2f CPUs busy (%s) => %.2f CPU-s/Mpkt; traffic thread %.0f%% of a CPU, other harness threads %.0f%%; dut: %s; %s",
				cs.name(), impl, rep+1, cfg.Reps, res.sent, res.genPPS()/1e6, deniedNote(cs, res), res.recv, res.pps()/1e6, res.lossPct(),
				res.sinkDrops, res.reordered, res.stray, res.cpu.cores, res.cpu, res.cpuPerMpkt(), 100*res.threadCPU, 100*res.otherCPU,
				dr.detail, res.veth)
		}
	}
	// The latency phase runs at a rate every implementation sustained.
	best := map[string]phaseResult{}
	lowest := math.Inf(1)
	for _, impl := range impls {
		best[impl] = medianRun(thr[impl])
		if m := best[impl].pps(); m > 0 {
			lowest = min(lowest, m)
		}
	}
	rate := cfg.LatencyFraction * lowest
	if math.IsInf(lowest, 1) || rate < 1000 {
		rate = 1000
	}
	lat := map[string]phaseResult{}
	for _, impl := range impls {
		res, dr, err := r.runPhase(ctx, cs, impl, phase{flows: fs, warmup: cfg.Warmup / 2, duration: cfg.LatencyDuration,
			rate: rate, latency: true})
		if err != nil {
			return fmt.Errorf("%s latency: %w", impl, err)
		}
		lat[impl] = res
		p("%s %s latency at %.0f pps (%.0f%% of the lower max): sent %d (%d slots skipped: generator not running)%s delivered %d loss %.3f%%, "+
			"%d samples: p50 %.1fµs p99 %.1fµs p99.9 %.1fµs; machine %.2f CPUs busy, traffic thread %.0f%%, other harness threads %.0f%%; dut: %s; %s",
			cs.name(), impl, rate, 100*cfg.LatencyFraction, res.sent, res.skipped, deniedNote(cs, res), res.recv, res.lossPct(), res.latSamples,
			res.p50/1e3, res.p99/1e3, res.p999/1e3, res.cpu.cores, 100*res.threadCPU, 100*res.otherCPU, dr.detail, res.veth)
	}
	// afxdp first: the bench table's ratio column then reads afxdp/kernel.
	for _, impl := range emitOrder(impls) {
		a, lr := best[impl], lat[impl]
		var extra []Result
		if cs.isPolicy() {
			extra = []Result{
				{Metric: MetricPolicyLoad, Value: ms(policyLoad[impl]), Unit: "ms"},
				{Metric: MetricDeniedSent, Value: a.deniedSentPct(), Unit: "%"},
				{Metric: MetricDeniedLeak, Value: a.leakPct(), Unit: "%"},
			}
		}
		for _, m := range append([]Result{
			{Metric: MetricPPS, Value: a.pps(), Unit: "pps"},
			{Metric: MetricGenPPS, Value: a.genPPS(), Unit: "pps"},
			{Metric: MetricLoss, Value: a.lossPct(), Unit: "%"},
			{Metric: MetricSinkDrop, Value: pct(a.sinkDrops, a.sent), Unit: "%"},
			{Metric: MetricCPU, Value: a.cpuPerMpkt(), Unit: "CPU-s/Mpkt"},
			{Metric: MetricGenCPU, Value: 100 * a.threadCPU, Unit: "%"},
			{Metric: MetricEngineCPU, Value: 100 * a.otherCPU, Unit: "%"},
			{Metric: MetricLatRate, Value: lr.genPPS(), Unit: "pps"},
			{Metric: MetricLatLoss, Value: lr.lossPct(), Unit: "%"},
			{Metric: MetricLatP50, Value: lr.p50 / 1e3, Unit: "µs"},
			{Metric: MetricLatP99, Value: lr.p99 / 1e3, Unit: "µs"},
			{Metric: MetricLatP999, Value: lr.p999 / 1e3, Unit: "µs"},
		}, extra...) {
			m.Case, m.Impl = cs.name(), impl
			r.emit(m)
		}
	}
	return nil
}

// setupPolicy prepares a policy case: builds its policy world (once per
// rule count), installs it in every implementation (recording the load
// times in load) and checks in each that an allowed flow passes and a
// denied one does not. unload removes the policy again (the kernel's
// nftables table; the afxdp tables only enforce it in policy cases); it
// is set even when err is.
func (r *runner) setupPolicy(ctx context.Context, cs caseSpec, impls []string, fs *flowSet,
	load map[string]time.Duration) (unload func() error, err error) {
	p := r.cfg.Progress
	var loaded []policyDUT
	unload = func() error {
		var errs []error
		for _, d := range loaded {
			errs = append(errs, d.unloadPolicy())
		}
		return errors.Join(errs...)
	}
	n := policyRules(cs.family)
	pw := r.policies[n]
	if pw == nil {
		t0 := time.Now()
		if pw, err = buildPolicyWorld(n); err != nil {
			return unload, err
		}
		if r.policies == nil {
			r.policies = map[int]*policyWorld{}
		}
		r.policies[n] = pw
		p("%s: policy of %d rules (acltest.RuleScale: selectors over 2000 pods, CIDRs, mostly TCP ports) for the %d servers behind the sink; "+
			"rule %d (%s rule %d) allows UDP/%d from the %d clients behind gen; the %d intruders' flows (1 in %d) match no rule; built in %.0f ms",
			cs.name(), n, len(policyServers), pw.allowIndex+1, pw.allowPolicy, pw.allowRule, udpDstPort, len(policyClients),
			len(policyIntruders), policyDenyEvery, ms(time.Since(t0)))
	}
	for _, impl := range impls {
		d, ok := r.duts[impl].(policyDUT)
		if !ok {
			return unload, fmt.Errorf("%s cannot load a policy", impl)
		}
		loaded = append(loaded, d)
		t, desc, err := d.loadPolicy(pw)
		if err != nil {
			return unload, fmt.Errorf("%s: load policy: %w", impl, err)
		}
		load[impl] = t
		p("%s %s: policy loaded in %.0f ms: %s", cs.name(), impl, ms(t), desc)
	}
	for _, impl := range impls {
		desc, err := r.checkPolicy(ctx, cs, impl, fs)
		if err != nil {
			return unload, fmt.Errorf("%s: %w", impl, err)
		}
		p("%s %s: functional check passed: %s", cs.name(), impl, desc)
	}
	return unload, nil
}

// deniedNote describes the denied flows' frames of a policy case's phase.
func deniedNote(cs caseSpec, r phaseResult) string {
	if !cs.isPolicy() {
		return ""
	}
	return fmt.Sprintf(", of which %d (%.1f%%) of denied flows (%d reached the sink)", r.deniedSent, r.deniedSentPct(), r.leaked)
}

// runPhase starts impl for cs, runs one traffic phase and stops impl.
func (r *runner) runPhase(ctx context.Context, cs caseSpec, impl string, ph phase) (phaseResult, dutReport, error) {
	d := r.duts[impl]
	if err := d.start(ctx, cs); err != nil {
		return phaseResult{}, dutReport{}, fmt.Errorf("start: %w", err)
	}
	v0 := r.l.vethDrops()
	res := r.ep.run(ph)
	res.veth = r.l.vethDrops().sub(v0)
	rep, stopErr := d.stop()
	if res.err != nil {
		return res, rep, errors.Join(res.err, ctx.Err())
	}
	if stopErr != nil {
		return res, rep, fmt.Errorf("stop: %w", stopErr)
	}
	return res, rep, nil
}

// emitOrder returns impls with afxdp first.
func emitOrder(impls []string) []string {
	out := slices.Clone(impls)
	slices.SortStableFunc(out, func(a, b string) int { return implRank(b) - implRank(a) })
	return out
}

func pct(part, whole uint64) float64 {
	if whole == 0 {
		return 0
	}
	return 100 * float64(part) / float64(whole)
}

// medianRun returns the run with the median delivered rate (of an even
// number, the upper one): its figures are reported together, so they stay
// consistent with each other.
func medianRun(runs []phaseResult) phaseResult {
	s := slices.Clone(runs)
	slices.SortStableFunc(s, func(a, b phaseResult) int { return cmp.Compare(a.pps(), b.pps()) })
	return s[len(s)/2]
}
