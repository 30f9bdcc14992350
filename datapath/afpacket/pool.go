package afpacket

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Pool is a set of frame buffers shared by the AF_PACKET ports of one
// worker. The area is mmap'd (outside the Go heap) so the kernel reads it
// directly in sendmmsg.
type Pool struct {
	frameSize int
	headroom  int
	nframes   int
	area      []byte
	free      []uint32
	inUse     []bool
	pubFree   atomic.Int64
	invalid   atomic.Uint64
}

// NewPool maps n frames of frameSize bytes; received packets are placed
// headroom bytes into a frame.
func NewPool(n, frameSize, headroom int) (*Pool, error) {
	if n < 1 || frameSize < 64 || headroom < 0 || headroom+14 > frameSize {
		return nil, fmt.Errorf("new pool: %d frames of %d bytes with headroom %d", n, frameSize, headroom)
	}
	area, err := unix.Mmap(-1, 0, n*frameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("new pool: mmap: %w", err)
	}
	p := &Pool{frameSize: frameSize, headroom: headroom, nframes: n, area: area,
		free: make([]uint32, n), inUse: make([]bool, n)}
	for i := range p.free {
		p.free[i] = uint32(n - 1 - i)
	}
	p.pubFree.Store(int64(n))
	return p, nil
}

// Frames returns the number of frames.
func (p *Pool) Frames() int { return p.nframes }

// FreeFrames returns how many frames were free after the last batch. It
// may be called from any goroutine; once every port is drained it equals
// Frames unless a frame leaked.
func (p *Pool) FreeFrames() int { return int(p.pubFree.Load()) }

// InvalidReleases counts frames handed back that the pool had not lent
// (double release, foreign handle); they were ignored.
func (p *Pool) InvalidReleases() uint64 { return p.invalid.Load() }

// Headroom returns the headroom before every received packet.
func (p *Pool) Headroom() int { return p.headroom }

func (p *Pool) buf(i uint32) []byte {
	o := int(i) * p.frameSize
	return p.area[o : o+p.frameSize : o+p.frameSize]
}

// take lends a frame; ok is false when none is free.
func (p *Pool) take() (uint32, bool) {
	n := len(p.free)
	if n == 0 {
		return 0, false
	}
	i := p.free[n-1]
	p.free = p.free[:n-1]
	p.inUse[i] = true
	return i, true
}

// lent reports whether h is a frame the pool lent.
func (p *Pool) lent(h uint64) bool { return h < uint64(p.nframes) && p.inUse[h] }

func (p *Pool) put(h uint64) {
	p.inUse[h] = false
	p.free = append(p.free, uint32(h))
}

// Alloc fills frames with empty frames (Off = headroom, Len = 0) and
// returns how many it could allocate.
func (p *Pool) Alloc(frames []Frame, port PortID) int {
	n := 0
	for n < len(frames) {
		i, ok := p.take()
		if !ok {
			break
		}
		frames[n] = Frame{Buf: p.buf(i), Off: p.headroom, Handle: uint64(i), Port: port}
		n++
	}
	p.publish()
	return n
}

// release returns frames to the pool, refusing those it did not lend.
func (p *Pool) release(frames []Frame) {
	for i := range frames {
		h := frames[i].Handle
		if !p.lent(h) {
			p.invalid.Add(1)
			continue
		}
		p.put(h)
	}
}

func (p *Pool) publish() { p.pubFree.Store(int64(len(p.free))) }

// Close unmaps the pool. Its ports must be closed first.
func (p *Pool) Close() error {
	if p.area == nil {
		return nil
	}
	err := unix.Munmap(p.area)
	p.area = nil
	return err
}
