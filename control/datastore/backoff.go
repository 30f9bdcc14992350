package datastore

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is a jittered exponential back-off for backends' reconnect loops:
// the n-th wait is uniform in [d/2, d] with d = min(Max, Initial·2^n). The
// zero value of the counter starts at Initial. A Backoff is used by one
// goroutine.
type Backoff struct {
	Initial, Max time.Duration
	n            int
}

// Sleep waits for the next back-off interval; it returns false if ctx ended
// first.
func (b *Backoff) Sleep(ctx context.Context) bool {
	d := b.Initial << min(b.n, 30)
	if d > b.Max || d <= 0 {
		d = b.Max
	} else {
		b.n++
	}
	if d <= 0 {
		return ctx.Err() == nil
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Reset starts the sequence again from Initial.
func (b *Backoff) Reset() { b.n = 0 }
