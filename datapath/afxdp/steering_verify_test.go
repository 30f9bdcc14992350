package afxdp

import (
	"testing"

	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
)

// TestSteeringVerifier loads the steering program so the kernel verifier
// checks it.
func TestSteeringVerifier(t *testing.T) {
	nstest.RequireRoot(t)
	s, err := NewSteering(SteeringConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Verify(); err != nil {
		t.Fatalf("verifier rejected the steering program: %+v", err)
	}
}
