package acl

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/tabbynet/tabby/acl/conntrack"
)

// Reason says how a Decision was reached.
type Reason uint8

// Reasons.
const (
	// ReasonNoPolicy: no compiled policy yet (the packet is dropped).
	ReasonNoPolicy Reason = iota
	// ReasonPolicy: classified by the policy (Check holds the results).
	ReasonPolicy
	// ReasonEstablished: part of a tracked, still allowed flow.
	ReasonEstablished
	// ReasonRelated: an ICMP error about a tracked flow.
	ReasonRelated
	// ReasonRevoked: a tracked flow the current policy no longer allows
	// (its conntrack entry is removed).
	ReasonRevoked
)

var reasonNames = [...]string{"no-policy", "policy", "established", "related", "revoked"}

func (r Reason) String() string {
	return nameAt(reasonNames[:], r)
}

// Decision is the policy stage's verdict for one packet and why: the
// matched rules are in Check (for an established flow, those that allowed
// it when it was last validated).
type Decision struct {
	Verdict Verdict
	Reason  Reason
	Check   Check
}

// FilterConfig configures a Filter.
type FilterConfig struct {
	Conntrack conntrack.Config
	// SweepBuckets is how many conntrack buckets each batch sweeps for
	// expired flows (default 4).
	SweepBuckets int
	// LogRate and LogBurst limit flow records of Log rules (default 100
	// per second, burst 100); LogRing is how many undrained records are
	// kept (default 1024; older ones are overwritten and counted).
	LogRate, LogBurst, LogRing int
}

// flow is what conntrack keeps per flow.
type flow struct {
	gen             uint64
	egress, ingress Result
	srcEP, dstEP    int32
	// origSport, origDport are the first packet's ports (for ICMP, its
	// type/code in origDport), to re-classify the flow after a policy
	// change.
	origSport, origDport uint16
}

// LogRecord is one flow record emitted for a Log rule.
type LogRecord struct {
	Time    int64
	Packet  Packet
	Verdict Verdict
	// Egress and Ingress are the results whose Logs fields name the Log
	// rules (Compiled.LogRules).
	Egress, Ingress Result
	Generation      uint64
}

// FilterCounters are a Filter's statistics.
type FilterCounters struct {
	Packets, Allowed, Denied          uint64
	Established, Related, Revalidated uint64
	Revoked, Logged, LogSuppressed    uint64
	LogOverwritten                    uint64
	Conntrack                         conntrack.Counters
}

// Filter is one worker's policy stage: conntrack first, then the compiled
// policy. It is owned by one goroutine (the worker's); only Stats may be
// called from others.
type Filter struct {
	ct      *conntrack.Table[flow]
	sweep   int
	c       FilterCounters
	pub     [17]atomic.Uint64
	ring    []LogRecord
	head    uint64
	tail    uint64
	tokens  float64
	rate    float64
	burst   float64
	lastTok int64
}

// NewFilter returns a Filter with an empty conntrack table.
func NewFilter(cfg FilterConfig) *Filter {
	f := &Filter{ct: conntrack.New[flow](cfg.Conntrack), sweep: cfg.SweepBuckets}
	if f.sweep <= 0 {
		f.sweep = 4
	}
	rate, burst, ring := cfg.LogRate, cfg.LogBurst, cfg.LogRing
	if rate <= 0 {
		rate = 100
	}
	if burst <= 0 {
		burst = 100
	}
	if ring <= 0 {
		ring = 1024
	}
	f.rate, f.burst, f.tokens = float64(rate), float64(burst), float64(burst)
	f.ring = make([]LogRecord, ring)
	return f
}

func ctKey(p *Packet) (conntrack.Key, bool) {
	sp, dp := p.SrcPort, p.DstPort
	if p.Proto == 1 || p.Proto == 58 {
		dp = sp // ICMP: both directions keyed by the echo identifier
	}
	if p.Family == IPv4 {
		return conntrack.MakeKey(false, p.Proto, 0, uint64(p.Src4), 0, uint64(p.Dst4), sp, dp)
	}
	s, d := key6(&p.Src6), key6(&p.Dst6)
	return conntrack.MakeKey(true, p.Proto, s[0], s[1], d[0], d[1], sp, dp)
}

// ForgetAddrs deletes the tracked flows that have one of addrs as either
// end (an endpoint deleted: a later pod reusing the address must not
// inherit its flows) and returns how many. Like Process, it must be called
// from the goroutine that owns the filter.
func (f *Filter) ForgetAddrs(addrs []netip.Addr) int {
	type k2 struct{ hi, lo uint64 }
	set4, set6 := map[uint64]bool{}, map[k2]bool{}
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			b := a.As4()
			set4[uint64(b[0])<<24|uint64(b[1])<<16|uint64(b[2])<<8|uint64(b[3])] = true
		} else if a.Is6() {
			b := a.As16()
			h := key6(&b)
			set6[k2{h[0], h[1]}] = true
		}
	}
	if len(set4)+len(set6) == 0 {
		return 0
	}
	n := f.ct.DeleteFunc(func(k *conntrack.Key) bool {
		if k.V6 {
			return set6[k2{k.AHi, k.ALo}] || set6[k2{k.BHi, k.BLo}]
		}
		return set4[k.ALo] || set4[k.BLo]
	})
	f.c.Conntrack = f.ct.Counters()
	f.publish()
	return n
}

// Process decides every packet of a batch: out[i] for pkts[i]. now is a
// monotonic clock in nanoseconds (one reading per batch is enough). pol
// may be nil (no snapshot yet): everything is denied. It does not
// allocate.
func (f *Filter) Process(pol *Compiled, pkts []Packet, out []Decision, now int64) {
	out = out[:len(pkts)]
	for i := range pkts {
		out[i] = f.decide(pol, &pkts[i], now)
	}
	f.ct.Sweep(now, f.sweep)
	f.c.Conntrack = f.ct.Counters()
	f.publish()
}

func (f *Filter) decide(pol *Compiled, p *Packet, now int64) Decision {
	f.c.Packets++
	if pol == nil {
		f.c.Denied++
		return Decision{Reason: ReasonNoPolicy}
	}
	k, fromB := ctKey(p)
	if e := f.ct.Lookup(&k, now); e != nil {
		v := &e.Val
		if v.gen != pol.Generation {
			// The policy changed since this flow was last checked:
			// re-classify its first packet's direction.
			f.c.Revalidated++
			orig := *p
			orig.Quoted = nil
			if fromB != e.OrigB {
				orig.Src4, orig.Dst4, orig.Src6, orig.Dst6 = p.Dst4, p.Src4, p.Dst6, p.Src6
			}
			orig.SrcPort, orig.DstPort = v.origSport, v.origDport
			chk := pol.Check(&orig)
			if chk.Verdict == Denied {
				f.ct.Delete(e)
				f.c.Revoked++
				f.c.Denied++
				return Decision{Verdict: Denied, Reason: ReasonRevoked, Check: chk}
			}
			v.gen, v.egress, v.ingress, v.srcEP, v.dstEP = pol.Generation, chk.Egress, chk.Ingress, chk.SrcEndpoint, chk.DstEndpoint
		}
		f.ct.Update(e, fromB, p.TCPFlags, now)
		f.c.Established++
		f.c.Allowed++
		return Decision{Verdict: Allowed, Reason: ReasonEstablished,
			Check: Check{Verdict: Allowed, Egress: v.egress, Ingress: v.ingress, SrcEndpoint: v.srcEP, DstEndpoint: v.dstEP}}
	}
	if q := p.Quoted; q != nil {
		qk, _ := ctKey(q)
		if e := f.ct.Lookup(&qk, now); e != nil && e.Val.gen == pol.Generation {
			f.c.Related++
			f.c.Allowed++
			return Decision{Verdict: Allowed, Reason: ReasonRelated,
				Check: Check{Verdict: Allowed, Egress: e.Val.egress, Ingress: e.Val.ingress, SrcEndpoint: -1, DstEndpoint: -1}}
		}
	}
	chk := pol.Check(p)
	if chk.Egress.Logs != 0 || chk.Ingress.Logs != 0 {
		f.logFlow(p, &chk, pol.Generation, now)
	}
	if chk.Verdict == Denied {
		f.c.Denied++
		return Decision{Verdict: Denied, Reason: ReasonPolicy, Check: chk}
	}
	f.c.Allowed++
	if p.Quoted == nil && !(p.Proto == 6 && p.TCPFlags&0x04 != 0) {
		f.ct.Insert(&k, fromB, p.TCPFlags, now, flow{gen: pol.Generation, egress: chk.Egress, ingress: chk.Ingress,
			srcEP: chk.SrcEndpoint, dstEP: chk.DstEndpoint, origSport: p.SrcPort, origDport: p.DstPort})
	}
	return Decision{Verdict: Allowed, Reason: ReasonPolicy, Check: chk}
}

func (f *Filter) logFlow(p *Packet, chk *Check, gen uint64, now int64) {
	if f.lastTok != 0 {
		f.tokens = min(f.burst, f.tokens+float64(now-f.lastTok)*f.rate/float64(time.Second))
	}
	f.lastTok = now
	f.c.Logged++
	if f.tokens < 1 {
		f.c.LogSuppressed++
		return
	}
	f.tokens--
	if f.head-f.tail == uint64(len(f.ring)) {
		f.tail++
		f.c.LogOverwritten++
	}
	r := &f.ring[f.head%uint64(len(f.ring))]
	*r = LogRecord{Time: now, Packet: *p, Verdict: chk.Verdict, Egress: chk.Egress, Ingress: chk.Ingress, Generation: gen}
	r.Packet.Quoted = nil
	f.head++
}

// DrainLogs hands the pending flow records to fn, oldest first (owner
// goroutine only; fn must not keep the pointer).
func (f *Filter) DrainLogs(fn func(*LogRecord)) {
	for ; f.tail < f.head; f.tail++ {
		fn(&f.ring[f.tail%uint64(len(f.ring))])
	}
}

func (c *FilterCounters) fields() [17]*uint64 {
	return [17]*uint64{&c.Packets, &c.Allowed, &c.Denied, &c.Established, &c.Related, &c.Revalidated, &c.Revoked,
		&c.Logged, &c.LogSuppressed, &c.LogOverwritten, &c.Conntrack.Entries, &c.Conntrack.Inserts,
		&c.Conntrack.Evictions, &c.Conntrack.Expired, &c.Conntrack.Deleted, &c.Conntrack.Hits, &c.Conntrack.Misses}
}

func (f *Filter) publish() {
	for i, p := range f.c.fields() {
		f.pub[i].Store(*p)
	}
}

// Stats returns the counters as of the last batch; any goroutine may call
// it (fields are read one by one, so they may straddle two batches).
func (f *Filter) Stats() FilterCounters {
	var c FilterCounters
	for i, p := range c.fields() {
		*p = f.pub[i].Load()
	}
	return c
}
