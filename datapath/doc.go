// Package datapath is Tabby's packet pipeline: batches of frames from a Port
// are parsed, decapsulated when they are tunnel traffic addressed to this node,
// passed through the policy stage, routed by longest-prefix match, rewritten
// (TTL, MACs, encapsulation) and transmitted grouped by egress port.
//
// Ownership and concurrency:
//   - A Worker and its ports' rings are owned by one goroutine; nothing on the
//     per-packet path takes a lock, allocates, or logs.
//   - The forwarding state is a Snapshot published by Tables through an
//     atomic.Pointer. A worker loads it once per batch. Snapshots are
//     immutable except for their LPM tables, which are updated in place with
//     per-lookup atomicity (package lpm); Tables orders updates so that a
//     route never names a next hop the worker's snapshot lacks.
//   - Counters are kept by the worker in plain fields and published once per
//     batch with atomic stores, so readers (metrics) never race the worker.
//
// Drops are never silent: every dropped frame is counted under a DropReason.
package datapath
