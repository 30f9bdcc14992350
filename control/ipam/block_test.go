package ipam

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tabbynet/tabby/control/resources"
)

func TestBlockOps(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.16/30")
	b := newBlock(p, "node-a")
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	got := allocate(b, 3, resources.AllocationAttribute{HandleID: "h1"})
	if !slices.Equal(got, []int32{0, 1, 2}) {
		t.Fatalf("allocate: %v", got)
	}
	if got := allocate(b, 5, resources.AllocationAttribute{HandleID: "h2"}); !slices.Equal(got, []int32{3}) {
		t.Fatalf("allocate past the end: %v", got)
	}
	if got := allocate(b, 1, resources.AllocationAttribute{HandleID: "h3"}); got != nil || len(b.Spec.Attributes) != 2 {
		t.Fatalf("allocate from a full block: %v, attrs %v", got, b.Spec.Attributes)
	}
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	lost := release(b, []int32{1, 3, 3, 9, -1})
	if lost["h1"] != 1 || lost["h2"] != 1 || len(lost) != 2 {
		t.Fatalf("release: lost %v", lost)
	}
	// h2's attribute is gone and h1's renumbered.
	if len(b.Spec.Attributes) != 1 || b.Spec.Attributes[0].HandleID != "h1" || !slices.Equal(b.Spec.Unallocated, []int32{1, 3}) {
		t.Fatalf("after release: %+v", b.Spec)
	}
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	// Released ordinals are handed out last-released-last.
	if !allocateOrdinal(b, 3, resources.AllocationAttribute{HandleID: "h4"}) || allocateOrdinal(b, 3, resources.AllocationAttribute{}) {
		t.Fatal("allocateOrdinal")
	}
	if got := ordinalsOfHandle(b, "h1"); !slices.Equal(got, []int32{0, 2}) {
		t.Fatalf("ordinalsOfHandle: %v", got)
	}
	c := cloneBlock(b)
	allocate(c, 1, resources.AllocationAttribute{})
	if freeCount(b) != 1 || freeCount(c) != 0 {
		t.Fatal("clone shares state")
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestAddrOrdinal(t *testing.T) {
	tests := []struct {
		block string
		ord   int32
		addr  string
	}{
		{"10.0.0.64/26", 0, "10.0.0.64"},
		{"10.0.0.64/26", 63, "10.0.0.127"},
		{"10.0.16.0/20", 4095, "10.0.31.255"},
		{"10.0.16.0/20", 256, "10.0.17.0"},
		{"fd00:65::1:0/116", 4095, "fd00:65::1:fff"},
		{"fd00:65::40/122", 5, "fd00:65::45"},
		{"10.0.0.7/32", 0, "10.0.0.7"},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.block)
		a := addrOf(p, tt.ord)
		if a.String() != tt.addr {
			t.Errorf("addrOf(%s, %d) = %s, want %s", p, tt.ord, a, tt.addr)
		}
		if o, ok := ordinalOf(p, a); !ok || o != tt.ord {
			t.Errorf("ordinalOf(%s, %s) = %d, %v", p, a, o, ok)
		}
	}
	if _, ok := ordinalOf(netip.MustParsePrefix("10.0.0.0/26"), netip.MustParseAddr("10.0.0.64")); ok {
		t.Error("ordinalOf outside the block")
	}
}

func TestNthBlock(t *testing.T) {
	tests := []struct {
		pool string
		bits int
		i    uint64
		want string
	}{
		{"10.65.0.0/16", 26, 0, "10.65.0.0/26"},
		{"10.65.0.0/16", 26, 5, "10.65.1.64/26"},
		{"10.65.0.0/16", 26, 1023, "10.65.255.192/26"},
		{"fd00:65::/48", 122, 1, "fd00:65::40/122"},
		{"fd00:65::/48", 122, 1 << 20, "fd00:65::400:0/122"},
		{"fd00::/8", 122, 1 << 61, "fd00:0:0:8::/122"},
	}
	for _, tt := range tests {
		p := pool{prefix: netip.MustParsePrefix(tt.pool), blockBits: tt.bits}
		if got := nthBlock(p, tt.i); got.String() != tt.want {
			t.Errorf("nthBlock(%s/%d, %d) = %s, want %s", tt.pool, tt.bits, tt.i, got, tt.want)
		}
	}
	// freeBlock finds the one free block of an almost full pool.
	p := pool{prefix: netip.MustParsePrefix("10.0.0.0/24"), blockBits: 28}
	taken := map[netip.Prefix]bool{}
	for i := range 16 {
		taken[nthBlock(p, uint64(i))] = i != 11
	}
	for range 20 {
		if b, ok := freeBlock(p, taken); !ok || b.String() != "10.0.0.176/28" {
			t.Fatalf("freeBlock = %s, %v", b, ok)
		}
	}
	taken[netip.MustParsePrefix("10.0.0.176/28")] = true
	if b, ok := freeBlock(p, taken); ok {
		t.Fatalf("freeBlock of a full pool = %s", b)
	}
}
