// Package lpm maps IPv4 and IPv6 addresses to next-hop ids by longest-prefix
// match. Table4 and Table6 hold prefixes with a next-hop id each (an integer
// up to MaxNextHop); Lookup returns the id of the longest prefix that contains
// an address, LookupBatch does the same for a batch of addresses and writes
// NoRoute for misses. Neither allocates.
//
// # Concurrency contract
//
// Any number of goroutines may call Lookup, LookupBatch, Len and MemoryBytes
// concurrently with one another and with Insert and Delete. Readers are
// lock-free and wait-free: a lookup takes no lock, never retries and runs a
// bounded number of steps whatever the writer does. Writers are serialised by
// an internal mutex, so Insert and Delete may be called from any goroutine;
// they take effect one at a time. A reader never blocks and never sees a
// torn table: a lookup concurrent with an update returns either the answer
// before or the answer after it for its address (precisely: a value that was
// the table's answer for that address at some instant during the lookup;
// Table6 lookups are even linearizable). Updates are incremental: they touch
// the entries of the changed prefix only and never rebuild the table.
//
// # IPv4: DIR-24-8
//
// Table4 follows DPDK's rte_lpm. tbl24 has one 32-bit entry per /24 (1<<24
// entries, 64 MiB) holding a valid bit, the length of the prefix it came
// from and a next hop (see lpm.go for the encoding). Prefixes of length ≤ 24
// are expanded into the entries they cover; an entry is overwritten only by
// a prefix at least as long as the one it came from, and on Delete the
// entries of the deleted prefix get the value of the longest shorter prefix
// that covers it, which the writer finds in its index of the prefixes (one
// map per length). A /24 that holds longer prefixes is "extended": its tbl24
// entry only says so, and the 256 addresses of the /24 have their own
// entries in a group. A lookup is one memory read for answers from prefixes
// ≤ /24 (almost all of them in a real table) and three more dependent reads
// for the rest. Readers load entries with atomic loads (plain moves on
// amd64), the writer stores them with atomic stores.
//
// tbl24 is a Go array aligned to 2 MiB and advised to use transparent huge
// pages (madvise(MADV_HUGEPAGE); THP is in madvise mode on our machines), so
// that cold random lookups miss the cache but not the TLB. On our VMs (about
// 90% of the table ends up on huge pages) this measured within noise of a
// plain Go array on 4 KiB pages and of an anonymous mmap on huge pages
// (about 7-8 ns per random lookup for all three, TestPerfTbl24Mode): the
// host's large last-level cache hides the page walks. It costs only 2 MiB
// of untouched alignment slack and helps where page walks miss; the Go
// array, unlike a mapping, leaves the table's lifetime to the collector,
// which cannot free it under a lookup in flight.
//
// Groups and the reuse hazard. DPDK finds a group through a group index
// stored in the tbl24 entry; a reader that loaded the index, then saw the
// writer free the group and reuse the index for another /24, would read the
// wrong group. Table4 avoids the hazard without reader registration and
// without retries: it finds groups through a directory keyed by the /24
// itself (a 64 Ki-slot array of /16 chunks of 256 slots), so a slot only ever
// holds groups of its own /24, and a group is a fresh heap object for each
// extension, never reused. The writer extends a /24 by publishing a group
// that holds the /24's value everywhere, then marking the tbl24 entry
// extended. When the last prefix longer than /24 of a /24 goes, the group
// holds one value everywhere and the writer collapses it: it stores that
// value into the tbl24 entry, then into the slot's "last collapsed" value,
// then clears the slot. A reader that saw the entry extended and then finds
// the slot empty reads the last collapsed value, which was the /24's answer
// at a collapse that happened during the lookup (Go's atomics are
// sequentially consistent and the stores are ordered as above); a reader
// that still holds a collapsed group reads the value it froze with, the
// answer at its collapse. So the reader path is straight-line code (which
// also keeps Lookup within the compiler's inlining budget), and a dropped
// group lives until no reader holds it: the garbage collector is the grace
// period. Directory chunks (4 KiB per /16 that ever held a prefix longer
// than /24) are kept for the table's life; the groups themselves are freed.
//
// LookupBatch loads the tbl24 entries of the whole batch first (independent
// loads whose cache misses the core overlaps), then resolves the few
// extended ones and converts entries to next hops without branches. On the
// full real table it costs about half a single Lookup per address on random
// addresses, and about a twelfth of a bart lookup. Touching entries ahead of
// use as a software prefetch brought nothing measurable: the first pass is
// already nothing but independent loads.
//
// # IPv6: direct top level and copy-on-write stride-8 nodes
//
// Table6 indexes the first 16 bits of an address directly (65536 slots).
// A slot points to the immutable root of its /16, which holds the best
// prefix of length ≤ 16 for the /16 and the top of a trie of stride-8 nodes:
// a node covers one byte of the address. A 256-bit bitmap marks the bytes
// that have a child, indexed by popcount rank; the values of the prefixes
// whose last bits fall in the node's byte are expanded over the 256 byte
// values and stored run-length compressed (a bitmap marks where a run of
// equal values starts, values are indexed by popcount rank). A lookup
// descends while there is a child and returns the deepest value found: no
// backtracking. A root points to its children (up to 256 of them); a node
// below stores its children by value in one array, so going down a level is
// one dependent memory access rather than two (that cut in-prefix lookups
// by about 40%), at the cost of copying a node's children on every update
// below it.
//
// Updates copy the path from the root to the changed node and publish the
// new root with one atomic store into its slot: a lookup reads one
// consistent version of its /16, old or new, and the garbage collector frees
// the replaced nodes once no reader holds them. Roots that only hold a short
// prefix (such as every /16 under ::/0) are shared, one per value. Nodes
// always have at least one value slot and one child slot, so LookupBatch
// walks the addresses of a batch level by level without a branch on the
// loaded data: a mispredicted branch would discard the loads issued after
// it, and with them the overlap of cache misses that batching is for.
//
// Measured on the real table (~160k prefixes), against bart.Table as the
// reference: memory is about the same (6.6 MB of lookup structures, bart
// 6.9 MB), single lookups about 2× faster on addresses inside prefixes and
// 3× on random addresses; an insert costs about 1.6 µs (path copy, like
// bart's InsertPersist at 2-3 µs), 20× a bart in-place Insert.
package lpm
