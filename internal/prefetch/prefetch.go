// Package prefetch issues CPU cache prefetch hints for packet memory.
//
// A poll-mode worker touches every received frame for the first time when
// it parses the headers. In AF_XDP copy mode the kernel has just written
// those bytes on another CPU, so each first touch is a cache miss; taken one
// after another they serialise (a worker that parses 64 frames in a row
// waits for 64 misses). Hinting the lines for a whole batch before parsing
// it lets the CPU fetch them in parallel, as DPDK applications do with
// rte_prefetch0. The hints never fault: an address outside mapped memory is
// simply ignored by the CPU.
//
// On amd64 and arm64 the functions are one instruction each in assembly;
// elsewhere they do nothing.
package prefetch

// Line is the cache line size the hints assume.
const Line = 64
