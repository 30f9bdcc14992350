package ipam

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// Assignments from one block are batched (group commit): while one
// goroutine of this IPAM writes the block, others wanting addresses from it
// queue up, and the next write serves all of them at once: with a
// datastore.Transactor, the block and every handle record in one
// transaction; without, the handle records in parallel, then the block
// with one compare-and-swap.
//
// The goroutine that finds no batch in progress becomes the leader: it
// commits the queued batch, and if more requests queued meanwhile it hands
// leadership to one of their goroutines, so that no caller keeps working
// for others indefinitely.

// maxBatch bounds the requests of one batch (an etcd transaction holds at
// most 128 operations: the block and one handle record per request).
const maxBatch = 64

// assignRequest is one caller's share of a batch.
type assignRequest struct {
	ctx          context.Context
	n            int
	attr         resources.AllocationAttribute
	mustBeAffine bool

	// wake is closed when the request is done or its goroutine is to lead.
	wake chan struct{}
	lead bool

	ords []int32 // tentative allocation within the batch's copy
	got  []netip.Addr
	err  error
}

// assignFromBlock assigns up to n addresses from block b. With
// mustBeAffine it assigns only while the block is this node's (a block
// released meanwhile is dropped from the affine set). It returns fewer
// than n addresses (maybe none) when the block has fewer free.
func (a *IPAM) assignFromBlock(ctx context.Context, b netip.Prefix, n int, attr resources.AllocationAttribute, mustBeAffine bool) ([]netip.Addr, error) {
	e := a.entry(b)
	req := &assignRequest{ctx: ctx, n: n, attr: attr, mustBeAffine: mustBeAffine, wake: make(chan struct{})}
	e.qmu.Lock()
	e.queue = append(e.queue, req)
	if e.leader {
		e.qmu.Unlock()
		<-req.wake
		if !req.lead {
			return req.got, req.err
		}
	} else {
		e.leader = true
		e.qmu.Unlock()
	}
	// Lead: commit the queue, which holds req, then hand over.
	e.qmu.Lock()
	batch := e.queue[:min(len(e.queue), maxBatch):min(len(e.queue), maxBatch)]
	e.queue = append([]*assignRequest(nil), e.queue[len(batch):]...)
	e.qmu.Unlock()
	a.commitBatch(e, b, batch)
	e.qmu.Lock()
	if len(e.queue) > 0 {
		next := e.queue[0]
		next.lead = true
		close(next.wake)
	} else {
		e.leader = false
	}
	e.qmu.Unlock()
	for _, r := range batch {
		if r != req {
			close(r.wake)
		}
	}
	return req.got, req.err
}

// commitBatch assigns addresses for every request of the batch from block
// b in one compare-and-swap, retried on conflict.
func (a *IPAM) commitBatch(e *blockEntry, b netip.Prefix, batch []*assignRequest) {
	// The writes serve every request in the batch, so no single caller's
	// cancellation may abort them; requests whose caller gave up before
	// the batch started are skipped.
	var ctx context.Context
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		if ctx == nil {
			ctx = context.WithoutCancel(r.ctx)
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	tx, _ := a.ds.(datastore.Transactor)
	handles := map[string]*resources.IPAMHandle{} // records known to exist
	err := a.retry(ctx, "assign from block "+b.String(), func() error {
		for _, r := range live {
			r.ords, r.got = nil, nil
		}
		cur, err := a.loadBlock(ctx, e, b)
		if err != nil {
			return err
		}
		if cur == nil {
			a.setAffine(b, false)
			return nil
		}
		affine := cur.AffineNode() == a.cfg.Node
		if !affine {
			a.setAffine(b, false)
		}
		blk := cloneBlock(cur)
		any := false
		for _, r := range live {
			if r.mustBeAffine && !affine {
				continue
			}
			r.ords = allocate(blk, r.n, r.attr)
			any = any || len(r.ords) > 0
		}
		if !any {
			return nil
		}
		if tx != nil {
			return a.commitTxn(ctx, tx, e, b, blk, live, handles)
		}
		// Handle records first (see the package documentation).
		incremented, err := a.incrementHandles(ctx, b, live)
		if err != nil {
			a.decrementHandles(ctx, b, incremented)
			return err
		}
		if err := a.updateBlock(ctx, e, blk); err != nil {
			a.decrementHandles(ctx, b, incremented)
			if datastore.IsNotFound(err) {
				a.setAffine(b, false)
				for _, r := range live {
					r.ords = nil
				}
				return nil
			}
			return err
		}
		for _, r := range live {
			r.got = addrsOf(b, r.ords)
		}
		return nil
	})
	if err != nil {
		for _, r := range live {
			r.got, r.err = nil, err
		}
	}
}

// commitTxn writes the block and the handle records of a batch in one
// transaction. A failed condition leaves nothing written; the error says
// which object was stale, and the caller's retry starts over.
func (a *IPAM) commitTxn(ctx context.Context, tx datastore.Transactor, e *blockEntry, b netip.Prefix,
	blk *resources.IPAMBlock, live []*assignRequest, handles map[string]*resources.IPAMHandle) error {
	cidr := b.String()
	counts := map[string]int{}
	for _, r := range live {
		if len(r.ords) > 0 && r.attr.HandleID != "" {
			counts[r.attr.HandleID] += len(r.ords)
		}
	}
	names := slices.Sorted(maps.Keys(counts))
	ops := make([]datastore.Op, 0, 1+len(names))
	ops = append(ops, datastore.Op{Type: datastore.OpUpdate, Object: blk})
	for _, h := range names {
		if cur := handles[h]; cur != nil {
			upd := *cur
			upd.Spec.Block = maps.Clone(cur.Spec.Block)
			if upd.Spec.Block == nil {
				upd.Spec.Block = map[string]int{}
			}
			upd.Spec.Block[cidr] += counts[h]
			ops = append(ops, datastore.Op{Type: datastore.OpUpdate, Object: &upd})
			continue
		}
		ops = append(ops, datastore.Op{Type: datastore.OpCreate, Object: &resources.IPAMHandle{
			ObjectMeta: resources.ObjectMeta{Name: h},
			Spec:       resources.IPAMHandleSpec{HandleID: h, Block: map[string]int{cidr: counts[h]}},
		}})
	}
	res, err := tx.Commit(ctx, ops...)
	if err == nil {
		e.block = res[0].(*resources.IPAMBlock)
		for _, r := range live {
			r.got = addrsOf(b, r.ords)
		}
		return nil
	}
	var (
		exists   *datastore.AlreadyExistsError
		conflict *datastore.ConflictError
		missing  *datastore.NotFoundError
		key      resources.Key
	)
	switch {
	case errors.As(err, &exists):
		key = exists.Key
	case errors.As(err, &conflict):
		key = conflict.Key
	case errors.As(err, &missing):
		key = missing.Key
	default:
		return err
	}
	if key.Kind == resources.KindIPAMBlock {
		e.block = nil
		if missing != nil {
			a.setAffine(b, false)
			for _, r := range live {
				r.ords = nil
			}
			return nil
		}
		return err
	}
	// A handle record exists, changed or went away: read it for the next
	// attempt, and report a conflict so that the attempt is retried.
	cur, gerr := datastore.Get[*resources.IPAMHandle](ctx, a.ds, key.Name)
	switch {
	case gerr == nil:
		handles[key.Name] = cur
	case datastore.IsNotFound(gerr):
		delete(handles, key.Name)
	default:
		return gerr
	}
	return &datastore.ConflictError{Key: key}
}

// incrementHandles records each request's new addresses in its handle, in
// parallel. It returns the requests whose record was updated; on error
// the caller undoes those.
func (a *IPAM) incrementHandles(ctx context.Context, b netip.Prefix, reqs []*assignRequest) ([]*assignRequest, error) {
	var todo []*assignRequest
	for _, r := range reqs {
		if len(r.ords) > 0 && r.attr.HandleID != "" {
			todo = append(todo, r)
		}
	}
	if len(todo) == 1 {
		if err := a.incrementHandle(ctx, todo[0].attr.HandleID, b, len(todo[0].ords)); err != nil {
			return nil, err
		}
		return todo, nil
	}
	errs := make([]error, len(todo))
	var wg sync.WaitGroup
	for i, r := range todo {
		wg.Go(func() { errs[i] = a.incrementHandle(ctx, r.attr.HandleID, b, len(r.ords)) })
	}
	wg.Wait()
	var done []*assignRequest
	for i, r := range todo {
		if errs[i] == nil {
			done = append(done, r)
		}
	}
	return done, errors.Join(errs...)
}

// decrementHandles undoes incrementHandles (best effort, in parallel).
func (a *IPAM) decrementHandles(ctx context.Context, b netip.Prefix, reqs []*assignRequest) {
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Go(func() { a.decrementHandleBestEffort(ctx, r.attr.HandleID, b, len(r.ords)) })
	}
	wg.Wait()
}
