//go:build !amd64 && !arm64

package prefetch

import "unsafe"

// Read does nothing on this architecture.
func Read(p unsafe.Pointer) {}

// Write does nothing on this architecture.
func Write(p unsafe.Pointer) {}

// Lines does nothing on this architecture.
func Lines(addrs []uintptr) {}
