package ipam

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// incrementHandle adds n addresses in block b to handle's record, creating
// it if needed.
func (a *IPAM) incrementHandle(ctx context.Context, handle string, b netip.Prefix, n int) error {
	if n <= 0 {
		return nil
	}
	cidr := b.String()
	// Most handles are new (one per container): try to create first.
	h := &resources.IPAMHandle{
		ObjectMeta: resources.ObjectMeta{Name: handle},
		Spec:       resources.IPAMHandleSpec{HandleID: handle, Block: map[string]int{cidr: n}},
	}
	_, err := a.ds.Create(ctx, h)
	if err == nil || !datastore.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("create handle %s: %w", handle, err)
		}
		return nil
	}
	return a.retry(ctx, "update handle "+handle, func() error {
		cur, err := datastore.Get[*resources.IPAMHandle](ctx, a.ds, handle)
		if datastore.IsNotFound(err) {
			h.ResourceVersion = ""
			_, err = a.ds.Create(ctx, h)
			if datastore.IsAlreadyExists(err) {
				return &datastore.ConflictError{Key: resources.KeyOf(h)}
			}
			return err
		}
		if err != nil {
			return err
		}
		if cur.Spec.Block == nil {
			cur.Spec.Block = map[string]int{}
		}
		cur.Spec.Block[cidr] += n
		_, err = a.ds.Update(ctx, cur)
		return err
	})
}

// decrementHandle removes n addresses in block b from handle's record,
// deleting the record when nothing is left. A missing record is fine.
func (a *IPAM) decrementHandle(ctx context.Context, handle string, b netip.Prefix, n int) error {
	if n <= 0 || handle == "" {
		return nil
	}
	cidr := b.String()
	return a.retry(ctx, "update handle "+handle, func() error {
		cur, err := datastore.Get[*resources.IPAMHandle](ctx, a.ds, handle)
		if datastore.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if left := cur.Spec.Block[cidr] - n; left > 0 {
			cur.Spec.Block[cidr] = left
		} else {
			delete(cur.Spec.Block, cidr)
		}
		if len(cur.Spec.Block) == 0 {
			_, err = a.ds.Delete(ctx, resources.KeyOf(cur), cur.ResourceVersion)
			if datastore.IsNotFound(err) {
				return nil
			}
			return err
		}
		_, err = a.ds.Update(ctx, cur)
		return err
	})
}

// decrementHandleBestEffort undoes an increment whose block write failed;
// a failure leaves a count without addresses, which release and garbage
// collection tolerate.
func (a *IPAM) decrementHandleBestEffort(ctx context.Context, handle string, b netip.Prefix, n int) {
	if err := a.decrementHandle(context.WithoutCancel(ctx), handle, b, n); err != nil {
		a.log.Warn("ipam: undo handle count", "handle", handle, "block", b, "err", err)
	}
}

// IPsByHandle returns the addresses assigned to handle.
func (a *IPAM) IPsByHandle(ctx context.Context, handle string) ([]netip.Addr, error) {
	h, err := datastore.Get[*resources.IPAMHandle](ctx, a.ds, handle)
	if datastore.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ipam: read handle %s: %w", handle, err)
	}
	var out []netip.Addr
	for cidr := range h.Spec.Block {
		b, err := netip.ParsePrefix(cidr)
		if err != nil {
			continue
		}
		blk, err := a.getBlock(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("ipam: %w", err)
		}
		if blk == nil {
			continue
		}
		out = append(out, addrsOf(b, ordinalsOfHandle(blk, handle))...)
	}
	sortAddrs(out)
	return out, nil
}
