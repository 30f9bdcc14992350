package e2e

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/datapath/afxdp"
)

// Generator and sink socket sizes.
const (
	genFrames    = 4096
	genRing      = 2048
	sinkFrames   = 8192
	sinkRing     = 4096
	umemFrame    = 2048
	txBatch      = 64
	rxBatch      = 256
	rxRoundsPoll = 4 // RX batches drained per loop iteration
)

// phase is one measurement the traffic endpoint runs.
type phase struct {
	flows *flowSet
	// warmup is sent first and not counted.
	warmup time.Duration
	// duration is the send window.
	duration time.Duration
	// rate is the fixed send rate in packets per second; 0 sends as fast
	// as the generator can.
	rate float64
	// latency records one-way latencies into the histogram.
	latency bool
}

// phaseResult is what a phase measured.
type phaseResult struct {
	sent, recv, recvBytes uint64
	// stray counts frames the sink received that were not of this phase
	// (stragglers of the previous phase, ARP, ICMP errors).
	stray uint64
	// elapsed is the send window as it really lasted.
	elapsed time.Duration
	cpu     cpuDelta
	// threadCPU is the CPU time of the traffic thread (generator and
	// sink) over the send window, in CPUs; otherCPU that of the process's
	// other threads (the afxdp engine's worker, the Go runtime).
	threadCPU, otherCPU float64
	// sinkDrops are frames the sink socket's kernel side dropped (RX ring
	// full, no fill frame).
	sinkDrops uint64
	// genTxRingFull counts frames the generator's TX ring refused.
	genTxRingFull uint64
	// skipped counts fixed-rate send slots the generator skipped because
	// it had not been running (see endpoint.send).
	skipped uint64
	// reordered counts frames that arrived after a later one.
	reordered uint64
	// p50, p99, p999 are latency quantiles in ns; latSamples how many
	// latencies were recorded.
	p50, p99, p999 float64
	latSamples     uint64
	// deniedSent counts the sent frames of denied flows (policy cases);
	// leaked those of them the sink received (not counted in recv).
	deniedSent, leaked uint64
	// veth counts the drops of the veths on the path (filled in by the
	// runner).
	veth vethDrops
	err  error
}

// cpuPerMpkt is the machine's busy CPU-seconds per million delivered
// packets (NaN if nothing was delivered).
func (r phaseResult) cpuPerMpkt() float64 {
	if r.recv == 0 {
		return math.NaN()
	}
	return r.cpu.busySec / (float64(r.recv) / 1e6)
}

func (r phaseResult) pps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.recv) / r.elapsed.Seconds()
}

func (r phaseResult) genPPS() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.sent) / r.elapsed.Seconds()
}

// lossPct is the loss of the frames that should have arrived: denied
// flows' frames are neither sent nor lost for it.
func (r phaseResult) lossPct() float64 {
	allowed := r.sent - min(r.deniedSent, r.sent)
	if allowed == 0 {
		return 100
	}
	return 100 * max(0, 1-float64(r.recv)/float64(allowed))
}

// deniedSentPct is the share of sent frames that belong to denied flows.
func (r phaseResult) deniedSentPct() float64 { return pct(r.deniedSent, r.sent) }

// leakPct is the share of the denied flows' frames that reached the sink.
func (r phaseResult) leakPct() float64 { return pct(r.leaked, r.deniedSent) }

type phaseReq struct {
	p    phase
	resp chan phaseResult
}

// endpoint is the traffic generator (an AF_XDP socket on gen/eth0) and the
// sink (an AF_XDP socket on sink/eth0 behind a steering program that
// redirects every IPv4 frame), driven by one goroutine locked to an OS
// thread pinned to trafficCPU. That goroutine owns both UMEMs and sockets.
type endpoint struct {
	origin time.Time

	gu    *afxdp.UMEM
	gs    *afxdp.Socket
	su    *afxdp.UMEM
	ss    *afxdp.Socket
	steer *afxdp.Steering

	reqs chan phaseReq
	done chan struct{}
	stop atomic.Bool
	// tid is the traffic thread's id, set before ready is closed.
	tid   atomic.Int32
	ready chan struct{}

	txb, rxb []afxdp.Frame
	hist     *histogram
	phaseID  uint16
	// Receive state of the current phase.
	cur       uint16
	record    bool
	recv      uint64
	recvBytes uint64
	stray     uint64
	// leaked counts frames of denied flows received.
	leaked uint64
	// skipped counts fixed-rate send slots skipped after a stall.
	skipped uint64
	// maxSeq is the highest sequence number received; reordered counts
	// frames that arrived after one with a higher number.
	maxSeq, reordered uint64
	closeErr          error
}

// newEndpoint creates the generator and sink sockets in their namespaces
// and starts the traffic goroutine.
func newEndpoint(l *lab, log *slog.Logger) (_ *endpoint, err error) {
	e := &endpoint{
		origin: time.Now(),
		reqs:   make(chan phaseReq),
		done:   make(chan struct{}),
		ready:  make(chan struct{}),
		txb:    make([]afxdp.Frame, txBatch),
		rxb:    make([]afxdp.Frame, rxBatch),
		hist:   newHistogram(),
	}
	defer func() {
		if err != nil {
			e.closeSockets()
		}
	}()
	if e.gu, err = afxdp.NewUMEM(afxdp.UMEMConfig{Frames: genFrames, FrameSize: umemFrame, Logger: log}); err != nil {
		return nil, fmt.Errorf("generator: %w", err)
	}
	if err = l.gen.Do(func() (err error) {
		// TX only: a small fill ring keeps the frames for sending.
		e.gs, err = e.gu.NewSocket(afxdp.SocketConfig{Interface: genIf, RxSize: 64, FillSize: 64,
			TxSize: genRing, CompletionSize: genRing, Mode: afxdp.ModeCopy})
		return err
	}); err != nil {
		return nil, fmt.Errorf("generator: %w", err)
	}
	if e.su, err = afxdp.NewUMEM(afxdp.UMEMConfig{Frames: sinkFrames, FrameSize: umemFrame, Logger: log}); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	if e.steer, err = afxdp.NewSteering(afxdp.SteeringConfig{Logger: log}); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	if err = e.steer.SetPodCIDRs([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	if err = l.sink.Do(func() error {
		// Native XDP on the veth also makes XDP frames (redirects, XDP
		// TX) into it work.
		att, err := e.steer.Attach(sinkIf, afxdp.XDPDriver)
		if err != nil {
			return err
		}
		if e.ss, err = e.su.NewSocket(afxdp.SocketConfig{Interface: sinkIf, RxSize: sinkRing, FillSize: sinkRing,
			TxSize: 64, CompletionSize: 64, Mode: afxdp.ModeCopy}); err != nil {
			return err
		}
		return att.Register(e.ss)
	}); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	go e.loop()
	<-e.ready
	return e, nil
}

// now returns monotonic nanoseconds since the endpoint's origin (Go's
// monotonic clock is CLOCK_MONOTONIC).
func (e *endpoint) now() int64 { return int64(time.Since(e.origin)) }

// run runs a phase on the traffic goroutine. First it lets every other
// thread of the process run on every CPU (see unpinThreads).
func (e *endpoint) run(p phase) phaseResult {
	unpinThreads(int(e.tid.Load()))
	resp := make(chan phaseResult, 1)
	select {
	case e.reqs <- phaseReq{p: p, resp: resp}:
	case <-e.done:
		return phaseResult{err: errors.New("traffic endpoint stopped")}
	}
	return <-resp
}

// interrupt makes a running phase end early (for cancellation).
func (e *endpoint) interrupt() { e.stop.Store(true) }

// close stops the traffic goroutine, which closes the sockets and detaches
// the sink's XDP program.
func (e *endpoint) close() error {
	e.stop.Store(true)
	close(e.reqs)
	<-e.done
	return e.closeErr
}

func (e *endpoint) loop() {
	defer close(e.done)
	// The thread stays locked (and dies with the goroutine): it is pinned.
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(trafficCPU)
	_ = unix.SchedSetaffinity(0, &set)
	e.tid.Store(int32(unix.Gettid()))
	close(e.ready)
	for req := range e.reqs {
		req.resp <- e.runPhase(req.p)
	}
	e.closeErr = e.closeSockets()
}

func (e *endpoint) closeSockets() error {
	var errs []error
	if e.ss != nil {
		errs = append(errs, e.ss.Close())
	}
	if e.steer != nil {
		errs = append(errs, e.steer.Close())
	}
	if e.su != nil {
		errs = append(errs, e.su.Close())
	}
	if e.gu != nil {
		errs = append(errs, e.gu.Close())
	}
	return errors.Join(errs...)
}

func (e *endpoint) nextPhase() uint16 {
	e.phaseID++
	return e.phaseID
}

func (e *endpoint) runPhase(p phase) phaseResult {
	var r phaseResult
	if p.warmup > 0 {
		e.beginRecv(e.nextPhase(), false)
		e.send(p.flows, p.warmup, p.rate)
		e.drain(20*time.Millisecond, 500*time.Millisecond)
	}
	if e.stop.Load() {
		r.err = errors.New("interrupted")
		return r
	}
	e.hist.reset()
	e.beginRecv(e.nextPhase(), p.latency)
	g0, s0 := e.gs.Stats(), e.ss.Stats()
	c0, err := readCPUStat()
	if err != nil {
		r.err = err
		return r
	}
	t0, p0 := rusage(unix.RUSAGE_THREAD), rusage(unix.RUSAGE_SELF)
	r.sent, r.deniedSent, r.elapsed = e.send(p.flows, p.duration, p.rate)
	t1, p1 := rusage(unix.RUSAGE_THREAD), rusage(unix.RUSAGE_SELF)
	c1, err := readCPUStat()
	if err != nil {
		r.err = err
		return r
	}
	r.cpu = c0.to(c1)
	if sec := r.elapsed.Seconds(); sec > 0 {
		r.threadCPU = (t1 - t0).Seconds() / sec
		r.otherCPU = ((p1 - p0) - (t1 - t0)).Seconds() / sec
	}
	e.drain(100*time.Millisecond, 2*time.Second)
	g1, s1 := e.gs.Stats(), e.ss.Stats()
	r.recv, r.recvBytes, r.stray, r.skipped, r.leaked = e.recv, e.recvBytes, e.stray, e.skipped, e.leaked
	r.reordered = e.reordered
	r.sinkDrops = (s1.KernelRxDropped - s0.KernelRxDropped) + (s1.KernelRxRingFull - s0.KernelRxRingFull)
	r.genTxRingFull = g1.TxRingFull - g0.TxRingFull
	if p.latency {
		r.latSamples = e.hist.count()
		r.p50, r.p99, r.p999 = e.hist.quantile(0.50), e.hist.quantile(0.99), e.hist.quantile(0.999)
	}
	if e.stop.Load() {
		r.err = errors.New("interrupted")
	}
	return r
}

// unpinThreads lets every thread of the process but except (0: none) run
// on every CPU. Threads the runtime cloned from the pinned traffic thread
// inherit its pinning; left so, one of them could end up running the
// engine's worker on the traffic CPU.
//
// The other threads are deliberately not confined to the CPUs the traffic
// thread leaves free: the Go runtime preempts a goroutine that runs for
// more than 10ms, and a locked goroutine (the traffic loop, the engine's
// worker) then only resumes after another thread has handed its P back. If
// that thread may only run on the CPU where the engine's worker spins, it
// waits for a scheduler slice (milliseconds), and the traffic thread stalls
// with frames in the sink's ring: a harness artefact in the latency. Left
// free, it runs on the CPU the parked thread just gave up.
func unpinThreads(except int) {
	var set unix.CPUSet
	for c := range runtime.NumCPU() {
		set.Set(c)
	}
	setThreadsAffinity(except, &set)
}

func setThreadsAffinity(except int, set *unix.CPUSet) {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, en := range entries {
		tid, err := strconv.Atoi(en.Name())
		if err != nil || (except != 0 && tid == except) {
			continue
		}
		_ = unix.SchedSetaffinity(tid, set)
	}
}

// rusage returns the user + system CPU time of the calling thread
// (RUSAGE_THREAD) or process (RUSAGE_SELF).
func rusage(who int) time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(who, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// beginRecv starts counting the frames of phase id.
func (e *endpoint) beginRecv(id uint16, record bool) {
	e.cur, e.record = id, record
	e.recv, e.recvBytes, e.stray, e.skipped, e.leaked = 0, 0, 0, 0, 0
	e.maxSeq, e.reordered = 0, 0
}

// send transmits the flows' frames, round robin, for d (as fast as possible,
// or at rate packets per second), draining the sink between batches. It
// returns how many frames the TX ring took, how many of those were of
// denied flows, and how long sending lasted.
func (e *endpoint) send(fs *flowSet, d time.Duration, rate float64) (sent, deniedSent uint64, elapsed time.Duration) {
	start := e.now()
	end := start + d.Nanoseconds()
	next := 0
	var seq uint64
	// slots counts the send slots of the fixed-rate schedule used up.
	var slots int64
	for !e.stop.Load() {
		now := e.now()
		if now >= end {
			break
		}
		want := txBatch
		if rate > 0 {
			due := int64(float64(now-start)*rate/1e9) - slots
			if due <= 0 {
				e.poll()
				continue
			}
			if due > 2*txBatch {
				// The thread was descheduled: skip the missed slots
				// rather than catch up with a burst the latency
				// would then measure.
				e.skipped += uint64(due - txBatch)
				slots += due - txBatch
				due = txBatch
			}
			want = int(min(due, txBatch))
		}
		n := e.gu.Alloc(e.txb[:want], 0)
		if n == 0 {
			e.gs.Service()
			e.poll()
			continue
		}
		ts := e.now()
		first := next
		for i := range e.txb[:n] {
			f := &e.txb[i]
			t := fs.templates[next]
			magic := uint16(markerMagic)
			if fs.denied != nil && fs.denied[next] {
				magic = markerMagicDenied
			}
			if next++; next == len(fs.templates) {
				next = 0
			}
			b := f.Buf[f.Off : f.Off+fs.frameLen]
			copy(b[:fs.markOff], t[:fs.markOff])
			putMarker(b[fs.markOff:], magic, e.cur, seq, ts)
			seq++
			f.Len = fs.frameLen
		}
		slots += int64(n)
		// Transmit queues a prefix of the batch (the rest is refused
		// for a full ring); the refused frames' flows go first in the
		// next batch, so that every flow gets its share of the frames.
		m := e.gs.Transmit(e.txb[:n])
		sent += uint64(m)
		next = (first + m) % len(fs.templates)
		if fs.denied != nil {
			for i := range m {
				if fs.denied[(first+i)%len(fs.templates)] {
					deniedSent++
				}
			}
		}
		e.poll()
	}
	return sent, deniedSent, time.Duration(e.now() - start)
}

// poll drains the sink's RX ring (a few batches) and counts the frames of
// the current phase.
func (e *endpoint) poll() {
	for range rxRoundsPoll {
		n := e.ss.Receive(e.rxb)
		if n == 0 {
			return
		}
		rts := e.now()
		for i := range e.rxb[:n] {
			f := &e.rxb[i]
			ph, seq, ts, denied, ok := readMarker(f.Buf[f.Off : f.Off+f.Len])
			if !ok || ph != e.cur {
				e.stray++
				continue
			}
			if denied {
				e.leaked++
				continue
			}
			if seq < e.maxSeq {
				e.reordered++
			} else {
				e.maxSeq = seq
			}
			e.recv++
			e.recvBytes += uint64(f.Len)
			if e.record {
				e.hist.record(rts - ts)
			}
		}
		e.ss.Release(e.rxb[:n])
	}
}

// drain flushes the generator's TX ring and keeps receiving until nothing
// arrived for idle (at most for limit).
func (e *endpoint) drain(idle, limit time.Duration) {
	start := e.now()
	last := start
	for {
		now := e.now()
		if now-start > limit.Nanoseconds() {
			return
		}
		e.gs.Service()
		before := e.recv + e.stray + e.leaked
		e.poll()
		if e.recv+e.stray+e.leaked != before {
			last = now
		} else if now-last > idle.Nanoseconds() && e.gs.TxOutstanding() == 0 {
			return
		}
	}
}
