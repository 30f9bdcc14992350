package datapath

import "sync/atomic"

// counterID indexes a worker's counters.
type counterID uint8

const (
	cRxPackets counterID = iota
	cRxBytes
	cTxPackets
	cTxBytes
	cBatches
	cToLocal
	cToRemote
	cToHost
	cDecapIPIP
	cDecapVXLAN
	cEncapIPIP
	cEncapVXLAN
	cICMPSent
	cDropBase   // DropReason r is counted at cDropBase + r
	numCounters = cDropBase + counterID(numDropReasons)
)

// Counters is a copy of one worker's counters.
type Counters struct {
	RxPackets, RxBytes uint64
	TxPackets, TxBytes uint64
	Batches            uint64
	ToLocal            uint64 // delivered to an endpoint on this node
	ToRemote           uint64 // forwarded to another node or router
	ToHost             uint64 // handed to the host stack
	DecapIPIP          uint64
	DecapVXLAN         uint64
	EncapIPIP          uint64
	EncapVXLAN         uint64
	ICMPSent           uint64 // ICMP errors generated (time exceeded, too big)
	Drops              [numDropReasons]uint64
}

// Dropped returns the total of all drop counters.
func (c *Counters) Dropped() uint64 {
	var n uint64
	for _, v := range c.Drops {
		n += v
	}
	return n
}

// Add adds o into c (to aggregate workers).
func (c *Counters) Add(o *Counters) {
	c.RxPackets += o.RxPackets
	c.RxBytes += o.RxBytes
	c.TxPackets += o.TxPackets
	c.TxBytes += o.TxBytes
	c.Batches += o.Batches
	c.ToLocal += o.ToLocal
	c.ToRemote += o.ToRemote
	c.ToHost += o.ToHost
	c.DecapIPIP += o.DecapIPIP
	c.DecapVXLAN += o.DecapVXLAN
	c.EncapIPIP += o.EncapIPIP
	c.EncapVXLAN += o.EncapVXLAN
	c.ICMPSent += o.ICMPSent
	for i := range c.Drops {
		c.Drops[i] += o.Drops[i]
	}
}

// counterSet is the worker's private tally and its published copy.
type counterSet struct {
	local [numCounters]uint64
	pub   [numCounters]atomic.Uint64
}

func (s *counterSet) drop(r DropReason)          { s.local[cDropBase+counterID(r)]++ }
func (s *counterSet) inc(id counterID)           { s.local[id]++ }
func (s *counterSet) add(id counterID, v uint64) { s.local[id] += v }

// publish copies the tally to the published copy; called once per batch.
func (s *counterSet) publish() {
	for i := range s.local {
		s.pub[i].Store(s.local[i])
	}
}

// read returns the published counters; safe from any goroutine.
func (s *counterSet) read() Counters {
	var v [numCounters]uint64
	for i := range v {
		v[i] = s.pub[i].Load()
	}
	c := Counters{
		RxPackets: v[cRxPackets], RxBytes: v[cRxBytes],
		TxPackets: v[cTxPackets], TxBytes: v[cTxBytes],
		Batches: v[cBatches],
		ToLocal: v[cToLocal], ToRemote: v[cToRemote], ToHost: v[cToHost],
		DecapIPIP: v[cDecapIPIP], DecapVXLAN: v[cDecapVXLAN],
		EncapIPIP: v[cEncapIPIP], EncapVXLAN: v[cEncapVXLAN],
		ICMPSent: v[cICMPSent],
	}
	for r := range c.Drops {
		c.Drops[r] = v[cDropBase+counterID(r)]
	}
	return c
}
