package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// ReleaseByHandle releases every address assigned to handle and deletes its
// record. Releasing a handle that has no addresses (never assigned, or
// released already) succeeds: CNI DEL is idempotent.
func (a *IPAM) ReleaseByHandle(ctx context.Context, handle string) error {
	for range a.cfg.MaxRetries {
		h, err := datastore.Get[*resources.IPAMHandle](ctx, a.ds, handle)
		if datastore.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("ipam: release %s: read handle: %w", handle, err)
		}
		for cidr := range h.Spec.Block {
			b, err := netip.ParsePrefix(cidr)
			if err != nil {
				continue
			}
			if _, err := a.releaseInBlock(ctx, b, func(blk *resources.IPAMBlock) []int32 {
				return ordinalsOfHandle(blk, handle)
			}); err != nil {
				return fmt.Errorf("ipam: release %s: %w", handle, err)
			}
		}
		// Delete the record only as read: if an assignment added to it
		// meanwhile, go round again.
		_, err = a.ds.Delete(ctx, resources.KeyOf(h), h.ResourceVersion)
		if err == nil || datastore.IsNotFound(err) {
			return nil
		}
		if !datastore.IsConflict(err) {
			return fmt.Errorf("ipam: release %s: delete handle: %w", handle, err)
		}
	}
	return fmt.Errorf("ipam: release %s: %w", handle, ErrTooManyRetries)
}

// releaseInBlock frees the ordinals pick chooses in block b (a missing
// block frees nothing) and returns the addresses freed and how many each
// handle lost. The handle records are not touched.
func (a *IPAM) releaseInBlock(ctx context.Context, b netip.Prefix, pick func(*resources.IPAMBlock) []int32) (map[string]int, error) {
	e := a.entry(b)
	e.mu.Lock()
	defer e.mu.Unlock()
	var lost map[string]int
	err := a.retry(ctx, "release in block "+b.String(), func() error {
		lost = nil
		// Always read the block afresh: another node may have assigned
		// from it since this IPAM cached it, and pick must see that.
		e.block = nil
		cur, err := a.loadBlock(ctx, e, b)
		if err != nil || cur == nil {
			return err
		}
		ords := pick(cur)
		if len(ords) == 0 {
			return nil
		}
		blk := cloneBlock(cur)
		lost = release(blk, ords)
		err = a.updateBlock(ctx, e, blk)
		if datastore.IsNotFound(err) {
			lost = nil
			return nil
		}
		return err
	})
	return lost, err
}

// ReleaseIPs releases the given addresses, whoever they were assigned to,
// and returns those that were not assigned.
func (a *IPAM) ReleaseIPs(ctx context.Context, addrs ...netip.Addr) ([]netip.Addr, error) {
	pools, _, err := datastore.ListOf[*resources.IPPool](ctx, a.ds)
	if err != nil {
		return nil, fmt.Errorf("ipam: release: list pools: %w", err)
	}
	byBlock := map[netip.Prefix][]netip.Addr{}
	var unassigned []netip.Addr
	var blocks []*resources.IPAMBlock // read lazily for addresses outside every pool
	for _, addr := range addrs {
		var b netip.Prefix
		for _, p := range pools {
			if pf := p.Prefix(); pf.IsValid() && pf.Contains(addr) {
				b, _ = addr.Prefix(p.EffectiveBlockSize())
				break
			}
		}
		if !b.IsValid() {
			// The pool may be gone while its blocks remain.
			if blocks == nil {
				if blocks, err = a.listBlocks(ctx); err != nil {
					return nil, fmt.Errorf("ipam: release: %w", err)
				}
			}
			for _, blk := range blocks {
				if blk.Prefix().Contains(addr) {
					b = blk.Prefix()
				}
			}
		}
		if !b.IsValid() {
			unassigned = append(unassigned, addr)
			continue
		}
		byBlock[b] = append(byBlock[b], addr)
	}
	for b, list := range byBlock {
		var freed []int32
		lost, err := a.releaseInBlock(ctx, b, func(blk *resources.IPAMBlock) []int32 {
			freed = freed[:0]
			for _, addr := range list {
				if o, ok := ordinalOf(b, addr); ok && blk.Spec.Allocations[o] >= 0 {
					freed = append(freed, o)
				}
			}
			return freed
		})
		if err != nil {
			return nil, fmt.Errorf("ipam: release: %w", err)
		}
		for _, addr := range list {
			o, _ := ordinalOf(b, addr)
			if !slices.Contains(freed, o) {
				unassigned = append(unassigned, addr)
			}
		}
		for handle, n := range lost {
			if err := a.decrementHandle(ctx, handle, b, n); err != nil {
				return nil, fmt.Errorf("ipam: release: %w", err)
			}
		}
	}
	sortAddrs(unassigned)
	return unassigned, nil
}

// GCOptions controls GarbageCollect.
type GCOptions struct {
	// Live reports whether a handle's owner still exists (a running
	// container, an existing pod). Required.
	Live func(handle string) bool
	// AllNodes collects the whole cluster's leaks: every allocation, every
	// empty block, and handle records of dead handles that hold no address.
	// Otherwise only allocations made by this node (attribute AttrNode) and
	// blocks affine to it are considered.
	AllNodes bool
	// GracePeriod spares allocations, handle records and affinities
	// younger than it, so that an assignment or claim in progress is not
	// taken for a leak. A collector running while nodes assign should set
	// it to a minute or more; 0 spares nothing.
	GracePeriod time.Duration
	// KeepEmptyBlocks keeps empty blocks claimed; by default they are
	// released.
	KeepEmptyBlocks bool
}

// GCStats says what GarbageCollect did.
type GCStats struct {
	// Addresses released because their handle is not live.
	Addresses int
	// Handles is the number of handle records deleted for holding no
	// address (AllNodes only; records emptied by releasing addresses are
	// deleted as part of that and not counted here).
	Handles int
	// Blocks released because they were empty.
	Blocks int
	// Affinities deleted because their block does not exist or is not
	// the node's (left by an interrupted claim or release).
	Affinities int
}

// GarbageCollect releases addresses whose handle is not live, releases
// empty blocks, deletes affinities whose block is gone or not theirs, and
// (AllNodes) deletes handle records that are not live and hold no address.
func (a *IPAM) GarbageCollect(ctx context.Context, opt GCOptions) (GCStats, error) {
	var st GCStats
	if opt.Live == nil {
		return st, errors.New("ipam: gc: no Live function")
	}
	now := a.cfg.Now()
	old := func(ts string) bool {
		if opt.GracePeriod <= 0 {
			return true
		}
		t, err := time.Parse(time.RFC3339, ts)
		return err != nil || now.Sub(t) >= opt.GracePeriod
	}
	leaked := func(at resources.AllocationAttribute) bool {
		return at.HandleID != "" && (opt.AllNodes || at.Secondary[AttrNode] == a.cfg.Node) &&
			!opt.Live(at.HandleID) && old(at.Secondary[AttrTimestamp])
	}
	blocks, err := a.listBlocks(ctx)
	if err != nil {
		return st, fmt.Errorf("ipam: gc: %w", err)
	}
	holding := map[string]bool{} // handles with addresses left
	for _, blk := range blocks {
		b := blk.Prefix()
		if !b.IsValid() {
			continue
		}
		if len(ordinalsWhere(blk, leaked)) > 0 {
			lost, err := a.releaseInBlock(ctx, b, func(cur *resources.IPAMBlock) []int32 {
				return ordinalsWhere(cur, leaked)
			})
			if err != nil {
				return st, fmt.Errorf("ipam: gc: %w", err)
			}
			for handle, n := range lost {
				st.Addresses += n
				if err := a.decrementHandle(ctx, handle, b, n); err != nil {
					return st, fmt.Errorf("ipam: gc: %w", err)
				}
			}
		}
		e := a.entry(b)
		e.mu.Lock()
		cur := e.block
		e.mu.Unlock()
		if cur == nil {
			cur = blk
		}
		for _, at := range cur.Spec.Attributes {
			holding[at.HandleID] = true
		}
		mine := cur.AffineNode() == a.cfg.Node
		if !opt.KeepEmptyBlocks && isEmpty(cur) && (mine || opt.AllNodes) {
			released, err := a.releaseBlock(ctx, b, cur.AffineNode())
			if err != nil {
				return st, fmt.Errorf("ipam: gc: %w", err)
			}
			if released {
				st.Blocks++
			}
		}
	}
	// Affinities without their block (an interrupted claim or release).
	affs, _, err := datastore.ListOf[*resources.BlockAffinity](ctx, a.ds)
	if err != nil {
		return st, fmt.Errorf("ipam: gc: list affinities: %w", err)
	}
	exists := make(map[netip.Prefix]string, len(blocks))
	for _, blk := range blocks {
		exists[blk.Prefix()] = blk.AffineNode()
	}
	for _, af := range affs {
		b, err := netip.ParsePrefix(af.Spec.CIDR)
		if err != nil || (!opt.AllNodes && af.Spec.Node != a.cfg.Node) || !old(af.CreationTimestamp) {
			continue
		}
		if owner, ok := exists[b]; ok && owner == af.Spec.Node {
			continue
		}
		// Read the block again: it may have been claimed since the list.
		blk, err := a.getBlock(ctx, b)
		if err != nil {
			return st, fmt.Errorf("ipam: gc: %w", err)
		}
		if blk != nil && blk.AffineNode() == af.Spec.Node {
			continue
		}
		_, err = a.ds.Delete(ctx, resources.KeyOf(af), af.ResourceVersion)
		switch {
		case err == nil:
			st.Affinities++
			if af.Spec.Node == a.cfg.Node {
				a.setAffine(b, false)
			}
		case datastore.IsNotFound(err) || datastore.IsConflict(err):
		default:
			return st, fmt.Errorf("ipam: gc: delete affinity %s: %w", af.Name, err)
		}
	}
	// Handle records of dead handles that hold no address (left by a
	// crash between writing the record and the block). Only a cluster-wide
	// collector can tell: a node's Live does not know other nodes' pods.
	if opt.AllNodes {
		handles, _, err := datastore.ListOf[*resources.IPAMHandle](ctx, a.ds)
		if err != nil {
			return st, fmt.Errorf("ipam: gc: list handles: %w", err)
		}
		for _, h := range handles {
			if holding[h.Spec.HandleID] || opt.Live(h.Spec.HandleID) || !old(h.CreationTimestamp) {
				continue
			}
			_, err := a.ds.Delete(ctx, resources.KeyOf(h), h.ResourceVersion)
			switch {
			case err == nil:
				st.Handles++
			case datastore.IsNotFound(err) || datastore.IsConflict(err):
				// Released or changed meanwhile; the next run looks again.
			default:
				return st, fmt.Errorf("ipam: gc: delete handle %s: %w", h.Name, err)
			}
		}
	}
	if st != (GCStats{}) {
		a.log.Info("ipam: garbage collected", "addresses", st.Addresses, "handles", st.Handles, "blocks", st.Blocks, "affinities", st.Affinities)
	}
	return st, nil
}

// releaseBlock releases block b of node if it is empty: the affinity is
// marked pendingDeletion, the block deleted with a compare-and-swap (so an
// address assigned meanwhile keeps it), then the affinity deleted. It
// returns false if the block was not empty.
func (a *IPAM) releaseBlock(ctx context.Context, b netip.Prefix, node string) (bool, error) {
	affName := resources.AffinityName(node, b)
	if err := a.setAffinityState(ctx, affName, resources.AffinityPendingDeletion); err != nil {
		return false, err
	}
	e := a.entry(b)
	e.mu.Lock()
	released := false
	err := a.retry(ctx, "release block "+b.String(), func() error {
		e.block = nil
		cur, err := a.loadBlock(ctx, e, b)
		if err != nil || cur == nil {
			released = err == nil
			return err
		}
		if !isEmpty(cur) || cur.AffineNode() != node {
			return nil
		}
		_, err = a.ds.Delete(ctx, resources.KeyOf(cur), cur.ResourceVersion)
		if err != nil {
			e.block = nil
			if datastore.IsNotFound(err) {
				released = true
				return nil
			}
			return err
		}
		e.block = nil
		released = true
		return nil
	})
	e.mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("release block %s: %w", b, err)
	}
	if !released {
		// Someone assigned from it: it stays, and so does the claim.
		return false, a.setAffinityState(ctx, affName, resources.AffinityConfirmed)
	}
	if node == a.cfg.Node {
		a.setAffine(b, false)
	}
	if _, err := a.ds.Delete(ctx, resources.Key{Kind: resources.KindBlockAffinity, Name: affName}, ""); err != nil && !datastore.IsNotFound(err) {
		return true, fmt.Errorf("delete affinity %s: %w", affName, err)
	}
	a.log.Info("ipam: released empty block", "block", b, "affinity", node)
	return true, nil
}

// setAffinityState sets a BlockAffinity's state; a missing one is fine.
func (a *IPAM) setAffinityState(ctx context.Context, name string, state resources.AffinityState) error {
	return a.retry(ctx, "update affinity "+name, func() error {
		cur, err := datastore.Get[*resources.BlockAffinity](ctx, a.ds, name)
		if datastore.IsNotFound(err) {
			return nil
		}
		if err != nil || cur.Spec.State == state {
			return err
		}
		cur.Spec.State = state
		_, err = datastore.Update(ctx, a.ds, cur)
		return err
	})
}

// ReleaseNode gives up every block affine to node (a node that left the
// cluster): empty blocks are deleted, the others lose their affinity and
// stay until their addresses are released (any node may then borrow from
// them or garbage-collect them).
func (a *IPAM) ReleaseNode(ctx context.Context, node string) error {
	affs, _, err := datastore.ListOf[*resources.BlockAffinity](ctx, a.ds)
	if err != nil {
		return fmt.Errorf("ipam: release node %s: list affinities: %w", node, err)
	}
	for _, af := range affs {
		if af.Spec.Node != node {
			continue
		}
		b, err := netip.ParsePrefix(af.Spec.CIDR)
		if err != nil {
			continue
		}
		released, err := a.releaseBlock(ctx, b, node)
		if err != nil {
			return fmt.Errorf("ipam: release node %s: %w", node, err)
		}
		if released {
			continue
		}
		// Not empty: drop the affinity from the block, then the record.
		e := a.entry(b)
		e.mu.Lock()
		err = a.retry(ctx, "unclaim block "+b.String(), func() error {
			cur, err := a.loadBlock(ctx, e, b)
			if err != nil || cur == nil || cur.AffineNode() != node {
				return err
			}
			blk := cloneBlock(cur)
			blk.Spec.Affinity = ""
			return a.updateBlock(ctx, e, blk)
		})
		e.mu.Unlock()
		if err != nil {
			return fmt.Errorf("ipam: release node %s: %w", node, err)
		}
		if node == a.cfg.Node {
			a.setAffine(b, false)
		}
		if _, err := a.ds.Delete(ctx, resources.KeyOf(af), ""); err != nil && !datastore.IsNotFound(err) {
			return fmt.Errorf("ipam: release node %s: delete affinity: %w", node, err)
		}
	}
	return nil
}

func sortAddrs(s []netip.Addr) {
	slices.SortFunc(s, func(x, y netip.Addr) int { return x.Compare(y) })
}
