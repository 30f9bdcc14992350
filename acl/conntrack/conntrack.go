// Package conntrack is a per-worker connection tracking table: bounded,
// lock-free because unshared, with incremental expiry.
//
// # Ownership
//
// A Table belongs to one worker goroutine: every method but Stats must be
// called from it. Stats may be called from any goroutine; it reads the
// counters the owner last published with Publish.
//
// # Layout
//
// The table is set-associative: a key hashes to one bucket of Ways slots.
// Lookups compare a 32-bit tag per slot before the key. A full bucket
// evicts the slot that expires first (counted in Evictions). Capacity is
// fixed at construction, so memory is bounded whatever the traffic.
//
// # Expiry
//
// Every slot has a deadline refreshed by its traffic (Timeouts by protocol
// and TCP state). An expired slot found by a lookup is freed then; Sweep
// frees expired slots of a few buckets per call, so a worker calling it
// once per batch walks the whole table over time without a stop-the-world
// pass.
package conntrack

import (
	"sync/atomic"
	"time"
)

// Ways is the number of slots per bucket.
const Ways = 8

// Key is a canonical bidirectional flow key: (A, APort) is the smaller
// endpoint, so both directions of a flow have the same key. IPv4 addresses
// use Lo only.
type Key struct {
	AHi, ALo, BHi, BLo uint64
	APort, BPort       uint16
	Proto              uint8
	V6                 bool
}

// MakeKey builds the canonical key of a packet's flow and reports whether
// the packet goes from B to A (swapped).
func MakeKey(v6 bool, proto uint8, srcHi, srcLo, dstHi, dstLo uint64, sport, dport uint16) (k Key, swapped bool) {
	if srcHi < dstHi || srcHi == dstHi && (srcLo < dstLo || srcLo == dstLo && sport <= dport) {
		return Key{srcHi, srcLo, dstHi, dstLo, sport, dport, proto, v6}, false
	}
	return Key{dstHi, dstLo, srcHi, srcLo, dport, sport, proto, v6}, true
}

func (k *Key) hash() uint64 {
	h := k.AHi*0x9e3779b97f4a7c15 ^ k.ALo
	h = (h^k.BHi)*0xbf58476d1ce4e5b9 ^ k.BLo
	h = (h ^ uint64(k.APort)<<32 ^ uint64(k.BPort)<<16 ^ uint64(k.Proto)) * 0x94d049bb133111eb
	return h ^ h>>31
}

// State is a flow's TCP state (others stay StateOpen).
type State uint8

// States.
const (
	StateOpen        State = iota // UDP, ICMP, other, or TCP picked up mid-stream
	StateSynSent                  // TCP: SYN from the originator only
	StateEstablished              // TCP: SYN answered
	StateFinSeen                  // TCP: a FIN from either side
	StateClosed                   // TCP: RST, or FINs from both sides
)

// Timeouts are idle timeouts per protocol and TCP state.
type Timeouts struct {
	TCPSynSent, TCPEstablished, TCPFinSeen, TCPClosed time.Duration
	UDP, ICMP, Other                                  time.Duration
}

// DefaultTimeouts follow Calico's eBPF dataplane: short before a TCP
// handshake completes and after it ends, one hour established.
var DefaultTimeouts = Timeouts{
	TCPSynSent: 20 * time.Second, TCPEstablished: time.Hour, TCPFinSeen: 30 * time.Second,
	TCPClosed: 10 * time.Second, UDP: 60 * time.Second, ICMP: 5 * time.Second, Other: 600 * time.Second,
}

// Config sizes a table.
type Config struct {
	// Buckets is rounded up to a power of two (default 8192: 65536 flows).
	Buckets  int
	Timeouts Timeouts // zero: DefaultTimeouts
}

// Entry is one tracked flow.
type Entry[V any] struct {
	Key Key
	// OrigB: the flow's first packet went from B to A.
	OrigB   bool
	State   State
	finA    bool
	finB    bool
	Expires int64 // monotonic nanoseconds
	Packets uint64
	Val     V
}

// Counters are a table's statistics.
type Counters struct {
	Entries, Inserts, Evictions, Expired, Deleted, Hits, Misses uint64
}

// Table is a conntrack table; see the package doc for ownership.
type Table[V any] struct {
	tags    []uint32 // 0: free
	entries []Entry[V]
	mask    uint64
	to      [5]int64 // per state for TCP
	udp     int64
	icmp    int64
	other   int64
	cursor  uint64
	c       Counters
	pub     [7]atomic.Uint64
}

// New returns an empty table.
func New[V any](cfg Config) *Table[V] {
	b := 8192
	if cfg.Buckets > 0 {
		b = 1
		for b < cfg.Buckets {
			b <<= 1
		}
	}
	to := cfg.Timeouts
	if to == (Timeouts{}) {
		to = DefaultTimeouts
	}
	t := &Table[V]{
		tags:    make([]uint32, b*Ways),
		entries: make([]Entry[V], b*Ways),
		mask:    uint64(b - 1),
		udp:     int64(to.UDP), icmp: int64(to.ICMP), other: int64(to.Other),
	}
	t.to = [5]int64{int64(to.TCPEstablished), int64(to.TCPSynSent), int64(to.TCPEstablished), int64(to.TCPFinSeen), int64(to.TCPClosed)}
	return t
}

// Capacity is the number of flows the table holds.
func (t *Table[V]) Capacity() int { return len(t.entries) }

func tagOf(h uint64) uint32 { return uint32(h>>32) | 1 }

// Lookup finds the live entry of a key. An expired entry is freed and
// reported missing.
func (t *Table[V]) Lookup(k *Key, now int64) *Entry[V] {
	h := k.hash()
	tag := tagOf(h)
	base := (h & t.mask) * Ways
	tags := t.tags[base : base+Ways : base+Ways]
	for i, x := range tags {
		if x != tag {
			continue
		}
		e := &t.entries[base+uint64(i)]
		if e.Key != *k {
			continue
		}
		if e.Expires <= now {
			tags[i] = 0
			t.c.Entries--
			t.c.Expired++
			break
		}
		t.c.Hits++
		return e
	}
	t.c.Misses++
	return nil
}

// Insert adds a flow (the key must not be present) whose first packet went
// from A to B (origB false) or from B to A, and returns its entry with
// Expires set for proto and State from the first packet's TCP flags.
func (t *Table[V]) Insert(k *Key, origB bool, tcpFlags uint8, now int64, v V) *Entry[V] {
	h := k.hash()
	tag := tagOf(h)
	base := (h & t.mask) * Ways
	tags := t.tags[base : base+Ways : base+Ways]
	slot := -1
	for i, x := range tags {
		if x == 0 {
			slot = i
			break
		}
		if t.entries[base+uint64(i)].Expires <= now {
			slot = i
			t.c.Entries--
			t.c.Expired++
			break
		}
	}
	if slot < 0 {
		slot = 0
		for i := 1; i < Ways; i++ {
			if t.entries[base+uint64(i)].Expires < t.entries[base+uint64(slot)].Expires {
				slot = i
			}
		}
		t.c.Entries--
		t.c.Evictions++
	}
	tags[slot] = tag
	e := &t.entries[base+uint64(slot)]
	*e = Entry[V]{Key: *k, OrigB: origB, Val: v}
	if k.Proto == 6 {
		e.State = StateOpen
		if tcpFlags&flagSYN != 0 && tcpFlags&flagACK == 0 {
			e.State = StateSynSent
		}
	}
	t.c.Entries++
	t.c.Inserts++
	t.Update(e, origB, tcpFlags, now)
	return e
}

// TCP flags.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagACK = 0x10
)

// Update accounts a packet of the flow going from B to A (fromB) or A to
// B: TCP state and expiry.
func (t *Table[V]) Update(e *Entry[V], fromB bool, tcpFlags uint8, now int64) {
	e.Packets++
	var to int64
	switch e.Key.Proto {
	case 6:
		reply := fromB != e.OrigB
		switch {
		case tcpFlags&flagRST != 0:
			e.State = StateClosed
		case tcpFlags&flagFIN != 0:
			if fromB {
				e.finB = true
			} else {
				e.finA = true
			}
			e.State = StateFinSeen
			if e.finA && e.finB {
				e.State = StateClosed
			}
		case e.State == StateSynSent && reply && tcpFlags&flagSYN != 0 && tcpFlags&flagACK != 0:
			e.State = StateEstablished
		}
		to = t.to[e.State]
	case 17, 136:
		to = t.udp
	case 1, 58:
		to = t.icmp
	default:
		to = t.other
	}
	e.Expires = now + to
}

// Delete frees an entry (a flow policy no longer allows).
func (t *Table[V]) Delete(e *Entry[V]) {
	h := e.Key.hash()
	base := (h & t.mask) * Ways
	for i := uint64(0); i < Ways; i++ {
		if &t.entries[base+i] == e && t.tags[base+i] != 0 {
			t.tags[base+i] = 0
			t.c.Entries--
			t.c.Deleted++
			return
		}
	}
}

// DeleteFunc frees every entry whose key match reports, and returns how
// many it freed. It scans the whole table: for rare events (an endpoint
// deleted), not per packet.
func (t *Table[V]) DeleteFunc(match func(k *Key) bool) int {
	freed := 0
	for i := range t.tags {
		if t.tags[i] != 0 && match(&t.entries[i].Key) {
			t.tags[i] = 0
			freed++
		}
	}
	t.c.Entries -= uint64(freed)
	t.c.Deleted += uint64(freed)
	return freed
}

// Sweep frees the expired entries of the next n buckets and returns how
// many it freed.
func (t *Table[V]) Sweep(now int64, n int) int {
	freed := 0
	for ; n > 0; n-- {
		base := (t.cursor & t.mask) * Ways
		t.cursor++
		for i := uint64(0); i < Ways; i++ {
			if t.tags[base+i] != 0 && t.entries[base+i].Expires <= now {
				t.tags[base+i] = 0
				freed++
			}
		}
	}
	t.c.Entries -= uint64(freed)
	t.c.Expired += uint64(freed)
	return freed
}

// Counters returns the owner's live counters.
func (t *Table[V]) Counters() Counters { return t.c }

// Publish makes the counters visible to Stats.
func (t *Table[V]) Publish() {
	for i, v := range [7]uint64{t.c.Entries, t.c.Inserts, t.c.Evictions, t.c.Expired, t.c.Deleted, t.c.Hits, t.c.Misses} {
		t.pub[i].Store(v)
	}
}

// Stats returns the counters as of the owner's last Publish; any goroutine
// may call it.
func (t *Table[V]) Stats() Counters {
	return Counters{t.pub[0].Load(), t.pub[1].Load(), t.pub[2].Load(), t.pub[3].Load(), t.pub[4].Load(), t.pub[5].Load(), t.pub[6].Load()}
}
