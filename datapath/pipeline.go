package datapath

import (
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/acl/conntrack"

	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
	"github.com/tabbynet/tabby/internal/prefetch"
	"github.com/tabbynet/tabby/lpm"
)

// defaultMTU is the IP MTU of a next hop whose MTU is unset.
const defaultMTU = 1500

// slot is the per-frame state of a batch.
type slot struct {
	p Parsed
	// nh is the next-hop id from the LPM stage (lpm.NoRoute: miss).
	nh uint32
	// drop is set when an earlier stage decided to drop the frame;
	// toHost when it goes to the host stack without routing.
	drop   DropReason
	toHost bool
	// pol indexes the worker's policy decisions (-1: not checked).
	pol int16
	// decapped records the tunnel the packet came out of (for traces).
	decapped EncapMode
}

// Worker runs the pipeline for one queue: it owns its ports (as far as
// receiving and its batch of frames go), its counters, and its scratch
// space. All methods but Counters and PolicyStats must be called from one
// goroutine.
//
// # Port slots
//
// A port's PortID is its slot: frames it receives carry it in Frame.Port,
// and next hops name it in NextHop.Port. SetPort fills or replaces a slot
// and RemovePort empties one, between batches, so the port set can change
// while the worker runs (an interface attached at runtime). A frame routed
// to an empty slot is dropped as DropBadNextHop (DropNoHostPath for the
// host port). The contract for callers: remove the routes to a port (its
// next hops) before removing the port, and reuse an emptied slot only once
// no next hop names it any more; otherwise traffic still routed to the old
// port would leave through the new one. Tables.PortInUse tells whether a
// published next hop still names a slot.
type Worker struct {
	tables *Tables
	ports  []Port
	batch  int

	rx    []Frame
	slots []slot
	dst4  []uint32
	// prefetch holds a batch's frame addresses for one prefetch call.
	prefetch []uintptr
	idx4     []uint16
	nh4      []uint32
	dst6     [][16]byte
	idx6     []uint16
	nh6      []uint32
	// tx holds, per egress port, the batch indexes of the frames to send;
	// drops those to release. Frames stay in place until flush gathers
	// them into out: copying a Frame right after the pipeline rewrote its
	// Off and Len would stall on store forwarding.
	tx    [][]uint16
	drops []uint16
	out   []Frame
	cur   uint16 // index of the frame being forwarded

	// Policy stage scratch: the batch's IP packets in acl form, their
	// slots, ICMP-error quotes, and the decisions.
	filter    *acl.Filter
	polPkts   []acl.Packet
	polQuoted []acl.Packet
	polIdx    []uint16
	polOut    []acl.Decision
	epoch     time.Time

	trace      func(*TraceRecord)
	traceRec   TraceRecord
	lastEgress PortID     // where the last forwarded frame went (NoPort: dropped)
	lastDrop   DropReason // why it was dropped

	counters counterSet
}

// WorkerConfig configures a Worker.
type WorkerConfig struct {
	// Ports are the worker's ports; a frame's Port and a next hop's Port
	// index this slice. A nil entry is an empty slot (see SetPort).
	Ports []Port
	// BatchSize is the receive batch (default DefaultBatchSize, at most
	// MaxBatchSize).
	BatchSize int
	// Conntrack sizes the worker's connection-tracking table (used when
	// the node enforces policy).
	Conntrack conntrack.Config
}

// NewWorker returns a worker forwarding with the snapshots of tables.
func NewWorker(tables *Tables, cfg WorkerConfig) (*Worker, error) {
	if tables == nil {
		return nil, fmt.Errorf("new worker: nil tables")
	}
	if len(cfg.Ports) >= int(NoPort) {
		return nil, fmt.Errorf("new worker: %d ports, at most %d", len(cfg.Ports), NoPort-1)
	}
	b := cfg.BatchSize
	if b == 0 {
		b = DefaultBatchSize
	}
	if b < 1 || b > MaxBatchSize {
		return nil, fmt.Errorf("new worker: batch size %d out of range 1..%d", b, MaxBatchSize)
	}
	w := &Worker{
		tables:   tables,
		ports:    append([]Port(nil), cfg.Ports...),
		batch:    b,
		rx:       make([]Frame, b),
		slots:    make([]slot, b),
		dst4:     make([]uint32, b),
		prefetch: make([]uintptr, 0, b),
		idx4:     make([]uint16, b),
		nh4:      make([]uint32, b),
		dst6:     make([][16]byte, b),
		idx6:     make([]uint16, b),
		nh6:      make([]uint32, b),
		tx:       make([][]uint16, len(cfg.Ports)),
		drops:    make([]uint16, 0, b),
		out:      make([]Frame, 0, b),

		filter:    acl.NewFilter(acl.FilterConfig{Conntrack: cfg.Conntrack}),
		polPkts:   make([]acl.Packet, b),
		polQuoted: make([]acl.Packet, b),
		polIdx:    make([]uint16, b),
		polOut:    make([]acl.Decision, b),
		epoch:     time.Now(),
	}
	for i := range w.tx {
		w.tx[i] = make([]uint16, 0, b)
	}
	return w, nil
}

// Counters returns the worker's counters as of its last batch. It may be
// called from any goroutine.
func (w *Worker) Counters() Counters { return w.counters.read() }

// PolicyStats returns the policy stage's counters (conntrack included). It
// may be called from any goroutine.
func (w *Worker) PolicyStats() acl.FilterCounters { return w.filter.Stats() }

// DrainPolicyLogs hands the flow records of Log rules to fn. It must be
// called from the worker's goroutine (between batches).
func (w *Worker) DrainPolicyLogs(fn func(*acl.LogRecord)) { w.filter.DrainLogs(fn) }

// ForgetFlows deletes the policy stage's tracked flows to or from any of
// addrs (an endpoint was deleted) and returns how many. It must be called
// from the worker's goroutine (between batches).
func (w *Worker) ForgetFlows(addrs []netip.Addr) int { return w.filter.ForgetAddrs(addrs) }

// SetPort puts p into slot id: a new slot (the port set grows to id+1
// slots), an empty one, or one holding another port, which is replaced. It
// must be called from the worker's goroutine between batches; it allocates
// only when the port set grows. See the type's documentation for when a
// slot may be reused.
func (w *Worker) SetPort(id PortID, p Port) error {
	if id == NoPort {
		return fmt.Errorf("set port: id %d is NoPort", id)
	}
	if p == nil {
		return fmt.Errorf("set port %d: nil port", id)
	}
	for int(id) >= len(w.ports) {
		w.ports = append(w.ports, nil)
		w.tx = append(w.tx, make([]uint16, 0, w.batch))
	}
	w.ports[id] = p
	return nil
}

// RemovePort empties slot id and returns the port it held (nil if it was
// empty or beyond the port set). Between batches no frame is queued on a
// port, so the removed port holds none of the worker's frames; frames it
// lent to its kernel side are its own business. It must be called from the
// worker's goroutine between batches.
func (w *Worker) RemovePort(id PortID) Port {
	if int(id) >= len(w.ports) {
		return nil
	}
	p := w.ports[id]
	w.ports[id] = nil
	// Shrink past trailing empty slots, so Poll does not walk them.
	n := len(w.ports)
	for n > 0 && w.ports[n-1] == nil {
		n--
	}
	w.ports = w.ports[:n]
	w.tx = w.tx[:n]
	return p
}

// Port returns the port in slot id (nil: empty).
func (w *Worker) Port(id PortID) Port {
	if int(id) >= len(w.ports) {
		return nil
	}
	return w.ports[id]
}

// Slots returns the number of port slots (the highest occupied PortID plus
// one).
func (w *Worker) Slots() int { return len(w.ports) }

// Poll receives one batch from each port, runs the pipeline on it and
// transmits the results. It returns the number of frames received.
func (w *Worker) Poll() int {
	total := 0
	for _, p := range w.ports {
		if p == nil {
			continue
		}
		n := p.Receive(w.rx[:w.batch])
		if n == 0 {
			continue
		}
		total += n
		w.Process(w.rx[:n])
	}
	return total
}

// PollPort receives one batch from port id only, runs the pipeline on it
// and transmits the results, like Poll; it returns the number of frames
// received (0 for an empty slot). It serves draining a port about to be
// removed.
func (w *Worker) PollPort(id PortID) int {
	if int(id) >= len(w.ports) || w.ports[id] == nil {
		return 0
	}
	n := w.ports[id].Receive(w.rx[:w.batch])
	if n > 0 {
		w.Process(w.rx[:n])
	}
	return n
}

// Process runs the pipeline on frames (at most the batch size) and hands
// every frame to a port: transmitted on its egress port or released.
func (w *Worker) Process(frames []Frame) {
	snap := w.tables.Load()
	c := &w.counters
	c.inc(cBatches)
	if snap == nil {
		c.add(cDropBase+counterID(DropNoSnapshot), uint64(len(frames)))
		w.releaseAll(frames)
		c.publish()
		return
	}
	w.prefetchFrames(frames)
	w.classify(snap, frames)
	if snap.Node.EnforcePolicy {
		w.policy(snap, frames)
	}
	n4, n6 := w.collect(frames)
	if n4 > 0 {
		snap.Routes4.LookupBatch(w.dst4[:n4], w.nh4[:n4])
		for j, i := range w.idx4[:n4] {
			w.slots[i].nh = w.nh4[j]
		}
	}
	if n6 > 0 {
		snap.Routes6.LookupBatch(w.dst6[:n6], w.nh6[:n6])
		for j, i := range w.idx6[:n6] {
			w.slots[i].nh = w.nh6[j]
		}
	}
	for i := range frames {
		ingress := frames[i].Port
		w.cur = uint16(i)
		w.forward(snap, &frames[i], &w.slots[i], false)
		if w.trace != nil {
			w.emitTrace(snap, &w.slots[i], ingress)
		}
	}
	w.flush(frames)
	c.publish()
}

// prefetchFrames hints the cache lines every frame of the batch needs first:
// the headers (read by classify) and the headroom line right before them
// (written when forward encapsulates in place). In AF_XDP copy mode the
// kernel wrote the packet on another CPU, so parsing would otherwise wait
// for one cache miss per frame in turn; hinted together they overlap.
func (w *Worker) prefetchFrames(frames []Frame) {
	addrs := w.prefetch[:0]
	for i := range frames {
		f := &frames[i]
		if f.Off >= 1 && f.Off < len(f.Buf) {
			addrs = append(addrs, uintptr(unsafe.Pointer(unsafe.SliceData(f.Buf)))+uintptr(f.Off))
		}
	}
	prefetch.Lines(addrs)
}

// classify is stage 1: decode, verify, and decapsulate tunnel traffic for
// this node. A slot left with no drop and not for the host is routable.
func (w *Worker) classify(snap *Snapshot, frames []Frame) {
	c := &w.counters
	for i := range frames {
		f := &frames[i]
		s := &w.slots[i]
		s.drop, s.toHost, s.nh, s.pol, s.decapped = DropNone, false, lpm.NoRoute, -1, EncapNone
		c.inc(cRxPackets)
		c.add(cRxBytes, uint64(f.Len))
		s.p.Decode(f.Packet())
		if !w.checkL3(snap, f, s) {
			continue
		}
		if s.p.Kind == L3IPv4 && s.p.Dst4 == snap.nodeTunnel4 && snap.nodeTunnel4 != 0 {
			w.decap(snap, f, s)
		}
	}
}

// policy is stage 2: the egress policy of the source endpoint and the
// ingress policy of the destination endpoint, conntrack first (acl.Filter).
// Denied packets are dropped with DropPolicy.
func (w *Worker) policy(snap *Snapshot, frames []Frame) {
	n := 0
	for i := range frames {
		s := &w.slots[i]
		if s.drop != DropNone || s.toHost {
			continue
		}
		p := &w.polPkts[n]
		p.Proto, p.TCPFlags, p.SrcPort, p.DstPort, p.Quoted = s.p.Proto, s.p.TCPFlags, s.p.SrcPort, s.p.DstPort, nil
		if s.p.Kind == L3IPv4 {
			p.Family, p.Src4, p.Dst4 = acl.IPv4, s.p.Src4, s.p.Dst4
			if s.p.Proto == header.ProtoICMP && s.p.L4Off != 0 && isICMPv4Error(s.p.DstPort>>8) {
				f := &frames[i]
				if acl.ParseICMPError(f.Buf[f.Off+int(s.p.L4Off):f.Off+int(s.p.L3Off)+int(s.p.IPLen)], acl.IPv4, &w.polQuoted[n]) {
					p.Quoted = &w.polQuoted[n]
				}
			}
		} else {
			p.Family, p.Src6, p.Dst6 = acl.IPv6, s.p.Src6, s.p.Dst6
			if s.p.Proto == header.ProtoICMPv6 && s.p.L4Off != 0 && s.p.DstPort>>8 < 128 {
				f := &frames[i]
				if acl.ParseICMPError(f.Buf[f.Off+int(s.p.L4Off):f.Off+int(s.p.L3Off)+int(s.p.IPLen)], acl.IPv6, &w.polQuoted[n]) {
					p.Quoted = &w.polQuoted[n]
				}
			}
		}
		w.polIdx[n] = uint16(i)
		s.pol = int16(n)
		n++
	}
	if n == 0 {
		return
	}
	w.filter.Process(snap.Policy, w.polPkts[:n], w.polOut[:n], int64(time.Since(w.epoch)))
	for j, i := range w.polIdx[:n] {
		if w.polOut[j].Verdict == acl.Denied {
			w.slots[i].drop = DropPolicy
		}
	}
}

func isICMPv4Error(typ uint16) bool {
	switch typ {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// collect gathers the destinations of routable slots for the LPM stage.
func (w *Worker) collect(frames []Frame) (n4, n6 int) {
	for i := range frames {
		s := &w.slots[i]
		if s.drop != DropNone || s.toHost {
			continue
		}
		if s.p.Kind == L3IPv4 {
			w.dst4[n4], w.idx4[n4] = s.p.Dst4, uint16(i)
			n4++
		} else {
			w.dst6[n6], w.idx6[n6] = s.p.Dst6, uint16(i)
			n6++
		}
	}
	return n4, n6
}

// checkL3 validates a decoded frame. It returns true for a routable IP
// packet; otherwise s.drop or s.toHost says what happens to the frame.
func (w *Worker) checkL3(snap *Snapshot, f *Frame, s *slot) bool {
	switch s.p.Kind {
	case L3IPv4:
		if s.p.Drop != DropNone {
			s.drop = s.p.Drop
			return false
		}
		ip := header.IPv4(f.Buf[f.Off+int(s.p.L3Off):])
		if !ip.HeaderChecksumOK() {
			s.drop = DropBadIPv4Checksum
			return false
		}
		if martian4(s.p.Src4, s.p.Dst4) {
			s.drop = DropMartian
			return false
		}
		if s.p.Dst4>>28 == 0xe || s.p.Dst4 == 0xffffffff {
			s.toHost = true // multicast and broadcast are the host's business
			return false
		}
		return true
	case L3IPv6:
		if s.p.Drop != DropNone {
			s.drop = s.p.Drop
			return false
		}
		if martian6(&s.p.Src6, &s.p.Dst6) {
			s.drop = DropMartian
			return false
		}
		if s.p.Dst6[0] == 0xff || (s.p.Dst6[0] == 0xfe && s.p.Dst6[1]&0xc0 == 0x80) {
			s.toHost = true // multicast (ND) and link-local
			return false
		}
		return true
	case L3ARP:
		s.toHost = true
		return false
	default:
		if s.p.Drop == DropNotIP {
			s.toHost = true
			return false
		}
		s.drop = s.p.Drop
		if s.drop == DropNone {
			s.drop = DropTruncated
		}
		return false
	}
}

// martian4 reports source or destination addresses no router forwards
// (RFC 1812 §5.3.7): unspecified, loopback or multicast source, loopback
// or unspecified destination.
func martian4(src, dst uint32) bool {
	return src == 0 || src>>24 == 127 || src>>28 == 0xe || src == 0xffffffff ||
		dst == 0 || dst>>24 == 127
}

// martian6 reports unspecified, loopback or multicast sources and
// unspecified or loopback destinations.
func martian6(src, dst *[16]byte) bool {
	var zero [16]byte
	loop := [16]byte{15: 1}
	return *src == zero || *src == loop || src[0] == 0xff || *dst == zero || *dst == loop
}

// decap handles an IPv4 packet addressed to this node's tunnel address.
// Afterwards the slot holds the inner packet, or says why not (s.drop,
// s.toHost).
func (w *Worker) decap(snap *Snapshot, f *Frame, s *slot) {
	c := &w.counters
	var v encap.Verdict
	var off, n int
	switch {
	case s.p.Proto == header.ProtoIPIP && snap.Node.DecapIPIP && !s.p.Fragment:
		off, n, v = encap.IPIPDecap(f.Buf, f.Off, f.Len)
		if v != encap.OK && v != encap.OKUnusualECN {
			s.drop = dropForDecap(v)
			return
		}
		c.inc(cDecapIPIP)
		s.decapped = EncapIPIP
	case s.p.Proto == header.ProtoUDP && s.p.DstPort == snap.Node.VXLANPort && snap.Node.DecapVXLAN && !s.p.Fragment:
		if snap.Node.VerifyVXLANChecksum {
			off, n, v = encap.VXLANDecap(f.Buf, f.Off, f.Len, snap.Node.VNI)
		} else {
			off, n, v = encap.VXLANDecapNoChecksum(f.Buf, f.Off, f.Len, snap.Node.VNI)
		}
		if v != encap.OK && v != encap.OKUnusualECN {
			s.drop = dropForDecap(v)
			return
		}
		c.inc(cDecapVXLAN)
		s.decapped = EncapVXLAN
	default:
		s.toHost = true // the node's own traffic (BGP, ssh, ...)
		return
	}
	f.Off, f.Len = off, n
	s.p.Decode(f.Packet())
	if w.checkL3(snap, f, s) && s.p.Kind == L3IPv4 && s.p.Dst4 == snap.nodeTunnel4 &&
		(s.p.Proto == header.ProtoIPIP || (s.p.Proto == header.ProtoUDP && s.p.DstPort == snap.Node.VXLANPort)) {
		s.drop = DropLoop // tunnel in tunnel to ourselves: refuse to recurse
	}
}

func dropForDecap(v encap.Verdict) DropReason {
	if v == encap.DropECN {
		return DropECN
	}
	return DropBadTunnel
}

// forward is stage 3 for one frame: apply the next hop, rewrite, encapsulate
// and queue the frame on its egress port. generated is true for an ICMP
// error the pipeline itself built, which must not trigger another.
func (w *Worker) forward(snap *Snapshot, f *Frame, s *slot, generated bool) {
	c := &w.counters
	if s.drop != DropNone {
		w.dropFrame(f, s.drop)
		return
	}
	if s.toHost {
		w.toHost(snap, f)
		return
	}
	if s.nh == lpm.NoRoute {
		w.dropFrame(f, DropNoRoute)
		return
	}
	if int(s.nh) >= len(snap.NextHops) {
		w.dropFrame(f, DropBadNextHop)
		return
	}
	nh := &snap.NextHops[s.nh]
	switch nh.Kind {
	case NextHopHost:
		w.toHost(snap, f)
		return
	case NextHopBlackhole:
		w.dropFrame(f, DropBlackhole)
		return
	case NextHopUnreachable:
		w.dropFrame(f, DropNoRoute)
		return
	}
	if int(nh.Port) >= len(w.ports) || w.ports[nh.Port] == nil {
		w.dropFrame(f, DropBadNextHop)
		return
	}
	l3 := f.Off + int(s.p.L3Off)
	if !generated {
		if s.p.TTL <= 1 {
			w.icmpError(snap, f, s, icmpTimeExceeded, 0)
			return
		}
		mtu := int(nh.MTU)
		if mtu == 0 {
			mtu = defaultMTU
		}
		if nh.Kind == NextHopRemote {
			mtu = min(mtu, encapMTU(nh))
		}
		if int(s.p.IPLen) > mtu {
			if s.p.DF {
				w.icmpError(snap, f, s, icmpTooBig, mtu)
			} else {
				w.dropFrame(f, DropTooBigNoDF)
			}
			return
		}
		if s.p.Kind == L3IPv4 {
			header.IPv4(f.Buf[l3:]).DecTTL()
		} else {
			header.IPv6(f.Buf[l3:]).DecHopLimit()
		}
	}
	// Rebuild the Ethernet header right before the IP header: this also
	// strips an ingress VLAN tag and any Ethernet padding.
	start := l3 - header.EthernetLen
	f.Len = int(s.p.IPLen) + header.EthernetLen
	f.Off = start
	eth := header.Ethernet(f.Buf[start:])
	etherType := header.EtherTypeIPv4
	if s.p.Kind == L3IPv6 {
		etherType = header.EtherTypeIPv6
	}
	eth.Encode(nh.DstMAC, nh.SrcMAC, etherType)
	if nh.Kind == NextHopLocal {
		c.inc(cToLocal)
		w.queue(nh.Port, f)
		return
	}
	switch nh.Encap {
	case EncapVXLAN:
		if f.Off < encap.VXLANOverhead {
			w.dropFrame(f, DropNoHeadroom)
			return
		}
		off, n := encap.VXLANEncap(f.Buf, f.Off, f.Len, nh.Tunnel, flowHash(&s.p))
		if n == 0 {
			w.dropFrame(f, DropEncapUnsupported)
			return
		}
		f.Off, f.Len = off, n
		c.inc(cEncapVXLAN)
	case EncapIPIP:
		if s.p.Kind != L3IPv4 {
			w.dropFrame(f, DropEncapUnsupported)
			return
		}
		if f.Off < encap.IPIPOverhead {
			w.dropFrame(f, DropNoHeadroom)
			return
		}
		off, n := encap.IPIPEncap(f.Buf, f.Off, f.Len, nh.Tunnel)
		if n == 0 {
			w.dropFrame(f, DropEncapUnsupported)
			return
		}
		f.Off, f.Len = off, n
		c.inc(cEncapIPIP)
	}
	c.inc(cToRemote)
	w.queue(nh.Port, f)
}

func encapMTU(nh *NextHop) int {
	switch nh.Encap {
	case EncapVXLAN:
		return nh.Tunnel.MTU(encap.ModeVXLAN)
	case EncapIPIP:
		return nh.Tunnel.MTU(encap.ModeIPIP)
	}
	return 1 << 16
}

// flowHashSeed is fixed so a flow keeps its VXLAN source port (and so its
// ECMP path in the underlay) across agent restarts.
const flowHashSeed = 0x7ab6_7ab6

// flowHash hashes the flow of a parsed packet for the VXLAN source port.
func flowHash(p *Parsed) uint32 {
	if p.Kind == L3IPv4 {
		return encap.FlowHashIPv4(u32to4(p.Src4), u32to4(p.Dst4), p.Proto, p.SrcPort, p.DstPort, flowHashSeed)
	}
	return encap.FlowHashIPv6(p.Src6, p.Dst6, p.Proto, p.SrcPort, p.DstPort, flowHashSeed)
}

type icmpKind uint8

const (
	icmpTimeExceeded icmpKind = iota
	icmpTooBig
)

// icmpError drops the frame's packet (counting why) and, where RFC 1812
// allows, turns the frame into an ICMP error back to the sender and routes
// that instead.
func (w *Worker) icmpError(snap *Snapshot, f *Frame, s *slot, kind icmpKind, mtu int) {
	c := &w.counters
	reason := DropTTLExpired
	if kind == icmpTooBig {
		reason = DropTooBig
	}
	c.drop(reason)
	w.lastDrop = reason
	var v encap.Verdict
	var off, n int
	switch {
	case s.p.Kind == L3IPv4 && kind == icmpTimeExceeded:
		off, n, v = encap.TimeExceededIPv4(f.Buf, f.Off, f.Len, snap.routerIP4)
	case s.p.Kind == L3IPv4:
		off, n, v = encap.FragNeededIPv4(f.Buf, f.Off, f.Len, mtu, snap.routerIP4)
	case !snap.hasRouter6:
		// No address to send ICMPv6 errors from: drop silently (counted).
		w.release(f)
		return
	case kind == icmpTimeExceeded:
		off, n, v = encap.TimeExceededIPv6(f.Buf, f.Off, f.Len, snap.routerIP6)
	default:
		off, n, v = encap.PacketTooBigIPv6(f.Buf, f.Off, f.Len, mtu, snap.routerIP6)
	}
	if v != encap.OK {
		w.release(f)
		return
	}
	f.Off, f.Len = off, n
	s.p.Decode(f.Packet())
	s.drop, s.toHost = DropNone, false
	if !s.p.IsIP() {
		w.dropFrame(f, DropLoop) // cannot happen: we just built it
		return
	}
	s.nh = lpm.NoRoute
	if s.p.Kind == L3IPv4 {
		if nh, ok := snap.Routes4.Lookup(s.p.Dst4); ok {
			s.nh = nh
		}
	} else if nh, ok := snap.Routes6.Lookup(s.p.Dst6); ok {
		s.nh = nh
	}
	c.inc(cICMPSent)
	w.forward(snap, f, s, true)
}

// toHost queues a frame for the host stack.
func (w *Worker) toHost(snap *Snapshot, f *Frame) {
	if int(snap.Node.HostPort) >= len(w.ports) || w.ports[snap.Node.HostPort] == nil {
		w.dropFrame(f, DropNoHostPath)
		return
	}
	w.counters.inc(cToHost)
	w.queue(snap.Node.HostPort, f)
}

// queue, dropFrame and release act on the frame being forwarded (w.cur);
// their *Frame argument documents which frame that is.
func (w *Worker) queue(port PortID, _ *Frame) {
	w.lastEgress, w.lastDrop = port, DropNone
	w.tx[port] = append(w.tx[port], w.cur)
}

func (w *Worker) dropFrame(_ *Frame, r DropReason) {
	w.counters.drop(r)
	w.lastEgress, w.lastDrop = NoPort, r
	w.drops = append(w.drops, w.cur)
}

// release returns a frame whose drop was already counted.
func (w *Worker) release(_ *Frame) {
	w.lastEgress = NoPort
	w.drops = append(w.drops, w.cur)
}

func (w *Worker) releaseAll(frames []Frame) {
	if len(frames) > 0 {
		w.ports[frames[0].Port].Release(frames)
	}
}

// flush transmits the queued frames grouped by egress port and releases the
// dropped ones.
func (w *Worker) flush(frames []Frame) {
	c := &w.counters
	for port, q := range w.tx {
		if len(q) == 0 {
			continue
		}
		var bytes uint64
		var out []Frame
		if len(q) == len(frames) {
			// The whole batch leaves by one port, in order: send the
			// frames where they are.
			out = frames
			for i := range frames {
				bytes += uint64(frames[i].Len)
			}
		} else {
			out = w.out[:0]
			for _, i := range q {
				out = append(out, frames[i])
				bytes += uint64(frames[i].Len)
			}
		}
		sent := w.ports[port].Transmit(out)
		if sent < len(out) {
			for i := range out[sent:] {
				bytes -= uint64(out[sent+i].Len)
			}
			c.add(cDropBase+counterID(DropTxFull), uint64(len(out)-sent))
		}
		c.add(cTxBytes, bytes)
		c.add(cTxPackets, uint64(sent))
		w.tx[port] = q[:0]
	}
	if len(w.drops) > 0 {
		out := w.out[:0]
		for _, i := range w.drops {
			out = append(out, frames[i])
		}
		w.ports[out[0].Port].Release(out)
		w.drops = w.drops[:0]
	}
}
