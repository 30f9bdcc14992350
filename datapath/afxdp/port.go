package afxdp

import "github.com/tabbynet/tabby/datapath"

// A Socket is a datapath.Port.
var _ datapath.Port = (*Socket)(nil)
