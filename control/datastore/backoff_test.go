package datastore

import (
	"context"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Initial: time.Millisecond, Max: 8 * time.Millisecond}
	var waits []time.Duration
	for range 6 {
		start := time.Now()
		if !b.Sleep(context.Background()) {
			t.Fatal("Sleep returned false with a live context")
		}
		waits = append(waits, time.Since(start))
	}
	// Waits are at least half the nominal interval: 1, 2, 4, 8, 8, 8 ms.
	for i, min := range []time.Duration{500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond} {
		if waits[i] < min {
			t.Errorf("wait %d = %v, want >= %v", i, waits[i], min)
		}
	}
	b.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if b.Sleep(ctx) {
		t.Fatal("Sleep returned true with a cancelled context")
	}
}
