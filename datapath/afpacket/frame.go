package afpacket

import "github.com/tabbynet/tabby/datapath"

// Frame is the dataplane's frame type.
type Frame = datapath.Frame

// PortID is the dataplane's port index.
type PortID = datapath.PortID

// A Port is a datapath.Port.
var _ datapath.Port = (*Port)(nil)
