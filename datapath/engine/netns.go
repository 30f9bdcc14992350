package engine

import (
	"github.com/vishvananda/netns"

	"github.com/tabbynet/tabby/internal/nsutil"
)

// inNetns runs fn on an OS thread in network namespace h (see nsutil.Do).
func inNetns(h netns.NsHandle, fn func() error) error { return nsutil.Do(h, fn) }
