// Package nsutil runs code inside a network namespace.
package nsutil

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread in network namespace h and returns its
// error. h <= 0 means the calling thread's namespace: fn then runs on the
// calling goroutine, locked to its thread so that everything fn creates
// lands in one namespace. Sockets, links and BPF attachments made by fn
// belong to the namespace and stay usable from any thread.
func Do(h netns.NsHandle, fn func() error) error {
	if h <= 0 {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// The thread is unlocked only once it is back in its original
		// namespace; otherwise the goroutine exits locked and the runtime
		// destroys the thread.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// DoNamed runs fn in the namespace named name (as `ip netns` names it).
func DoNamed(name string, fn func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer h.Close()
	if err := Do(h, fn); err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	return nil
}
