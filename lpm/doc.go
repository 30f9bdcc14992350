// Package lpm maps IPv4 and IPv6 addresses to next-hop ids by longest-prefix
// match. Table4 and Table6 hold prefixes with a next-hop id each (an integer
// up to MaxNextHop); Lookup returns the id of the longest prefix that contains
// an address, LookupBatch does the same for a batch of addresses and writes
// NoRoute for misses.
//
// # Concurrency contract
//
// Any number of goroutines may call Lookup, LookupBatch, Len and MemoryBytes
// concurrently with one another and with Insert and Delete. Readers are
// lock-free and wait-free: a lookup takes no lock, never retries and runs a
// bounded number of steps whatever the writer does. Writers are serialised by
// an internal mutex, so Insert and Delete may be called from any goroutine,
// one at a time taking effect. A reader never sees a torn table: a lookup
// concurrent with an update returns either the answer before or the answer
// after it for its address (more precisely, a value that was the table's
// answer for that address at some instant during the lookup). Updates are
// incremental: they touch the entries of the changed prefix only and never
// rebuild the table.
//
// # IPv4: DIR-24-8
//
// Table4 follows DPDK's rte_lpm. tbl24 has one 32-bit entry per /24 (1<<24
// entries, 64 MiB, mapped with mmap and madvise(MADV_HUGEPAGE) on Linux so the
// table sits on 2 MiB pages: cold random lookups then miss the cache but
// rarely the TLB). An entry holds a valid bit, the length of the prefix it
// came from and a next hop; prefixes of length ≤ 24 are expanded into the
// entries they cover, and an entry is overwritten only by a prefix at least as
// long as the one it came from. A /24 that holds longer prefixes is
// "extended": its tbl24 entry only says so, and the /24's 256 addresses have
// their own entries in a group. One lookup is one memory read for ≤ /24
// answers and three more dependent reads for the rest.
//
// Groups are found through a directory keyed by the /24 itself, not through a
// reusable group index as in DPDK. That removes the reuse hazard (a reader
// that loaded an index, then the writer freed and reused it for another /24)
// without reader registration: a directory slot only ever holds groups of its
// own /24. When the last longer-than-/24 prefix of a /24 goes, the writer
// "collapses" its group: it stores the group's (now uniform) value into tbl24,
// then into the slot's last-collapsed value, then clears the slot. A reader
// that saw the extended entry and then finds the slot empty reads the
// last-collapsed value instead, which was the /24's answer at a collapse that
// happened during the lookup (Go's atomics are sequentially consistent, and
// the writer orders its stores: slot before tbl24 on expansion, tbl24 before
// last value before slot on collapse). A reader that still holds a collapsed
// group reads the value the group froze with at its collapse. So a reader
// never loops, and a dropped group lives until the garbage collector has seen
// every reader let go of it: the collector is the grace period. Groups are
// fresh heap objects, never reused; directory chunks (3 KiB per /16 that ever
// held a prefix longer than /24) are kept for the table's life.
//
// The writer keeps the prefixes in one map per length; on Delete it finds
// there the longest shorter prefix that covers the deleted one, whose value
// replaces the deleted prefix's entries.
//
// # IPv6: direct top level and copy-on-write multibit nodes
//
// Table6 indexes the first 16 bits of an address directly (65536 slots). A
// slot points to an immutable node that holds the best prefix of length ≤ 16
// for that /16 and a trie of stride-8 nodes below it. A node covers one byte
// of the address: a 256-bit bitmap marks the bytes that have a child node
// (children are stored densely, indexed by popcount rank), and the values of
// the prefixes whose last bits fall in this byte are expanded over the 256
// byte values and stored run-length compressed (a bitmap marks where a run
// of equal values starts, values are indexed by popcount rank). A lookup
// descends while there is a child and returns the deepest value found.
//
// Updates copy the path from the /16 slot to the changed node and publish it
// with one atomic store into the slot: a reader works on one consistent
// version of the whole /16, old or new. Memory of replaced nodes is freed by
// the garbage collector once no reader holds them.
package lpm
