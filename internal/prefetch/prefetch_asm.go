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
