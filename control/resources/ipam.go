package resources

import (
	"fmt"
	"net/netip"
	"strings"
)

// MaxBlockOrdinals bounds a block's size: 2^12 addresses (an IPv4 /20 or an
// IPv6 /116, the largest blocks a pool may have).
const MaxBlockOrdinals = 1 << 12

// AffinityPrefix starts an IPAMBlock's affinity: "host:<node name>".
const AffinityPrefix = "host:"

// IPAMBlock is one block of a pool and the allocation state of each of its
// addresses. A block is stored as one datastore object and every change to
// it is a compare-and-swap on its resourceVersion. Its name is
// BlockName(cidr).
type IPAMBlock struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       IPAMBlockSpec `json:"spec"`
}

// IPAMBlockSpec is a block's allocation state.
type IPAMBlockSpec struct {
	// CIDR is the block's range.
	CIDR string `json:"cidr"`
	// Affinity is "host:<node>" for the node that claimed the block, or
	// empty once that node released it.
	Affinity string `json:"affinity,omitempty"`
	// Allocations has one entry per address of the block (ordinal = offset
	// from the block's first address): -1 when free, else the index of the
	// address's entry in Attributes.
	Allocations []int32 `json:"allocations"`
	// Unallocated lists the free ordinals in the order they are handed out;
	// released addresses go to the back, so an address is reused as late as
	// possible.
	Unallocated []int32 `json:"unallocated"`
	// Attributes are the handles and attributes of allocated addresses;
	// addresses assigned together share one entry.
	Attributes []AllocationAttribute `json:"attributes"`
}

// AllocationAttribute is the owner of one or more allocated addresses.
type AllocationAttribute struct {
	// HandleID is the handle the addresses were assigned to (the container
	// ID for pods), empty for addresses assigned without one.
	HandleID string `json:"handleID,omitempty"`
	// Secondary are free-form attributes: pod namespace and name, node.
	Secondary map[string]string `json:"secondary,omitempty"`
}

// ResourceKind returns KindIPAMBlock.
func (*IPAMBlock) ResourceKind() Kind    { return KindIPAMBlock }
func (b *IPAMBlock) typeMeta() *TypeMeta { return &b.TypeMeta }

// Default does nothing: the IPAM package writes blocks whole.
func (b *IPAMBlock) Default() {}

// Prefix returns the parsed CIDR (invalid if it does not parse).
func (b *IPAMBlock) Prefix() netip.Prefix {
	p, err := netip.ParsePrefix(b.Spec.CIDR)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// AffineNode returns the node the block is affine to, or "".
func (b *IPAMBlock) AffineNode() string {
	n, _ := strings.CutPrefix(b.Spec.Affinity, AffinityPrefix)
	return n
}

// BlockName returns the object name of the block with the given CIDR:
// 10.65.0.64/26 → 10-65-0-64-26, fd00:65::/122 → fd00-65---122.
func BlockName(cidr netip.Prefix) string {
	r := strings.NewReplacer(".", "-", ":", "-", "/", "-")
	return r.Replace(cidr.String())
}

// ParseBlockName returns the CIDR of the block named name (the inverse of
// BlockName).
func ParseBlockName(name string) (netip.Prefix, bool) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return netip.Prefix{}, false
	}
	addr, bits := name[:i], name[i+1:]
	var s string
	if strings.Count(addr, "-") == 3 && !strings.Contains(addr, "--") {
		s = strings.ReplaceAll(addr, "-", ".") + "/" + bits
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() && p.Masked() == p && BlockName(p) == name {
			return p, true
		}
	}
	s = strings.ReplaceAll(addr, "-", ":") + "/" + bits
	if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is6() && p.Masked() == p && BlockName(p) == name {
		return p, true
	}
	return netip.Prefix{}, false
}

// BlockOrdinals returns the number of addresses of a block with prefix p.
func BlockOrdinals(p netip.Prefix) int {
	return 1 << (p.Addr().BitLen() - p.Bits())
}

// Validate checks the block's internal consistency.
func (b *IPAMBlock) Validate() error {
	var fe fieldErrors
	fe.validateMeta(b)
	s := &b.Spec
	p, ok := fe.prefix("spec.cidr", s.CIDR)
	if ok {
		if host := p.Addr().BitLen() - p.Bits(); host > 12 {
			fe.add("spec.cidr", "%s has %d host bits; blocks have at most 12", p, host)
			ok = false
		} else if want := BlockName(p); b.Name != "" && b.Name != want {
			fe.add("metadata.name", "%q does not match cidr %s (want %q)", b.Name, p, want)
		}
	}
	if s.Affinity != "" {
		node, found := strings.CutPrefix(s.Affinity, AffinityPrefix)
		if !found || !validSubdomain(node) {
			fe.add("spec.affinity", "%q is not \"host:<node name>\"", s.Affinity)
		}
	}
	for i, a := range s.Attributes {
		if a.HandleID != "" && !validHandle(a.HandleID) {
			fe.add(fmt.Sprintf("spec.attributes[%d].handleID", i), "%q is not a valid handle", a.HandleID)
		}
	}
	if !ok {
		return fe.result(b)
	}
	n := BlockOrdinals(p)
	if len(s.Allocations) != n {
		fe.add("spec.allocations", "has %d entries; a %s block has %d addresses", len(s.Allocations), p, n)
		return fe.result(b)
	}
	used := make([]bool, len(s.Attributes))
	free := 0
	for i, a := range s.Allocations {
		switch {
		case a == -1:
			free++
		case a < 0 || int(a) >= len(s.Attributes):
			fe.add(fmt.Sprintf("spec.allocations[%d]", i), "%d is not -1 or an index into attributes (%d entries)", a, len(s.Attributes))
		default:
			used[a] = true
		}
	}
	for i, u := range used {
		if !u {
			fe.add(fmt.Sprintf("spec.attributes[%d]", i), "is not referenced by any allocation")
		}
	}
	seen := make([]bool, n)
	for i, o := range s.Unallocated {
		f := fmt.Sprintf("spec.unallocated[%d]", i)
		switch {
		case o < 0 || int(o) >= n:
			fe.add(f, "ordinal %d is out of range 0..%d", o, n-1)
		case seen[o]:
			fe.add(f, "ordinal %d is listed twice", o)
		case s.Allocations[o] != -1:
			fe.add(f, "ordinal %d is allocated", o)
		default:
			seen[o] = true
		}
	}
	if len(s.Unallocated) != free && len(fe.list) == 0 {
		fe.add("spec.unallocated", "lists %d ordinals but %d addresses are free", len(s.Unallocated), free)
	}
	return fe.result(b)
}

// AffinityState is the state of a BlockAffinity.
type AffinityState string

// Affinity states (Calico's): a claim is pending until its block exists,
// confirmed after, and pendingDeletion while the block is being released.
const (
	AffinityPending         AffinityState = "pending"
	AffinityConfirmed       AffinityState = "confirmed"
	AffinityPendingDeletion AffinityState = "pendingDeletion"
)

// BlockAffinity records that a node claimed a block. Its name is
// AffinityName(node, cidr).
type BlockAffinity struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       BlockAffinitySpec `json:"spec"`
}

// BlockAffinitySpec is the claim.
type BlockAffinitySpec struct {
	State AffinityState `json:"state"`
	Node  string        `json:"node"`
	CIDR  string        `json:"cidr"`
}

// ResourceKind returns KindBlockAffinity.
func (*BlockAffinity) ResourceKind() Kind    { return KindBlockAffinity }
func (a *BlockAffinity) typeMeta() *TypeMeta { return &a.TypeMeta }

// Default sets the state to pending if unset.
func (a *BlockAffinity) Default() {
	if a.Spec.State == "" {
		a.Spec.State = AffinityPending
	}
}

// AffinityName returns the object name of node's affinity to the block
// with the given CIDR: <node>-<block name>.
func AffinityName(node string, cidr netip.Prefix) string {
	return node + "-" + BlockName(cidr)
}

// Validate checks the affinity.
func (a *BlockAffinity) Validate() error {
	var fe fieldErrors
	if a.Name == "" {
		fe.add("metadata.name", "is required")
	} else if len(a.Name) > 253 || !validHandle(a.Name) || strings.ToLower(a.Name) != a.Name {
		fe.add("metadata.name", "%q is not a valid affinity name", a.Name)
	}
	if a.Namespace != "" {
		fe.add("metadata.namespace", "BlockAffinity is cluster-scoped; namespace must be empty, not %q", a.Namespace)
	}
	switch a.Spec.State {
	case "", AffinityPending, AffinityConfirmed, AffinityPendingDeletion:
	default:
		fe.add("spec.state", "%q is not one of pending, confirmed, pendingDeletion", a.Spec.State)
	}
	fe.name("spec.node", a.Spec.Node)
	if p, ok := fe.prefix("spec.cidr", a.Spec.CIDR); ok && a.Spec.Node != "" && a.Name != "" {
		if want := AffinityName(a.Spec.Node, p); a.Name != want {
			fe.add("metadata.name", "%q does not match node and cidr (want %q)", a.Name, want)
		}
	}
	return fe.result(a)
}

// IPAMHandle records which blocks hold a handle's addresses, so that
// releasing by handle does not scan every block. Its name is the handle.
type IPAMHandle struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       IPAMHandleSpec `json:"spec"`
}

// IPAMHandleSpec maps block CIDRs to the number of the handle's addresses
// in each.
type IPAMHandleSpec struct {
	HandleID string         `json:"handleID"`
	Block    map[string]int `json:"block,omitempty"`
}

// ResourceKind returns KindIPAMHandle.
func (*IPAMHandle) ResourceKind() Kind    { return KindIPAMHandle }
func (h *IPAMHandle) typeMeta() *TypeMeta { return &h.TypeMeta }

// Default sets the name from the handle ID if unset.
func (h *IPAMHandle) Default() {
	if h.Name == "" {
		h.Name = h.Spec.HandleID
	}
}

// Validate checks the handle.
func (h *IPAMHandle) Validate() error {
	var fe fieldErrors
	if !validHandle(h.Spec.HandleID) {
		fe.add("spec.handleID", "%q is not a valid handle: 1..253 letters, digits, '-', '_' and '.'", h.Spec.HandleID)
	}
	if h.Name != h.Spec.HandleID {
		fe.add("metadata.name", "%q must equal spec.handleID %q", h.Name, h.Spec.HandleID)
	}
	if h.Namespace != "" {
		fe.add("metadata.namespace", "IPAMHandle is cluster-scoped; namespace must be empty, not %q", h.Namespace)
	}
	for cidr, n := range h.Spec.Block {
		f := fmt.Sprintf("spec.block[%q]", cidr)
		if _, err := netip.ParsePrefix(cidr); err != nil {
			fe.add(f, "key is not a valid CIDR")
		}
		if n <= 0 {
			fe.add(f, "count %d is not positive", n)
		}
	}
	return fe.result(h)
}

// ValidHandle reports whether s can be an IPAM handle: 1..253 ASCII letters,
// digits, '-', '_' and '.', not "." or "..".
func ValidHandle(s string) bool { return validHandle(s) }

func validHandle(s string) bool {
	if len(s) == 0 || len(s) > 253 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
