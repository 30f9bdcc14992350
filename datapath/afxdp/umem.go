package afxdp

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UMEMConfig configures a UMEM. Zero fields take the defaults.
type UMEMConfig struct {
	// Frames is the number of frames (default 4096).
	Frames int
	// FrameSize is the size of one frame: 2048 or 4096 (default 4096).
	FrameSize int
	// Headroom is extra headroom registered with the kernel
	// (XDP_UMEM_REG), on top of the 256 bytes (XDP_PACKET_HEADROOM) the
	// kernel leaves before every received packet. Default 0.
	Headroom int
	// Logger receives setup messages (default: discard).
	Logger *slog.Logger
}

// frameState is where a frame is. Every frame is in exactly one state; the
// per-frame state lets the port refuse a double release or a foreign
// address instead of corrupting its rings.
type frameState uint8

const (
	// stateFree: on the UMEM's free stack.
	stateFree frameState = iota
	// stateFill: given to the kernel through a fill ring, not yet back
	// on an RX ring.
	stateFill
	// stateApp: held by the dataplane (received, or allocated).
	stateApp
	// stateTx: on a TX ring or in flight, not yet on a completion ring.
	stateTx
)

// FrameCounts says how many frames of a UMEM are in each state. Free + Fill
// + App + Tx == Total at every batch boundary; a frame that is lost shows up
// as a count that never returns to zero (App or Tx after a drain).
type FrameCounts struct {
	Total int
	// Free frames are on the UMEM's free stack.
	Free int
	// Fill frames were given to the kernel for receiving (fill ring,
	// kernel cache, or RX ring not yet read).
	Fill int
	// App frames are held by the dataplane.
	App int
	// Tx frames are queued for transmission or in flight.
	Tx int
}

// UMEM is a region of frames shared by the AF_XDP sockets of one worker
// (XDP_SHARED_UMEM): a frame received on one socket can be transmitted on
// any other socket of the same UMEM, across interfaces and queues.
//
// A UMEM and its sockets are owned by one goroutine (the worker): Receive,
// Transmit, Release, Alloc and Service must all be called from it. Counts
// and Stats may be read from any goroutine.
type UMEM struct {
	log        *slog.Logger
	area       []byte
	frameSize  uint64
	frameShift uint
	frameMask  uint64 // frameSize - 1
	headroom   int    // registered headroom
	nframes    int

	free  []uint64 // stack of free frame addresses
	state []frameState
	owner []uint16 // socket index, for frames in stateFill or stateTx

	sockets    []*Socket // sockets not yet forgotten
	bound      bool      // a socket registered the area and bound
	mode       Mode
	needWakeup bool // the registering socket bound with XDP_USE_NEED_WAKEUP

	nFill, nApp, nTx int
	// Published counts, for readers on other goroutines.
	pubFree, pubFill, pubApp, pubTx atomic.Int64
	// invalid counts frames handed back that were not the dataplane's to
	// give (double release, foreign handle): refused, not recycled.
	invalid atomic.Uint64

	closed bool
}

// NewUMEM maps the frame area and puts every frame on the free stack. The
// area is registered with the kernel by the first NewSocket, in that
// socket's network namespace.
func NewUMEM(cfg UMEMConfig) (*UMEM, error) {
	if cfg.Frames == 0 {
		cfg.Frames = 4096
	}
	if cfg.FrameSize == 0 {
		cfg.FrameSize = 4096
	}
	if cfg.FrameSize != 2048 && cfg.FrameSize != 4096 {
		return nil, fmt.Errorf("create umem: frame size %d, want 2048 or 4096", cfg.FrameSize)
	}
	if cfg.Frames < 1 || cfg.Frames > 1<<20 {
		return nil, fmt.Errorf("create umem: %d frames, want 1..%d", cfg.Frames, 1<<20)
	}
	if cfg.Headroom < 0 || cfg.Headroom+xdpPacketHeadroom+ethHeaderLen > cfg.FrameSize {
		return nil, fmt.Errorf("create umem: headroom %d does not fit a %d-byte frame", cfg.Headroom, cfg.FrameSize)
	}
	u := newUMEMState(cfg)
	area, err := unix.Mmap(-1, 0, cfg.Frames*cfg.FrameSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("create umem: mmap %d bytes: %w", cfg.Frames*cfg.FrameSize, err)
	}
	u.area = area
	u.log.Debug("umem mapped", "frames", cfg.Frames, "frame_size", cfg.FrameSize, "headroom", cfg.Headroom)
	return u, nil
}

// register creates the socket the UMEM is registered on (XDP_UMEM_REG),
// in the calling thread's network namespace; the first socket binds it.
func (u *UMEM) register() (int, error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("register umem: socket: %w", err)
	}
	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&u.area[0]))),
		Len:      uint64(len(u.area)),
		Size:     uint32(u.frameSize),
		Headroom: uint32(u.headroom),
	}
	if err := setsockopt(fd, unix.SOL_XDP, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("register umem: %w", err)
	}
	return fd, nil
}

// newUMEMState builds the bookkeeping of a UMEM without kernel objects.
func newUMEMState(cfg UMEMConfig) *UMEM {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	u := &UMEM{
		log:        log,
		frameSize:  uint64(cfg.FrameSize),
		frameShift: uint(bits.TrailingZeros(uint(cfg.FrameSize))),
		frameMask:  uint64(cfg.FrameSize - 1),
		headroom:   cfg.Headroom,
		nframes:    cfg.Frames,
		free:       make([]uint64, cfg.Frames),
		state:      make([]frameState, cfg.Frames),
		owner:      make([]uint16, cfg.Frames),
	}
	for i := range u.free {
		u.free[i] = uint64(cfg.Frames-1-i) << u.frameShift
	}
	u.publish()
	return u
}

// FrameSize returns the size of one frame.
func (u *UMEM) FrameSize() int { return int(u.frameSize) }

// Frames returns the number of frames.
func (u *UMEM) Frames() int { return u.nframes }

// Headroom returns the headroom before every received packet: the
// registered headroom plus XDP_PACKET_HEADROOM.
func (u *UMEM) Headroom() int { return u.headroom + xdpPacketHeadroom }

// Mode returns the bind mode of the UMEM's sockets (all share the first
// socket's mode); ModeAuto until a socket is bound.
func (u *UMEM) Mode() Mode { return u.mode }

// Counts returns the frame counts as of the last batch of any socket of
// the UMEM. It may be called from any goroutine.
func (u *UMEM) Counts() FrameCounts {
	return FrameCounts{
		Total: u.nframes,
		Free:  int(u.pubFree.Load()),
		Fill:  int(u.pubFill.Load()),
		App:   int(u.pubApp.Load()),
		Tx:    int(u.pubTx.Load()),
	}
}

// InvalidReleases counts frames handed to Release or Transmit that the
// UMEM did not have out (double release, foreign frame); they were ignored.
func (u *UMEM) InvalidReleases() uint64 { return u.invalid.Load() }

// publish makes the counts visible to Counts. A store is skipped when the
// value did not change: an idle poll loop publishes once per socket per
// turn, and an atomic store is a full barrier on amd64 where a load is a
// plain read.
func (u *UMEM) publish() {
	publishCount(&u.pubFree, len(u.free))
	publishCount(&u.pubFill, u.nFill)
	publishCount(&u.pubApp, u.nApp)
	publishCount(&u.pubTx, u.nTx)
}

func publishCount(p *atomic.Int64, v int) {
	if p.Load() != int64(v) {
		p.Store(int64(v))
	}
}

// frame returns the buffer of the frame at base address base.
func (u *UMEM) frame(base uint64) []byte {
	return u.area[base : base+u.frameSize : base+u.frameSize]
}

// appFrame reports whether h is the base address of a frame the dataplane
// holds.
func (u *UMEM) appFrame(h uint64) bool {
	return h&u.frameMask == 0 && h>>u.frameShift < uint64(u.nframes) && u.state[h>>u.frameShift] == stateApp
}

// releaseApp puts a frame the dataplane held back on the free stack.
func (u *UMEM) releaseApp(h uint64) {
	u.state[h>>u.frameShift] = stateFree
	u.free = append(u.free, h)
	u.nApp--
}

// Alloc fills frames with empty frames for the dataplane to build packets
// in (Off = Headroom(), Len = 0) and returns how many it could allocate.
// Allocated frames go back through Transmit or Release like received ones.
func (u *UMEM) Alloc(frames []Frame, port PortID) int {
	n := min(len(frames), len(u.free))
	top := len(u.free)
	for i := range frames[:n] {
		h := u.free[top-1-i]
		u.state[h>>u.frameShift] = stateApp
		frames[i] = Frame{Buf: u.frame(h), Off: u.Headroom(), Handle: h, Port: port}
	}
	u.free = u.free[:top-n]
	u.nApp += n
	u.publish()
	return n
}

// reclaim returns to the free stack every frame the kernel held for socket
// id (fill and TX), once that socket is closed and the kernel can no longer
// use them.
func (u *UMEM) reclaim(id uint16) (fill, tx int) {
	for i, st := range u.state {
		if u.owner[i] != id || (st != stateFill && st != stateTx) {
			continue
		}
		if st == stateFill {
			fill++
		} else {
			tx++
		}
		u.state[i] = stateFree
		u.free = append(u.free, uint64(i)<<u.frameShift)
	}
	u.nFill -= fill
	u.nTx -= tx
	u.publish()
	return fill, tx
}

// Close closes every socket of the UMEM and unmaps the frame area. Frames
// the dataplane still holds become invalid.
func (u *UMEM) Close() error {
	if u.closed {
		return nil
	}
	var errs []error
	for _, s := range append([]*Socket(nil), u.sockets...) {
		errs = append(errs, s.Close())
	}
	if u.area != nil {
		errs = append(errs, unix.Munmap(u.area))
		u.area = nil
	}
	u.closed = true
	return errors.Join(errs...)
}
