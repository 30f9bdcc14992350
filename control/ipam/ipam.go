// Package ipam assigns pod addresses with Calico's semantics, on any
// datastore.Datastore.
//
// Pools (resources.IPPool) are cut into blocks of 2^(bits-blockSize)
// addresses. A node claims a block by creating its IPAMBlock object (an
// atomic create-if-absent) with the node as affinity, recording the claim
// in a BlockAffinity; it then assigns addresses from its own blocks,
// claims another block when they are full, and, when no block is left
// unclaimed, borrows free addresses from other nodes' blocks (unless
// StrictAffinity forbids it). Disabled pools, and pools whose nodeSelector
// does not select the node, give no new addresses.
//
// Every address is assigned to a handle (for pods, the container ID) with
// attributes (pod namespace and name; the node and time are added). An
// IPAMHandle object per handle records which blocks hold its addresses, so
// ReleaseByHandle touches only those. Releasing is idempotent.
//
// Correctness rests on one rule: a block is only ever changed by a
// compare-and-swap on its resourceVersion, retried with jittered back-off
// on conflict. Two assignments can therefore never hand out one address,
// whichever instances, goroutines and nodes make them.
//
// On a datastore that implements datastore.Transactor (etcd), an
// assignment writes the block and its handle records in one transaction:
// both or neither. Elsewhere (Kubernetes) the handle records are written
// first and the block after, as Calico does, so a crash between the two
// leaves a handle count without an address, never an address without a
// handle record. GarbageCollect repairs such leaks.
//
// Concurrent assignments from one block within one IPAM are batched: one
// write serves every request queued while the previous write was in
// flight (see batch.go), so a node's rate is bounded by the datastore's
// throughput, not by one round trip per address.
//
// An IPAM is safe for concurrent use. It serializes its own writes to each
// block (so its goroutines do not conflict with each other), lets one
// goroutine at a time claim a block, and caches the blocks it has written;
// that cache is only an optimization, validated by every compare-and-swap.
// Pools and the node's labels are cached for PoolCacheTTL. Run one IPAM
// per node.
package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tabbynet/tabby/acl/selector"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// Attribute keys IPAM adds to every allocation, and the ones the CNI
// plugin sets.
const (
	AttrNode         = "node"
	AttrTimestamp    = "timestamp"
	AttrPodNamespace = "namespace"
	AttrPodName      = "pod"
)

// Errors, matched with errors.Is.
var (
	// ErrNoPools: no enabled pool of the family selects this node.
	ErrNoPools = errors.New("no usable IP pool")
	// ErrExhausted: the usable pools have no free address left (for this
	// node, under strict affinity).
	ErrExhausted = errors.New("no free address in the usable IP pools")
	// ErrInUse: AssignIP's address is already assigned.
	ErrInUse = errors.New("address already assigned")
	// ErrNotInPool: AssignIP's address is in no pool.
	ErrNotInPool = errors.New("address is in no IP pool")
	// ErrStrictAffinity: AssignIP's address is in another node's block.
	ErrStrictAffinity = errors.New("address is in another node's block and strict affinity is on")
	// ErrMaxBlocks: the node holds MaxBlocksPerNode blocks already.
	ErrMaxBlocks = errors.New("node has its maximum number of blocks")
	// ErrTooManyRetries: a compare-and-swap kept conflicting.
	ErrTooManyRetries = errors.New("too many conflicting updates")
)

// Config configures an IPAM.
type Config struct {
	// Node is the name of the node addresses are assigned for. Required.
	Node string
	// StrictAffinity forbids borrowing: this node assigns only from blocks
	// affine to it.
	StrictAffinity bool
	// MaxBlocksPerNode caps the blocks this node claims (0: no cap).
	MaxBlocksPerNode int
	// PoolCacheTTL is how long the pools and the node's labels, once read,
	// are used for assignments (default 1s; negative: read them for every
	// assignment). A pool disabled or a label changed takes effect within
	// it.
	PoolCacheTTL time.Duration
	// MaxRetries bounds the compare-and-swap attempts of one change
	// (default 100).
	MaxRetries int
	// RetryBackoff is the largest jittered wait between attempts (default
	// 20ms; the n-th wait is uniform in [0, min(RetryBackoff, 1ms·2^n)]).
	RetryBackoff time.Duration
	// Logger receives claim, borrow and release messages (default:
	// discarded).
	Logger *slog.Logger
	// Now returns the time stamped on allocations (default time.Now).
	Now func() time.Time
}

// IPAM assigns and releases addresses for one node.
type IPAM struct {
	ds  datastore.Datastore
	cfg Config
	log *slog.Logger

	viewMu     sync.Mutex
	cachedView *poolView

	// claimMu lets one goroutine at a time claim a block; claims counts
	// the claims made, so a goroutine that waited can tell one happened.
	claimMu sync.Mutex
	claims  atomic.Int64

	mu sync.Mutex
	// blocks caches the blocks this IPAM has read or written, each with
	// the lock that serializes this IPAM's writes to it.
	blocks map[netip.Prefix]*blockEntry
	// affine is this node's blocks as last known; nil until loaded.
	affine map[netip.Prefix]bool
}

// blockEntry is this IPAM's view of one block. mu serializes this IPAM's
// reads and writes of the block; the queue batches concurrent assignments
// from it (see batch.go).
type blockEntry struct {
	mu    sync.Mutex
	block *resources.IPAMBlock // nil: not cached

	qmu    sync.Mutex
	queue  []*assignRequest
	leader bool // a goroutine is committing batches
}

// New returns an IPAM for cfg.Node.
func New(ds datastore.Datastore, cfg Config) (*IPAM, error) {
	if cfg.Node == "" {
		return nil, errors.New("ipam: no node name")
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = 100
	}
	if cfg.PoolCacheTTL == 0 {
		cfg.PoolCacheTTL = time.Second
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &IPAM{ds: ds, cfg: cfg, log: cfg.Logger.With("node", cfg.Node), blocks: map[netip.Prefix]*blockEntry{}}, nil
}

// Node returns the node name.
func (a *IPAM) Node() string { return a.cfg.Node }

// AssignArgs says what AutoAssign should assign.
type AssignArgs struct {
	// Handle owns the addresses (the container ID for a pod). Required:
	// 1..253 letters, digits, '-', '_', '.'.
	Handle string
	// Attrs are stored with the addresses (AttrPodNamespace, AttrPodName).
	Attrs map[string]string
	// Num4 and Num6 are how many IPv4 and IPv6 addresses to assign.
	Num4, Num6 int
	// Pools4 and Pools6 restrict assignment to the named pools (empty: any
	// usable pool of the family).
	Pools4, Pools6 []string
}

// Assignment is what AutoAssign assigned.
type Assignment struct {
	IPv4, IPv6 []netip.Addr
}

// AutoAssign assigns args.Num4 IPv4 and args.Num6 IPv6 addresses to
// args.Handle. It assigns all or nothing: on error, addresses assigned by
// this call are released again.
func (a *IPAM) AutoAssign(ctx context.Context, args AssignArgs) (Assignment, error) {
	var out Assignment
	if !resources.ValidHandle(args.Handle) {
		return out, fmt.Errorf("ipam: assign: invalid handle %q", args.Handle)
	}
	if args.Num4 < 0 || args.Num6 < 0 {
		return out, fmt.Errorf("ipam: assign to %s: negative count", args.Handle)
	}
	attr := withAttrs(args.Handle, args.Attrs, map[string]string{
		AttrNode: a.cfg.Node, AttrTimestamp: a.cfg.Now().UTC().Format(time.RFC3339),
	})
	var err error
	if args.Num4 > 0 {
		out.IPv4, err = a.autoAssign(ctx, false, args.Num4, attr, args.Pools4)
		if err != nil {
			a.rollback(ctx, out.IPv4)
			return Assignment{}, fmt.Errorf("ipam: assign %d IPv4 to %s: %w", args.Num4, args.Handle, err)
		}
	}
	if args.Num6 > 0 {
		out.IPv6, err = a.autoAssign(ctx, true, args.Num6, attr, args.Pools6)
		if err != nil {
			a.rollback(ctx, append(out.IPv4, out.IPv6...))
			return Assignment{}, fmt.Errorf("ipam: assign %d IPv6 to %s: %w", args.Num6, args.Handle, err)
		}
	}
	return out, nil
}

// rollback releases addresses a failed AutoAssign had assigned.
func (a *IPAM) rollback(ctx context.Context, addrs []netip.Addr) {
	if len(addrs) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if _, err := a.ReleaseIPs(ctx, addrs...); err != nil {
		a.log.Warn("ipam: rollback failed; garbage collection will release the addresses", "addrs", addrs, "err", err)
	}
}

// pool is a usable pool, parsed.
type pool struct {
	name      string
	prefix    netip.Prefix
	blockBits int
}

// blockOf returns the block of the pool containing addr.
func (p pool) blockOf(addr netip.Addr) netip.Prefix {
	b, _ := addr.Prefix(p.blockBits)
	return b
}

// poolView is the pools and this node's labels as read at one time.
type poolView struct {
	pools  []*resources.IPPool
	labels map[string]string
	read   time.Time
}

// view returns the pools and node labels, read at most PoolCacheTTL ago.
func (a *IPAM) view(ctx context.Context) (*poolView, error) {
	a.viewMu.Lock()
	defer a.viewMu.Unlock()
	if v := a.cachedView; v != nil && a.cfg.PoolCacheTTL > 0 && time.Since(v.read) < a.cfg.PoolCacheTTL {
		return v, nil
	}
	now := time.Now()
	pools, _, err := datastore.ListOf[*resources.IPPool](ctx, a.ds)
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	v := &poolView{pools: pools, read: now}
	n, err := datastore.Get[*resources.Node](ctx, a.ds, a.cfg.Node)
	switch {
	case err == nil:
		v.labels = n.Labels
	case !datastore.IsNotFound(err):
		return nil, fmt.Errorf("read node: %w", err)
	}
	a.cachedView = v
	return v, nil
}

// usablePools returns the pools of the family the node may take blocks
// from, sorted by name, restricted to names when given.
func (a *IPAM) usablePools(ctx context.Context, v6 bool, names []string) ([]pool, error) {
	v, err := a.view(ctx)
	if err != nil {
		return nil, err
	}
	var out []pool
	for _, p := range v.pools {
		pf := p.Prefix()
		if !pf.IsValid() || pf.Addr().Is6() != v6 || p.Spec.Disabled {
			continue
		}
		if len(names) > 0 && !slices.Contains(names, p.Name) {
			continue
		}
		sel, err := selector.Parse(p.Spec.NodeSelector)
		if err != nil {
			continue // Validate rejects these; skip rather than fail.
		}
		if !sel.MatchesMap(v.labels) {
			continue
		}
		out = append(out, pool{name: p.Name, prefix: pf, blockBits: p.EffectiveBlockSize()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// inPools reports whether block b lies in one of the pools.
func inPools(pools []pool, b netip.Prefix) bool {
	for _, p := range pools {
		if p.prefix.Overlaps(b) && p.prefix.Bits() <= b.Bits() {
			return true
		}
	}
	return false
}

// autoAssign assigns n addresses of one family: from the node's blocks,
// then from newly claimed blocks, then borrowed.
func (a *IPAM) autoAssign(ctx context.Context, v6 bool, n int, attr resources.AllocationAttribute, names []string) ([]netip.Addr, error) {
	pools, err := a.usablePools(ctx, v6, names)
	if err != nil {
		return nil, err
	}
	if len(pools) == 0 {
		return nil, ErrNoPools
	}
	var out []netip.Addr
	fail := func(err error) ([]netip.Addr, error) { return out, err }

	var taken map[netip.Prefix]bool // blocks known to exist
	for len(out) < n {
		gen := a.claims.Load()
		// 1. The node's own blocks.
		affine, err := a.affineBlocks(ctx)
		if err != nil {
			return fail(err)
		}
		for _, b := range affine {
			if !inPools(pools, b) {
				continue
			}
			got, err := a.assignFromBlock(ctx, b, n-len(out), attr, true)
			out = append(out, got...)
			if err != nil {
				return fail(err)
			}
			if len(out) == n {
				return out, nil
			}
		}
		// 2. A new block. One goroutine claims at a time; the others then
		// look at the node's blocks again, which now include the new one.
		a.claimMu.Lock()
		if a.claims.Load() != gen {
			a.claimMu.Unlock()
			continue
		}
		if taken == nil {
			keys, err := a.ds.ListKeys(ctx, resources.KindIPAMBlock)
			if err != nil {
				a.claimMu.Unlock()
				return fail(fmt.Errorf("list blocks: %w", err))
			}
			taken = make(map[netip.Prefix]bool, len(keys))
			for _, k := range keys {
				if p, ok := resources.ParseBlockName(k.Name); ok {
					taken[p] = true
				}
			}
		}
		b, err := a.claimBlock(ctx, pools, taken)
		if err == nil {
			a.claims.Add(1)
		}
		a.claimMu.Unlock()
		if errors.Is(err, ErrExhausted) || errors.Is(err, ErrMaxBlocks) {
			break
		}
		if err != nil {
			return fail(err)
		}
		got, err := a.assignFromBlock(ctx, b, n-len(out), attr, true)
		out = append(out, got...)
		if err != nil {
			return fail(err)
		}
	}
	if len(out) == n {
		return out, nil
	}
	// 3. Borrowed addresses.
	if a.cfg.StrictAffinity {
		return fail(ErrExhausted)
	}
	blocks, err := a.listBlocks(ctx)
	if err != nil {
		return fail(err)
	}
	got, err := a.borrow(ctx, pools, blocks, n-len(out), attr)
	out = append(out, got...)
	if err != nil {
		return fail(err)
	}
	if len(out) < n {
		return fail(ErrExhausted)
	}
	return out, nil
}

// entry returns the cache entry of block b.
func (a *IPAM) entry(b netip.Prefix) *blockEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.blocks[b]
	if e == nil {
		e = &blockEntry{}
		a.blocks[b] = e
	}
	return e
}

// setAffine records whether block b is this node's.
func (a *IPAM) setAffine(b netip.Prefix, mine bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.affine == nil {
		return
	}
	if mine {
		a.affine[b] = true
	} else {
		delete(a.affine, b)
	}
}

// affineBlocks returns this node's blocks, sorted; the first call reads
// them from the node's BlockAffinity objects.
func (a *IPAM) affineBlocks(ctx context.Context) ([]netip.Prefix, error) {
	a.mu.Lock()
	loaded := a.affine != nil
	a.mu.Unlock()
	if !loaded {
		affs, _, err := datastore.ListOf[*resources.BlockAffinity](ctx, a.ds)
		if err != nil {
			return nil, fmt.Errorf("list block affinities: %w", err)
		}
		set := map[netip.Prefix]bool{}
		for _, af := range affs {
			if af.Spec.Node != a.cfg.Node || af.Spec.State == resources.AffinityPendingDeletion {
				continue
			}
			if p, err := netip.ParsePrefix(af.Spec.CIDR); err == nil {
				set[p] = true
			}
		}
		a.mu.Lock()
		if a.affine == nil {
			a.affine = set
		}
		a.mu.Unlock()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]netip.Prefix, 0, len(a.affine))
	for p := range a.affine {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return comparePrefix(out[i], out[j]) < 0 })
	return out, nil
}

func comparePrefix(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}

// retry runs f until it succeeds, fails with an error other than a
// conflict, or MaxRetries attempts conflicted, waiting a jittered
// exponential back-off between attempts.
func (a *IPAM) retry(ctx context.Context, what string, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || !datastore.IsConflict(err) {
			return err
		}
		if attempt+1 >= a.cfg.MaxRetries {
			return fmt.Errorf("%s: %w after %d attempts: %w", what, ErrTooManyRetries, attempt+1, err)
		}
		d := min(a.cfg.RetryBackoff, time.Millisecond<<min(attempt, 20))
		t := time.NewTimer(rand.N(d + 1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
	}
}

// loadBlock returns the cached block b or reads it; nil if it does not
// exist. The caller holds e.mu.
func (a *IPAM) loadBlock(ctx context.Context, e *blockEntry, b netip.Prefix) (*resources.IPAMBlock, error) {
	if e.block != nil {
		return e.block, nil
	}
	blk, err := a.getBlock(ctx, b)
	if err != nil || blk == nil {
		return nil, err
	}
	e.block = blk
	return blk, nil
}

// updateBlock writes blk (a modified copy of e.block) with a
// compare-and-swap; on a conflict the cache entry is dropped so the next
// attempt reads the block again. The caller holds e.mu.
func (a *IPAM) updateBlock(ctx context.Context, e *blockEntry, blk *resources.IPAMBlock) error {
	out, err := datastore.Update(ctx, a.ds, blk)
	if err != nil {
		e.block = nil
		return err
	}
	e.block = out
	return nil
}

// claimBlock claims a block of one of the pools that is not in taken for
// this node and returns it; ErrExhausted when every block of every pool is
// taken. Blocks it finds taken by someone else are added to taken, and so
// is the block it claims.
func (a *IPAM) claimBlock(ctx context.Context, pools []pool, taken map[netip.Prefix]bool) (netip.Prefix, error) {
	if max := a.cfg.MaxBlocksPerNode; max > 0 {
		affine, err := a.affineBlocks(ctx)
		if err != nil {
			return netip.Prefix{}, err
		}
		if len(affine) >= max {
			return netip.Prefix{}, ErrMaxBlocks
		}
	}
	for _, p := range pools {
		for {
			cand, ok := freeBlock(p, taken)
			if !ok {
				break
			}
			claimed, err := a.claim(ctx, cand)
			if err != nil {
				return netip.Prefix{}, err
			}
			taken[cand] = true
			if claimed {
				return cand, nil
			}
		}
	}
	return netip.Prefix{}, ErrExhausted
}

// freeBlock picks a block of pool p not in taken, starting at a random
// block so that nodes claiming at once rarely collide.
func freeBlock(p pool, taken map[netip.Prefix]bool) (netip.Prefix, bool) {
	hostBits := p.blockBits - p.prefix.Bits()
	if hostBits > 62 {
		hostBits = 62 // 2^62 candidate blocks is plenty
	}
	total := uint64(1) << hostBits
	start := rand.Uint64N(total)
	// At most len(taken)+1 probes find a free block if there is one.
	probes := min(total, uint64(len(taken))+1)
	for i := uint64(0); i < probes; i++ {
		b := nthBlock(p, (start+i)%total)
		if !taken[b] {
			return b, true
		}
	}
	return netip.Prefix{}, false
}

// nthBlock returns block i of pool p.
func nthBlock(p pool, i uint64) netip.Prefix {
	shift := p.prefix.Addr().BitLen() - p.blockBits
	b := p.prefix.Addr().As16()
	// Add i << shift to the 128-bit address (v4 lives in the last 4 bytes).
	var carry uint64
	hi, lo := uint64(0), i
	if shift >= 64 {
		hi, lo = i<<(shift-64), 0
	} else if shift > 0 {
		hi, lo = i>>(64-shift), i<<shift
	}
	loA := beUint64(b[8:])
	hiA := beUint64(b[:8])
	loA, carry = add64(loA, lo)
	hiA += hi + carry
	putUint64(b[:8], hiA)
	putUint64(b[8:], loA)
	addr := netip.AddrFrom16(b)
	if p.prefix.Addr().Is4() {
		addr = addr.Unmap()
	}
	return netip.PrefixFrom(addr, p.blockBits)
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func add64(x, y uint64) (uint64, uint64) {
	s := x + y
	if s < x {
		return s, 1
	}
	return s, 0
}

// claim tries to claim block b for this node. It returns false if another
// node has the block.
//
// With a datastore.Transactor the confirmed affinity and the block are
// created in one transaction. Otherwise (and when an affinity is left from
// an interrupted claim) Calico's three steps: a pending affinity, then the
// block created with this node's affinity (the atomic step: it fails if
// the block exists), then the affinity confirmed.
func (a *IPAM) claim(ctx context.Context, b netip.Prefix) (bool, error) {
	if tx, ok := a.ds.(datastore.Transactor); ok {
		aff := &resources.BlockAffinity{
			ObjectMeta: resources.ObjectMeta{Name: resources.AffinityName(a.cfg.Node, b)},
			Spec:       resources.BlockAffinitySpec{State: resources.AffinityConfirmed, Node: a.cfg.Node, CIDR: b.String()},
		}
		e := a.entry(b)
		e.mu.Lock()
		res, err := tx.Commit(ctx,
			datastore.Op{Type: datastore.OpCreate, Object: newBlock(b, a.cfg.Node)},
			datastore.Op{Type: datastore.OpCreate, Object: aff})
		var exists *datastore.AlreadyExistsError
		switch {
		case err == nil:
			e.block = res[0].(*resources.IPAMBlock)
			e.mu.Unlock()
			a.setAffine(b, true)
			a.log.Info("ipam: claimed block", "block", b)
			return true, nil
		case errors.As(err, &exists) && exists.Key.Kind == resources.KindIPAMBlock:
			e.block = nil
			e.mu.Unlock()
			return false, nil
		case errors.As(err, &exists):
			e.mu.Unlock() // a stale affinity of ours: the long way below
		default:
			e.mu.Unlock()
			return false, fmt.Errorf("claim block %s: %w", b, err)
		}
	}
	aff := &resources.BlockAffinity{
		ObjectMeta: resources.ObjectMeta{Name: resources.AffinityName(a.cfg.Node, b)},
		Spec:       resources.BlockAffinitySpec{State: resources.AffinityPending, Node: a.cfg.Node, CIDR: b.String()},
	}
	created, err := datastore.Create(ctx, a.ds, aff)
	switch {
	case datastore.IsAlreadyExists(err):
		if created, err = datastore.Get[*resources.BlockAffinity](ctx, a.ds, aff.Name); err != nil {
			return false, fmt.Errorf("read affinity %s: %w", aff.Name, err)
		}
	case err != nil:
		return false, fmt.Errorf("create affinity for %s: %w", b, err)
	}
	e := a.entry(b)
	e.mu.Lock()
	defer e.mu.Unlock()
	blk, err := datastore.Create(ctx, a.ds, newBlock(b, a.cfg.Node))
	if datastore.IsAlreadyExists(err) {
		e.block = nil
		cur, lerr := a.loadBlock(ctx, e, b)
		if lerr == nil && cur != nil && cur.AffineNode() == a.cfg.Node {
			blk, err = cur, nil // ours from an earlier, interrupted claim
		} else {
			if _, derr := a.ds.Delete(ctx, resources.KeyOf(created), created.ResourceVersion); derr != nil && !datastore.IsNotFound(derr) && !datastore.IsConflict(derr) {
				a.log.Warn("ipam: delete pending affinity", "block", b, "err", derr)
			}
			return false, nil
		}
	}
	if err != nil {
		return false, fmt.Errorf("create block %s: %w", b, err)
	}
	e.block = blk
	if created.Spec.State != resources.AffinityConfirmed {
		err := a.retry(ctx, "confirm affinity "+created.Name, func() error {
			cur, err := datastore.Get[*resources.BlockAffinity](ctx, a.ds, created.Name)
			if datastore.IsNotFound(err) {
				// Garbage collection took the pending claim for a stray
				// one; the block is ours, so record the claim again.
				aff.ResourceVersion, aff.Spec.State = "", resources.AffinityConfirmed
				_, err = a.ds.Create(ctx, aff)
				if datastore.IsAlreadyExists(err) {
					return &datastore.ConflictError{Key: resources.KeyOf(aff)}
				}
				return err
			}
			if err != nil {
				return err
			}
			cur.Spec.State = resources.AffinityConfirmed
			_, err = datastore.Update(ctx, a.ds, cur)
			return err
		})
		if err != nil {
			return false, fmt.Errorf("confirm affinity for %s: %w", b, err)
		}
	}
	a.setAffine(b, true)
	a.log.Info("ipam: claimed block", "block", b)
	return true, nil
}

// borrow assigns up to n addresses from blocks of the pools that are not
// this node's, those with most free addresses first (as listed; each
// assignment reads the block again).
func (a *IPAM) borrow(ctx context.Context, pools []pool, blocks []*resources.IPAMBlock, n int, attr resources.AllocationAttribute) ([]netip.Addr, error) {
	type cand struct {
		p    netip.Prefix
		free int
	}
	var cands []cand
	for _, b := range blocks {
		p := b.Prefix()
		if b.AffineNode() == a.cfg.Node || !inPools(pools, p) || freeCount(b) == 0 {
			continue
		}
		cands = append(cands, cand{p, freeCount(b)})
	}
	// Most free first, random among equals, so borrowers spread out.
	rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].free > cands[j].free })
	var out []netip.Addr
	for _, c := range cands {
		got, err := a.assignFromBlock(ctx, c.p, n-len(out), attr, false)
		out = append(out, got...)
		if err != nil {
			return out, err
		}
		if len(got) > 0 {
			a.log.Debug("ipam: borrowed", "block", c.p, "addrs", got)
		}
		if len(out) == n {
			break
		}
	}
	return out, nil
}

// AssignIP assigns the given address to handle. The address must lie in a
// pool (disabled pools included); if its block does not exist yet, this
// node claims it.
func (a *IPAM) AssignIP(ctx context.Context, addr netip.Addr, handle string, attrs map[string]string) error {
	if !resources.ValidHandle(handle) {
		return fmt.Errorf("ipam: assign %s: invalid handle %q", addr, handle)
	}
	p, err := a.poolOf(ctx, addr)
	if err != nil {
		return fmt.Errorf("ipam: assign %s: %w", addr, err)
	}
	b := p.blockOf(addr)
	attr := withAttrs(handle, attrs, map[string]string{AttrNode: a.cfg.Node, AttrTimestamp: a.cfg.Now().UTC().Format(time.RFC3339)})
	for range a.cfg.MaxRetries {
		e := a.entry(b)
		e.mu.Lock()
		done, err := a.assignOrdinal(ctx, e, b, addr, attr)
		e.mu.Unlock()
		if err != nil {
			return fmt.Errorf("ipam: assign %s to %s: %w", addr, handle, err)
		}
		if done {
			return nil
		}
		// The block does not exist: claim it (or find someone else did).
		if _, err := a.claim(ctx, b); err != nil {
			return fmt.Errorf("ipam: assign %s: %w", addr, err)
		}
	}
	return fmt.Errorf("ipam: assign %s: %w", addr, ErrTooManyRetries)
}

// assignOrdinal assigns addr in block b; false if the block does not exist.
// The caller holds e.mu.
func (a *IPAM) assignOrdinal(ctx context.Context, e *blockEntry, b netip.Prefix, addr netip.Addr, attr resources.AllocationAttribute) (bool, error) {
	exists := false
	err := a.retry(ctx, "assign in block "+b.String(), func() error {
		cur, err := a.loadBlock(ctx, e, b)
		if err != nil || cur == nil {
			return err
		}
		exists = true
		if a.cfg.StrictAffinity && cur.AffineNode() != a.cfg.Node {
			return ErrStrictAffinity
		}
		ord, _ := ordinalOf(b, addr)
		blk := cloneBlock(cur)
		if !allocateOrdinal(blk, ord, attr) {
			return ErrInUse
		}
		if err := a.incrementHandle(ctx, attr.HandleID, b, 1); err != nil {
			return err
		}
		if err := a.updateBlock(ctx, e, blk); err != nil {
			a.decrementHandleBestEffort(ctx, attr.HandleID, b, 1)
			if datastore.IsNotFound(err) {
				exists = false
				return nil
			}
			return err
		}
		return nil
	})
	return exists, err
}

// poolOf returns the pool containing addr (disabled or not, whatever its
// node selector).
func (a *IPAM) poolOf(ctx context.Context, addr netip.Addr) (pool, error) {
	all, _, err := datastore.ListOf[*resources.IPPool](ctx, a.ds)
	if err != nil {
		return pool{}, fmt.Errorf("list pools: %w", err)
	}
	for _, p := range all {
		if pf := p.Prefix(); pf.IsValid() && pf.Contains(addr) {
			return pool{name: p.Name, prefix: pf, blockBits: p.EffectiveBlockSize()}, nil
		}
	}
	return pool{}, ErrNotInPool
}
