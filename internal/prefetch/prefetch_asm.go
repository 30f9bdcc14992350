//go:build amd64 || arm64

package prefetch

import "unsafe"

// Read hints that the cache line holding p will be read soon.
//
//go:noescape
func Read(p unsafe.Pointer)

// Write hints that the cache line holding p will be written soon, fetching
// it in exclusive state (PREFETCHW; a no-op hint on CPUs without it).
//
//go:noescape
func Write(p unsafe.Pointer)

// Lines hints, for every address in addrs, that the cache line holding it
// will be read soon and the line holding the byte before it written soon:
// a received frame's headers and the headroom an in-place encapsulation
// writes. One call for a whole batch (an assembly function is not inlined).
//
//go:noescape
func Lines(addrs []uintptr)
