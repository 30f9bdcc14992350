package resources

import (
	"fmt"
	"net/netip"
	"sort"
)

// EncapMode says when traffic to a pool's addresses on other nodes is
// encapsulated.
type EncapMode string

// Encapsulation modes (Calico's).
const (
	// EncapNever: routed natively (BGP); the empty mode means Never.
	EncapNever EncapMode = "Never"
	// EncapAlways: always encapsulated.
	EncapAlways EncapMode = "Always"
	// EncapCrossSubnet: encapsulated only to nodes in another subnet.
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

// Enabled reports whether the mode encapsulates at all.
func (m EncapMode) Enabled() bool { return m == EncapAlways || m == EncapCrossSubnet }

func (m EncapMode) valid() bool {
	return m == "" || m == EncapNever || m == EncapAlways || m == EncapCrossSubnet
}

// Block size defaults and limits (Calico's).
const (
	DefaultBlockSize4 = 26
	DefaultBlockSize6 = 122
	MinBlockSize4     = 20
	MinBlockSize6     = 116
)

// IPPool is a range of pod addresses.
type IPPool struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       IPPoolSpec `json:"spec"`
}

// IPPoolSpec is an IPPool's desired state.
type IPPoolSpec struct {
	// CIDR is the pool's range, such as 10.65.0.0/16 or fd00:65::/48.
	CIDR string `json:"cidr"`
	// BlockSize is the prefix length of the blocks the pool is cut into:
	// 20..32 for IPv4 (default 26), 116..128 for IPv6 (default 122).
	BlockSize int `json:"blockSize,omitempty"`
	// IPIPMode says when IP-in-IP encapsulation is used (IPv4 only).
	IPIPMode EncapMode `json:"ipipMode,omitempty"`
	// VXLANMode says when VXLAN encapsulation is used.
	VXLANMode EncapMode `json:"vxlanMode,omitempty"`
	// NATOutgoing masquerades traffic from the pool to outside all pools.
	NATOutgoing bool `json:"natOutgoing,omitempty"`
	// Disabled pools are not used for new addresses.
	Disabled bool `json:"disabled,omitempty"`
	// NodeSelector selects the nodes that may take blocks from the pool
	// (default all()).
	NodeSelector string `json:"nodeSelector,omitempty"`
}

// ResourceKind returns KindIPPool.
func (*IPPool) ResourceKind() Kind    { return KindIPPool }
func (p *IPPool) typeMeta() *TypeMeta { return &p.TypeMeta }

// Prefix returns the parsed CIDR (invalid if the CIDR does not parse).
func (p *IPPool) Prefix() netip.Prefix {
	pf, err := netip.ParsePrefix(p.Spec.CIDR)
	if err != nil {
		return netip.Prefix{}
	}
	return pf
}

// EffectiveBlockSize returns the block size with the default applied.
func (p *IPPool) EffectiveBlockSize() int {
	if p.Spec.BlockSize != 0 {
		return p.Spec.BlockSize
	}
	if pf := p.Prefix(); pf.IsValid() && pf.Addr().Is6() {
		return DefaultBlockSize6
	}
	return DefaultBlockSize4
}

// Default fills in blockSize, the modes and nodeSelector.
func (p *IPPool) Default() {
	if p.Spec.BlockSize == 0 {
		if pf := p.Prefix(); pf.IsValid() {
			p.Spec.BlockSize = p.EffectiveBlockSize()
		}
	}
	if p.Spec.IPIPMode == "" {
		p.Spec.IPIPMode = EncapNever
	}
	if p.Spec.VXLANMode == "" {
		p.Spec.VXLANMode = EncapNever
	}
	if p.Spec.NodeSelector == "" {
		p.Spec.NodeSelector = "all()"
	}
}

// Validate checks the pool alone; CheckPoolOverlaps checks a set.
func (p *IPPool) Validate() error {
	var fe fieldErrors
	fe.validateMeta(p)
	s := &p.Spec
	pf, ok := fe.prefix("spec.cidr", s.CIDR)
	if ok {
		for _, r := range reservedPrefixes {
			if Overlaps(pf, r.p) {
				fe.add("spec.cidr", "%s overlaps the %s range %s", pf, r.what, r.p)
				break
			}
		}
		bs := p.EffectiveBlockSize()
		lo, hi, fam := MinBlockSize4, 32, "IPv4"
		if pf.Addr().Is6() {
			lo, hi, fam = MinBlockSize6, 128, "IPv6"
		}
		switch {
		case bs < lo || bs > hi:
			fe.add("spec.blockSize", "%d is out of range %d..%d for %s", bs, lo, hi, fam)
		case bs < pf.Bits():
			fe.add("spec.blockSize", "%d is shorter than the pool's prefix length %d (a block cannot be larger than its pool)", bs, pf.Bits())
		}
		if pf.Addr().Is6() && s.IPIPMode.Enabled() {
			fe.add("spec.ipipMode", "IP-in-IP is not supported for IPv6 pools (use vxlanMode)")
		}
	}
	if !s.IPIPMode.valid() {
		fe.add("spec.ipipMode", "%q is not one of Never, Always, CrossSubnet", s.IPIPMode)
	}
	if !s.VXLANMode.valid() {
		fe.add("spec.vxlanMode", "%q is not one of Never, Always, CrossSubnet", s.VXLANMode)
	}
	if s.IPIPMode.Enabled() && s.VXLANMode.Enabled() {
		fe.add("spec", "ipipMode %s and vxlanMode %s cannot both be enabled", s.IPIPMode, s.VXLANMode)
	}
	fe.selector("spec.nodeSelector", s.NodeSelector)
	return fe.result(p)
}

// PoolOverlapError reports two pools whose CIDRs overlap.
type PoolOverlapError struct {
	Pool, Other     string
	CIDR, OtherCIDR netip.Prefix
}

func (e *PoolOverlapError) Error() string {
	return fmt.Sprintf("%s: spec.cidr: %s overlaps IPPool %q (%s)", Key{Kind: KindIPPool, Name: e.Pool}, e.CIDR, e.Other, e.OtherCIDR)
}

// Is reports whether target is ErrInvalid.
func (e *PoolOverlapError) Is(target error) bool { return target == ErrInvalid }

// CheckPoolOverlaps returns a *PoolOverlapError for the first pair of pools
// (in name order) whose CIDRs overlap, or nil. Pools whose CIDR does not
// parse are skipped (Validate reports them).
func CheckPoolOverlaps(pools []*IPPool) error {
	sorted := make([]*IPPool, 0, len(pools))
	for _, p := range pools {
		if p.Prefix().IsValid() {
			sorted = append(sorted, p)
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for i, a := range sorted {
		for _, b := range sorted[i+1:] {
			if Overlaps(a.Prefix(), b.Prefix()) {
				return &PoolOverlapError{Pool: b.Name, Other: a.Name, CIDR: b.Prefix(), OtherCIDR: a.Prefix()}
			}
		}
	}
	return nil
}
