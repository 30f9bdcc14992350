package datastore

import (
	"context"
	"sync"
	"time"
)

// WithProbe returns the context of one run of a backend's watch, cancelled
// when the backend stops answering: every interval check runs (with at
// most interval to answer), and when it fails the context is cancelled
// with the cause fail(err). A watch on a dead connection would otherwise
// wait silently for the transport to notice. An interval <= 0 probes
// nothing. stop cancels the context and waits for the probe to end; call
// it when the run ends.
func WithProbe(ctx context.Context, interval time.Duration, check func(context.Context) error, fail func(error) error) (probed context.Context, stop func()) {
	probed, cancel := context.WithCancelCause(ctx)
	var probes sync.WaitGroup
	if interval > 0 {
		probes.Go(func() { probe(probed, cancel, interval, check, fail) })
	}
	return probed, func() {
		cancel(nil)
		probes.Wait()
	}
}

func probe(ctx context.Context, cancel context.CancelCauseFunc, interval time.Duration, check func(context.Context) error, fail func(error) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, interval)
		err := check(pctx)
		pcancel()
		if err != nil && ctx.Err() == nil {
			cancel(fail(err))
			return
		}
	}
}
