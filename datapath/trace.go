package datapath

import (
	"fmt"
	"strings"

	"github.com/tabbynet/tabby/acl"
)

// TraceRecord describes what the pipeline did with one frame. Records are
// produced only while a trace function is set (Worker.SetTrace); the record
// passed to it is reused for the next frame.
type TraceRecord struct {
	// Ingress is the port the frame came in on.
	Ingress PortID
	// Packet summarises the (inner, after decapsulation) packet.
	Packet string
	// Decap is the tunnel the packet was decapsulated from.
	Decap EncapMode
	// Policy is the policy verdict with the matched tier, policy and rule
	// (empty when policy was not evaluated).
	Policy string
	// NextHop is the route's next-hop id (lpm.NoRoute: none).
	NextHop uint32
	// Egress is the port the frame left on (NoPort: dropped).
	Egress PortID
	// Drop is why the frame was dropped.
	Drop DropReason
}

// String formats the record on one line.
func (r *TraceRecord) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "in=%d %s", r.Ingress, r.Packet)
	if r.Decap != EncapNone {
		fmt.Fprintf(&b, " decap=%s", r.Decap)
	}
	if r.Policy != "" {
		fmt.Fprintf(&b, " policy=[%s]", r.Policy)
	}
	if r.Egress != NoPort {
		fmt.Fprintf(&b, " nh=%d out=%d", r.NextHop, r.Egress)
	} else {
		fmt.Fprintf(&b, " drop=%s", r.Drop)
	}
	return b.String()
}

// SetTrace makes the worker call fn with a record for every frame it
// processes (nil: tracing off). Tracing allocates and is slow: it is for
// debugging a few packets, not for production traffic. Call it from the
// worker's goroutine or before the worker starts.
func (w *Worker) SetTrace(fn func(*TraceRecord)) { w.trace = fn }

// emitTrace reports the fate of frame i, forward having just run on it.
func (w *Worker) emitTrace(snap *Snapshot, s *slot, ingress PortID) {
	r := &w.traceRec
	*r = TraceRecord{Ingress: ingress, Decap: s.decapped, NextHop: s.nh, Egress: w.lastEgress, Drop: w.lastDrop}
	r.Packet = summary(&s.p)
	if s.pol >= 0 && snap.Policy != nil {
		r.Policy = snap.Policy.Trace(w.polOut[s.pol])
	} else if s.pol >= 0 {
		r.Policy = acl.Denied.String() + " (no policy compiled)"
	}
	w.trace(r)
}

func summary(p *Parsed) string {
	switch p.Kind {
	case L3ARP:
		return "arp"
	case L3IPv4, L3IPv6:
		proto := fmt.Sprintf("proto=%d", p.Proto)
		switch p.Proto {
		case 6:
			proto = "tcp"
		case 17:
			proto = "udp"
		case 1, 58:
			return fmt.Sprintf("%v > %v icmp type=%d code=%d ttl=%d", p.SrcAddr(), p.DstAddr(), p.DstPort>>8, p.DstPort&0xff, p.TTL)
		}
		return fmt.Sprintf("%v:%d > %v:%d %s ttl=%d len=%d", p.SrcAddr(), p.SrcPort, p.DstAddr(), p.DstPort, proto, p.TTL, p.IPLen)
	}
	return "unknown"
}
