package afpacket

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Config configures a Port. Zero fields take the defaults.
type Config struct {
	// Interface names the interface.
	Interface string
	// Port is stamped on received frames.
	Port PortID
	// BlockSize is the size of one ring block, a multiple of the page
	// size (default 256 KiB); Blocks the number of blocks (default 16).
	BlockSize, Blocks int
	// RetireTimeout is how long the kernel fills a block before handing
	// it over partly full (default 1ms): the receive latency under light
	// load.
	RetireTimeout time.Duration
	// QdiscBypass sends without the interface's qdisc
	// (PACKET_QDISC_BYPASS).
	QdiscBypass bool
	// Filter is an optional classic BPF program choosing which frames the
	// socket receives.
	Filter []unix.SockFilter
	// MaxBatch bounds a Transmit batch (default 256).
	MaxBatch int
	// Logger receives setup messages (default: discard).
	Logger *slog.Logger
}

// Stats are a port's counters.
type Stats struct {
	RxPackets, RxBytes uint64
	// RxTruncated counts packets longer than the ring's snapshot or than
	// a pool frame (oversize), RxRunt packets shorter than an Ethernet
	// header, RxNoBuffer packets dropped because the pool was empty.
	RxTruncated, RxRunt, RxNoBuffer uint64
	TxPackets, TxBytes              uint64
	// TxInvalid counts frames refused for their length or offset,
	// TxDropped frames the kernel did not take (socket buffer full).
	TxInvalid, TxDropped uint64
	// KernelDrops is the kernel's count of packets the ring had no room
	// for (PACKET_STATISTICS, reset by each read and accumulated here).
	KernelDrops uint64
}

type counters struct {
	rxPackets, rxBytes, rxTruncated, rxRunt, rxNoBuffer atomic.Uint64
	txPackets, txBytes, txInvalid, txDropped            atomic.Uint64
	kernelDrops                                         atomic.Uint64
}

// Port is an AF_PACKET socket on one interface with a TPACKET_V3 receive
// ring. It implements datapath.Port; it is owned by one goroutine.
type Port struct {
	pool    *Pool
	log     *slog.Logger
	fd      int
	ifindex int
	port    PortID
	ring    []byte
	bsize   int
	nblocks int

	// Position in the ring: the block being read, how many of its
	// packets are left and where the next one is.
	block   int
	inBlock bool
	left    uint32
	off     uint32

	msgs []unix.Mmsghdr
	iovs []unix.Iovec

	c      counters
	closed bool
}

const ethHeaderLen = 14

// Open creates an AF_PACKET port on cfg.Interface (in the calling
// thread's network namespace) drawing frames from p.
func (p *Pool) Open(cfg Config) (_ *Port, err error) {
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 256 << 10
	}
	if cfg.Blocks == 0 {
		cfg.Blocks = 16
	}
	if cfg.RetireTimeout == 0 {
		cfg.RetireTimeout = time.Millisecond
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 256
	}
	page := unix.Getpagesize()
	if cfg.BlockSize%page != 0 || cfg.Blocks < 1 {
		return nil, fmt.Errorf("open af_packet: block size %d must be a multiple of %d", cfg.BlockSize, page)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("open af_packet: %w", err)
	}
	// Protocol 0 until bound: nothing is queued before the ring exists.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open af_packet: socket: %w", err)
	}
	pt := &Port{pool: p, log: log.With("if", cfg.Interface), fd: fd, ifindex: ifi.Index, port: cfg.Port,
		bsize: cfg.BlockSize, nblocks: cfg.Blocks,
		msgs: make([]unix.Mmsghdr, cfg.MaxBatch), iovs: make([]unix.Iovec, cfg.MaxBatch)}
	defer func() {
		if err != nil {
			pt.Close()
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return nil, fmt.Errorf("open af_packet: TPACKET_V3: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		pt.log.Debug("PACKET_IGNORE_OUTGOING not accepted; filtering outgoing frames per packet", "err", err)
	}
	if cfg.QdiscBypass {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return nil, fmt.Errorf("open af_packet: qdisc bypass: %w", err)
		}
	}
	if len(cfg.Filter) > 0 {
		prog := unix.SockFprog{Len: uint16(len(cfg.Filter)), Filter: &cfg.Filter[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			return nil, fmt.Errorf("open af_packet: attach filter: %w", err)
		}
	}
	req := unix.TpacketReq3{
		Block_size:     uint32(cfg.BlockSize),
		Block_nr:       uint32(cfg.Blocks),
		Frame_size:     2048, // only checked for consistency in V3
		Frame_nr:       uint32(cfg.BlockSize / 2048 * cfg.Blocks),
		Retire_blk_tov: uint32(max(cfg.RetireTimeout.Milliseconds(), 1)),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fmt.Errorf("open af_packet: rx ring: %w", err)
	}
	if pt.ring, err = unix.Mmap(fd, 0, cfg.BlockSize*cfg.Blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("open af_packet: mmap ring: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return nil, fmt.Errorf("open af_packet: bind: %w", err)
	}
	for i := range pt.msgs {
		pt.msgs[i].Hdr.Iov = &pt.iovs[i]
		pt.msgs[i].Hdr.SetIovlen(1)
	}
	pt.log.Info("af_packet port open", "ring_bytes", cfg.BlockSize*cfg.Blocks, "qdisc_bypass", cfg.QdiscBypass)
	return pt, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// blockStatus returns the status word of block b (tpacket_hdr_v1 follows
// the 8-byte block descriptor header).
func (pt *Port) blockStatus(b int) *uint32 {
	return (*uint32)(unsafe.Pointer(&pt.ring[b*pt.bsize+8]))
}

// Headroom implements datapath.Port.
func (pt *Port) Headroom() int { return pt.pool.headroom }

// FD returns the socket (readable when a block is ready).
func (pt *Port) FD() int { return pt.fd }

// Service implements the loop's housekeeping hook: an AF_PACKET port has
// no completions to reap.
func (pt *Port) Service() {}

// Receive implements datapath.Port: it copies up to len(frames) packets
// from the ring into pool frames, returning ring blocks to the kernel as
// they are emptied. It does not block.
func (pt *Port) Receive(frames []Frame) int {
	p := pt.pool
	got := 0
	var bytes, trunc, runt, nobuf uint64
	for got < len(frames) {
		if !pt.inBlock {
			st := pt.blockStatus(pt.block)
			if atomic.LoadUint32(st)&unix.TP_STATUS_USER == 0 {
				break
			}
			base := pt.block * pt.bsize
			h := (*unix.TpacketHdrV1)(unsafe.Pointer(&pt.ring[base+8]))
			pt.left, pt.off, pt.inBlock = h.Num_pkts, h.Offset_to_first_pkt, true
		}
		if pt.left == 0 {
			atomic.StoreUint32(pt.blockStatus(pt.block), unix.TP_STATUS_KERNEL)
			pt.inBlock = false
			if pt.block++; pt.block == pt.nblocks {
				pt.block = 0
			}
			continue
		}
		base := pt.block*pt.bsize + int(pt.off)
		h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&pt.ring[base]))
		pt.off += h.Next_offset
		pt.left--
		// struct sockaddr_ll follows the header at TPACKET_ALIGN(48);
		// sll_pkttype is its byte 10.
		if pt.ring[base+48+10] == unix.PACKET_OUTGOING {
			continue
		}
		n := int(h.Snaplen)
		switch {
		case n < int(h.Len) || n > p.frameSize-p.headroom:
			trunc++
			continue
		case n < ethHeaderLen:
			runt++
			continue
		}
		i, ok := p.take()
		if !ok {
			nobuf++
			continue
		}
		buf := p.buf(i)
		data := base + int(h.Mac)
		copy(buf[p.headroom:], pt.ring[data:data+n])
		frames[got] = Frame{Buf: buf, Off: p.headroom, Len: n, Handle: uint64(i), Port: pt.port}
		bytes += uint64(n)
		got++
	}
	if got > 0 {
		p.publish()
		pt.c.rxPackets.Add(uint64(got))
		pt.c.rxBytes.Add(bytes)
	}
	if trunc|runt|nobuf != 0 {
		pt.c.rxTruncated.Add(trunc)
		pt.c.rxRunt.Add(runt)
		pt.c.rxNoBuffer.Add(nobuf)
	}
	return got
}

// Transmit implements datapath.Port: frames are sent with sendmmsg (the
// kernel copies them) and every frame goes back to the pool at once. On
// return frames[:n] are the frames sent, in order; the others, refused for
// a bad length or offset (TxInvalid) or not taken by the kernel
// (TxDropped), were released.
func (pt *Port) Transmit(frames []Frame) int {
	p := pt.pool
	var bad uint64
	k := 0
	for i := range frames {
		f := &frames[i]
		if !p.lent(f.Handle) {
			p.invalid.Add(1)
			continue
		}
		if f.Len < ethHeaderLen || f.Off < 0 || f.Off+f.Len > p.frameSize {
			p.put(f.Handle)
			bad++
			continue
		}
		if k != i {
			frames[k] = *f
		}
		k++
	}
	sent := 0
	var bytes uint64
	for sent < k {
		n := min(k-sent, len(pt.msgs))
		for j := range n {
			f := &frames[sent+j]
			pt.iovs[j].Base = &f.Buf[f.Off]
			pt.iovs[j].SetLen(f.Len)
		}
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(pt.fd), uintptr(unsafe.Pointer(&pt.msgs[0])),
			uintptr(n), unix.MSG_DONTWAIT, 0, 0)
		if errno != 0 || r == 0 {
			break
		}
		for j := range int(r) {
			bytes += uint64(frames[sent+j].Len)
		}
		sent += int(r)
	}
	for i := range frames[:k] {
		p.put(frames[i].Handle)
	}
	p.publish()
	pt.c.txPackets.Add(uint64(sent))
	pt.c.txBytes.Add(bytes)
	if bad > 0 {
		pt.c.txInvalid.Add(bad)
	}
	if k > sent {
		pt.c.txDropped.Add(uint64(k - sent))
	}
	return sent
}

// Release implements datapath.Port.
func (pt *Port) Release(frames []Frame) {
	pt.pool.release(frames)
	pt.pool.publish()
}

// Stats returns the port's counters; it may be called from any goroutine.
func (pt *Port) Stats() Stats {
	if pt.fd >= 0 {
		if st, err := unix.GetsockoptTpacketStatsV3(pt.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			pt.c.kernelDrops.Add(uint64(st.Drops))
		}
	}
	c := &pt.c
	return Stats{
		RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(), RxTruncated: c.rxTruncated.Load(),
		RxRunt: c.rxRunt.Load(), RxNoBuffer: c.rxNoBuffer.Load(),
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(), TxInvalid: c.txInvalid.Load(),
		TxDropped: c.txDropped.Load(), KernelDrops: c.kernelDrops.Load(),
	}
}

// Close closes the socket and unmaps the ring. Frames already received stay
// valid (they live in the pool).
func (pt *Port) Close() error {
	if pt.closed {
		return nil
	}
	pt.closed = true
	var errs []error
	if pt.ring != nil {
		errs = append(errs, unix.Munmap(pt.ring))
		pt.ring = nil
	}
	if pt.fd >= 0 {
		errs = append(errs, unix.Close(pt.fd))
		pt.fd = -1
	}
	return errors.Join(errs...)
}
