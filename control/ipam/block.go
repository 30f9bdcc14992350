package ipam

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// This file holds the pure operations on one block's allocation state.
// None of them touches the datastore; callers write the block back with a
// compare-and-swap.

// getBlock reads block b; nil, nil if it does not exist. A stored block
// that is not internally consistent is an error: IPAM never writes one,
// and using it could hand out an address twice.
func (a *IPAM) getBlock(ctx context.Context, b netip.Prefix) (*resources.IPAMBlock, error) {
	blk, err := datastore.Get[*resources.IPAMBlock](ctx, a.ds, resources.BlockName(b))
	if datastore.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read block %s: %w", b, err)
	}
	if err := blk.Validate(); err != nil {
		return nil, fmt.Errorf("stored block is corrupt: %w", err)
	}
	return blk, nil
}

// listBlocks reads every block, leaving out (and logging) corrupt ones.
func (a *IPAM) listBlocks(ctx context.Context) ([]*resources.IPAMBlock, error) {
	all, _, err := datastore.ListOf[*resources.IPAMBlock](ctx, a.ds)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	out := all[:0]
	for _, blk := range all {
		if err := blk.Validate(); err != nil {
			a.log.Error("ipam: ignoring corrupt block", "err", err)
			continue
		}
		out = append(out, blk)
	}
	return out, nil
}

// newBlock returns an empty block for cidr, affine to node ("" for none).
func newBlock(cidr netip.Prefix, node string) *resources.IPAMBlock {
	n := resources.BlockOrdinals(cidr)
	b := &resources.IPAMBlock{
		ObjectMeta: resources.ObjectMeta{Name: resources.BlockName(cidr)},
		Spec: resources.IPAMBlockSpec{
			CIDR:        cidr.String(),
			Allocations: make([]int32, n),
			Unallocated: make([]int32, n),
			Attributes:  []resources.AllocationAttribute{},
		},
	}
	if node != "" {
		b.Spec.Affinity = resources.AffinityPrefix + node
	}
	for i := range n {
		b.Spec.Allocations[i] = -1
		b.Spec.Unallocated[i] = int32(i)
	}
	return b
}

// cloneBlock copies a block deeply enough to mutate its allocation state
// (attribute maps are shared: they are replaced, never modified).
func cloneBlock(b *resources.IPAMBlock) *resources.IPAMBlock {
	c := *b
	c.Spec.Allocations = slices.Clone(b.Spec.Allocations)
	c.Spec.Unallocated = slices.Clone(b.Spec.Unallocated)
	c.Spec.Attributes = slices.Clone(b.Spec.Attributes)
	if c.Spec.Attributes == nil {
		c.Spec.Attributes = []resources.AllocationAttribute{}
	}
	if c.Spec.Unallocated == nil {
		c.Spec.Unallocated = []int32{}
	}
	return &c
}

// freeCount returns the number of free addresses.
func freeCount(b *resources.IPAMBlock) int { return len(b.Spec.Unallocated) }

// isEmpty reports whether no address of the block is allocated.
func isEmpty(b *resources.IPAMBlock) bool {
	return len(b.Spec.Unallocated) == len(b.Spec.Allocations)
}

// allocate takes up to n free ordinals from the front of the free list for
// one owner and returns them.
func allocate(b *resources.IPAMBlock, n int, attr resources.AllocationAttribute) []int32 {
	n = min(n, len(b.Spec.Unallocated))
	if n <= 0 {
		return nil
	}
	idx := int32(len(b.Spec.Attributes))
	b.Spec.Attributes = append(b.Spec.Attributes, attr)
	ords := slices.Clone(b.Spec.Unallocated[:n])
	b.Spec.Unallocated = slices.Delete(b.Spec.Unallocated, 0, n)
	for _, o := range ords {
		b.Spec.Allocations[o] = idx
	}
	return ords
}

// allocateOrdinal allocates one given ordinal; false if it is taken.
func allocateOrdinal(b *resources.IPAMBlock, ord int32, attr resources.AllocationAttribute) bool {
	if ord < 0 || int(ord) >= len(b.Spec.Allocations) || b.Spec.Allocations[ord] != -1 {
		return false
	}
	i := slices.Index(b.Spec.Unallocated, ord)
	if i < 0 {
		return false
	}
	b.Spec.Unallocated = slices.Delete(b.Spec.Unallocated, i, i+1)
	b.Spec.Allocations[ord] = int32(len(b.Spec.Attributes))
	b.Spec.Attributes = append(b.Spec.Attributes, attr)
	return true
}

// release frees the given ordinals (those not allocated are skipped) and
// returns how many addresses each handle lost.
func release(b *resources.IPAMBlock, ords []int32) map[string]int {
	lost := map[string]int{}
	for _, o := range ords {
		if o < 0 || int(o) >= len(b.Spec.Allocations) {
			continue
		}
		a := b.Spec.Allocations[o]
		if a < 0 {
			continue
		}
		lost[b.Spec.Attributes[a].HandleID]++
		b.Spec.Allocations[o] = -1
		b.Spec.Unallocated = append(b.Spec.Unallocated, o)
	}
	compactAttributes(b)
	return lost
}

// ordinalsWhere returns the allocated ordinals whose attribute satisfies f.
func ordinalsWhere(b *resources.IPAMBlock, f func(resources.AllocationAttribute) bool) []int32 {
	var out []int32
	for o, a := range b.Spec.Allocations {
		if a >= 0 && f(b.Spec.Attributes[a]) {
			out = append(out, int32(o))
		}
	}
	return out
}

// ordinalsOfHandle returns the ordinals allocated to handle.
func ordinalsOfHandle(b *resources.IPAMBlock, handle string) []int32 {
	return ordinalsWhere(b, func(a resources.AllocationAttribute) bool { return a.HandleID == handle })
}

// compactAttributes drops attributes no allocation refers to and renumbers
// the allocations.
func compactAttributes(b *resources.IPAMBlock) {
	attrs := b.Spec.Attributes
	if len(attrs) == 0 {
		return
	}
	remap := make([]int32, len(attrs))
	for i := range remap {
		remap[i] = -1
	}
	for _, a := range b.Spec.Allocations {
		if a >= 0 {
			remap[a] = 0
		}
	}
	kept := attrs[:0:0]
	for i, r := range remap {
		if r == 0 {
			remap[i] = int32(len(kept))
			kept = append(kept, attrs[i])
		}
	}
	if len(kept) == len(attrs) {
		return
	}
	for o, a := range b.Spec.Allocations {
		if a >= 0 {
			b.Spec.Allocations[o] = remap[a]
		}
	}
	b.Spec.Attributes = kept
}

// addrOf returns the address of ordinal ord of the block at prefix p.
func addrOf(p netip.Prefix, ord int32) netip.Addr {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		v += uint32(ord)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	b := a.As16()
	// Blocks have at most 12 host bits and are aligned, so the ordinal
	// adds to the last two bytes without carry.
	v := uint16(b[14])<<8 | uint16(b[15])
	v += uint16(ord)
	b[14], b[15] = byte(v>>8), byte(v)
	return netip.AddrFrom16(b)
}

// ordinalOf returns the ordinal of addr in the block at prefix p.
func ordinalOf(p netip.Prefix, addr netip.Addr) (int32, bool) {
	if !p.Contains(addr) {
		return 0, false
	}
	if addr.Is4() {
		a, b := addr.As4(), p.Addr().As4()
		return int32(a[2]-b[2])<<8 | int32(a[3]-b[3]), true
	}
	a, b := addr.As16(), p.Addr().As16()
	return int32(a[14]-b[14])<<8 | int32(a[15]-b[15]), true
}

// addrsOf converts ordinals to addresses.
func addrsOf(p netip.Prefix, ords []int32) []netip.Addr {
	out := make([]netip.Addr, len(ords))
	for i, o := range ords {
		out[i] = addrOf(p, o)
	}
	return out
}

// withAttrs returns the attribute for an allocation: handle plus a copy of
// the caller's attributes plus this node and the time.
func withAttrs(handle string, attrs map[string]string, extra map[string]string) resources.AllocationAttribute {
	m := make(map[string]string, len(attrs)+len(extra))
	maps.Copy(m, attrs)
	maps.Copy(m, extra)
	return resources.AllocationAttribute{HandleID: handle, Secondary: m}
}
