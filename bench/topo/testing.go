package topo

import (
	"os"
	"testing"
)

// ForTest returns a new topology that is closed when the test ends, even on
// failure. It skips the test when not running as root.
func ForTest(tb testing.TB, prefix string) *Topology {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root for network namespaces")
	}
	t, err := New(prefix)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := t.Close(); err != nil {
			tb.Errorf("topology cleanup: %v", err)
		}
	})
	return t
}
