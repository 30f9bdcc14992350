package engine

import (
	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afpacket"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

// Stats is a snapshot of an engine's ports, steering and frames. After Close
// it is the state recorded at the end of the drain, just before the sockets
// were closed.
type Stats struct {
	PortKind PortKind
	// Interfaces are the attached interfaces in PortID order: those of
	// Config.Interfaces (index = PortID) until AddInterface or
	// RemoveInterface changed the set; InterfaceStats.Port is the PortID.
	Interfaces []InterfaceStats
	// Ports are the sockets, one per interface and worker.
	Ports []PortStats
	// Workers are the worker loops, one per queue.
	Workers []WorkerStats
	// Frames sums the workers' frame counts (UMEM or pool). On a stopped
	// engine App and Tx are zero unless a frame leaked.
	Frames afxdp.FrameCounts
	// InvalidReleases counts frames handed back to a UMEM or pool that it
	// had not lent (a dataplane bug if non-zero).
	InvalidReleases uint64
	// Running is false once the workers stopped.
	Running bool
}

// InterfaceStats describes one interface.
type InterfaceStats struct {
	Name string
	// Port is the interface's datapath.PortID.
	Port    datapath.PortID
	Ifindex int
	MTU     int
	// Runtime is true for an interface added by AddInterface, Workload
	// for one facing workloads (Interface.Workload).
	Runtime, Workload bool
	// XDPMode is the steering program's attach mode (AF_XDP only:
	// XDPDriver or XDPGeneric) and XDPModeReason why.
	XDPMode       afxdp.XDPMode
	XDPModeReason string
	// Steering counts the steering program's decisions on this interface
	// (AF_XDP only).
	Steering SteeringStats
	// SocketMode and SocketModeReason are the AF_XDP bind mode of the
	// interface's socket on the first worker, and why (AF_XDP only).
	SocketMode       afxdp.Mode
	SocketModeReason string
}

// SteeringStats are the XDP steering program's per-decision counters for
// one interface (see the afxdp Stat* constants).
type SteeringStats struct {
	PassOther, PassHost, PassTruncated, PassFragment uint64
	RedirectPod, RedirectIPIP, RedirectVXLAN         uint64
	// NoSocket counts owned frames passed to the kernel because their
	// queue had no socket.
	NoSocket uint64
}

// Redirected returns the frames redirected to the dataplane.
func (s SteeringStats) Redirected() uint64 { return s.RedirectPod + s.RedirectIPIP + s.RedirectVXLAN }

// Passed returns the frames passed to the kernel.
func (s SteeringStats) Passed() uint64 {
	return s.PassOther + s.PassHost + s.PassTruncated + s.PassFragment + s.NoSocket
}

// PortStats describes one socket.
type PortStats struct {
	Interface string
	Port      datapath.PortID
	Queue     int
	Worker    int
	// SocketMode is the AF_XDP bind mode (copy or zero-copy) and
	// SocketModeReason why; TxBudget the frames one copy-mode kick sends.
	SocketMode       afxdp.Mode
	SocketModeReason string
	TxBudget         int
	// XDP holds an AF_XDP socket's counters (Kernel* from
	// XDP_STATISTICS), Packet an AF_PACKET socket's.
	XDP    afxdp.SocketStats
	Packet afpacket.Stats
}

// WorkerStats describes one worker loop.
type WorkerStats struct {
	Queue    int
	Counters datapath.Counters
	Frames   afxdp.FrameCounts
	// Loop says how the loop spent its time; it is known once the loop
	// stopped.
	Loop    afxdp.LoopStats
	Running bool
	// Err is the error that ended the loop, if any.
	Err error
}
