package datapath

// Frame is one packet in a batch. Buf is the port's whole frame buffer; the
// packet, starting with its Ethernet header, is Buf[Off:Off+Len]. The bytes
// before Off are headroom that encapsulation writes into.
type Frame struct {
	Buf []byte
	Off int
	Len int
	// Handle is the port's private reference to the buffer (a UMEM address
	// for AF_XDP, an index for the mem port). Ports that share buffers
	// (AF_XDP sockets sharing a UMEM) can transmit each other's frames.
	Handle uint64
	// Port is the port the frame was received on.
	Port PortID
}

// Packet returns the packet bytes.
func (f *Frame) Packet() []byte { return f.Buf[f.Off : f.Off+f.Len] }

// DefaultBatchSize is the batch size workers use unless configured.
const DefaultBatchSize = 64

// MaxBatchSize bounds the batch size (VPP's frame size).
const MaxBatchSize = 256

// Port moves batches of frames in and out of the dataplane. A port and the
// frames it hands out are owned by one worker goroutine; implementations need
// no locks on these paths.
//
// All ports of one worker share one pool of frame buffers (as AF_XDP sockets
// share a UMEM with XDP_SHARED_UMEM): a frame received on one port may be
// transmitted or released on any other. Every frame returned by Receive goes
// back exactly once: through Transmit or Release.
type Port interface {
	// Receive fills frames with up to len(frames) received packets and
	// returns how many. It does not block.
	Receive(frames []Frame) int
	// Transmit queues frames for sending and takes ownership of all of
	// them; it returns how many were accepted. Frames beyond that were
	// released by the port (and are counted as DropTxFull by the worker).
	Transmit(frames []Frame) int
	// Release returns frames that will not be transmitted.
	Release(frames []Frame)
	// Headroom is the headroom every received frame has at least.
	Headroom() int
}
