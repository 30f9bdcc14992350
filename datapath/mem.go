package datapath

import (
	"errors"
	"fmt"
)

// MemPool is a set of frame buffers shared by MemPorts, as a UMEM is shared
// by the AF_XDP sockets of a worker: a frame received on one port can be
// transmitted on another. A pool and its ports are used by one goroutine.
type MemPool struct {
	frameSize int
	headroom  int
	bufs      [][]byte
	free      []uint32
}

// NewMemPool returns a pool of n frames of frameSize bytes, each with the
// given headroom before the packet.
func NewMemPool(n, frameSize, headroom int) *MemPool {
	p := &MemPool{frameSize: frameSize, headroom: headroom}
	backing := make([]byte, n*frameSize)
	p.bufs = make([][]byte, n)
	p.free = make([]uint32, n)
	for i := range n {
		p.bufs[i] = backing[i*frameSize : (i+1)*frameSize : (i+1)*frameSize]
		p.free[i] = uint32(n - 1 - i)
	}
	return p
}

// FreeFrames returns how many frames are in the pool; fewer than the pool was
// made with, once every port is drained, means a frame leaked.
func (p *MemPool) FreeFrames() int { return len(p.free) }

// ErrPoolEmpty is returned by Inject when every frame is in use.
var ErrPoolEmpty = errors.New("mem pool: no free frame")

func (p *MemPool) take(pkt []byte, port PortID) (Frame, bool) {
	if len(p.free) == 0 {
		return Frame{}, false
	}
	h := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	buf := p.bufs[h]
	copy(buf[p.headroom:], pkt)
	return Frame{Buf: buf, Off: p.headroom, Len: len(pkt), Handle: uint64(h), Port: port}, true
}

func (p *MemPool) release(frames []Frame) {
	for i := range frames {
		p.free = append(p.free, uint32(frames[i].Handle))
	}
}

// MemPort is an in-memory Port for tests and CPU-only benchmarks. Packets
// enter through Inject (copied into a pool frame, as a NIC's DMA would) or
// from a replay list; transmitted frames are kept for inspection or, in sink
// mode, counted and recycled at once.
type MemPort struct {
	name      string
	id        PortID
	pool      *MemPool
	rx        []Frame // injected, not yet received
	rxHead    int
	sent      []Frame
	sink      bool
	replay    [][]byte
	replayPos int

	// TxPackets and TxBytes count transmitted frames.
	TxPackets, TxBytes uint64
}

// NewPort returns a port drawing frames from p. id is stamped on received
// frames as their ingress port; it must be the port's index in the worker.
func (p *MemPool) NewPort(name string, id PortID) *MemPort {
	return &MemPort{name: name, id: id, pool: p}
}

// Name returns the port's name.
func (p *MemPort) Name() string { return p.name }

// Headroom implements Port.
func (p *MemPort) Headroom() int { return p.pool.headroom }

// SetSink makes Transmit count and recycle frames instead of keeping them.
func (p *MemPort) SetSink(on bool) { p.sink = on }

// SetReplay makes Receive return copies of these packets, round-robin,
// whenever nothing was injected (for benchmarks). nil turns replay off.
func (p *MemPort) SetReplay(pkts [][]byte) { p.replay, p.replayPos = pkts, 0 }

// Inject queues a copy of pkt (an Ethernet frame) for Receive.
func (p *MemPort) Inject(pkt []byte) error {
	if len(pkt) > p.pool.frameSize-p.pool.headroom {
		return fmt.Errorf("mem port %s: packet of %d bytes exceeds frame room %d",
			p.name, len(pkt), p.pool.frameSize-p.pool.headroom)
	}
	f, ok := p.pool.take(pkt, p.id)
	if !ok {
		return ErrPoolEmpty
	}
	p.rx = append(p.rx, f)
	return nil
}

// Receive implements Port.
func (p *MemPort) Receive(frames []Frame) int {
	n := 0
	for n < len(frames) && p.rxHead < len(p.rx) {
		frames[n] = p.rx[p.rxHead]
		p.rxHead++
		n++
	}
	if p.rxHead == len(p.rx) {
		p.rx, p.rxHead = p.rx[:0], 0
	}
	for n < len(frames) && len(p.replay) > 0 {
		f, ok := p.pool.take(p.replay[p.replayPos], p.id)
		if !ok {
			break
		}
		if p.replayPos++; p.replayPos == len(p.replay) {
			p.replayPos = 0
		}
		frames[n] = f
		n++
	}
	return n
}

// Transmit implements Port. The mem port never refuses a frame.
func (p *MemPort) Transmit(frames []Frame) int {
	for i := range frames {
		p.TxPackets++
		p.TxBytes += uint64(frames[i].Len)
	}
	if p.sink {
		p.pool.release(frames)
	} else {
		p.sent = append(p.sent, frames...)
	}
	return len(frames)
}

// Release implements Port.
func (p *MemPort) Release(frames []Frame) { p.pool.release(frames) }

// Sent returns copies of the packets transmitted since the last call and
// returns their frames to the pool.
func (p *MemPort) Sent() [][]byte {
	out := make([][]byte, len(p.sent))
	for i := range p.sent {
		out[i] = append([]byte(nil), p.sent[i].Packet()...)
	}
	p.pool.release(p.sent)
	p.sent = p.sent[:0]
	return out
}
