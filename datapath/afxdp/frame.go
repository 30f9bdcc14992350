package afxdp

import "github.com/tabbynet/tabby/datapath"

// Frame is the dataplane's frame type; the socket's Receive, Transmit and
// Release work on it directly.
type Frame = datapath.Frame

// PortID is the dataplane's port index.
type PortID = datapath.PortID
