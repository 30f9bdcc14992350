package acl_test

import (
	"testing"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/acl/acltest"
)

// TestWideTables runs the differential check with the 32-bit address-class
// and matrix tables that only very large classifiers use.
func TestWideTables(t *testing.T) {
	*acl.ForceWide = true
	defer func() { *acl.ForceWide = false }()
	for seed := uint64(1); seed <= 5; seed++ {
		diffWorld(t, acltest.Generate(seed, acltest.Small), acl.Options{}, seed, 5000)
	}
}
