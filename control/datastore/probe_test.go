package datastore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWithProbe(t *testing.T) {
	down := errors.New("down")
	failed := errors.New("probe failed")
	fail := func(err error) error { return fmt.Errorf("watch: %w: %w", failed, err) }

	t.Run("failing check cancels with its cause", func(t *testing.T) {
		var checks atomic.Int32
		ctx, stop := WithProbe(context.Background(), time.Millisecond, func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("check has no deadline")
			}
			if checks.Add(1) < 3 {
				return nil
			}
			return down
		}, fail)
		defer stop()
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("context not cancelled after the check failed")
		}
		if cause := context.Cause(ctx); !errors.Is(cause, failed) || !errors.Is(cause, down) {
			t.Errorf("cause %v, want it to wrap %v and %v", cause, failed, down)
		}
		if n := checks.Load(); n != 3 {
			t.Errorf("%d checks, want 3", n)
		}
	})

	t.Run("no interval, no probe", func(t *testing.T) {
		ctx, stop := WithProbe(context.Background(), 0, func(context.Context) error {
			t.Error("check called with interval 0")
			return down
		}, fail)
		time.Sleep(10 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatalf("context ended: %v", context.Cause(ctx))
		}
		stop()
		if !errors.Is(context.Cause(ctx), context.Canceled) {
			t.Errorf("cause after stop %v, want context.Canceled", context.Cause(ctx))
		}
	})

	t.Run("stop waits for the probe", func(t *testing.T) {
		started := make(chan struct{})
		var once sync.Once
		var returned atomic.Bool
		_, stop := WithProbe(context.Background(), time.Millisecond, func(ctx context.Context) error {
			once.Do(func() { close(started) })
			<-ctx.Done()
			returned.Store(true)
			return ctx.Err()
		}, fail)
		<-started
		stop()
		if !returned.Load() {
			t.Error("stop returned while the check was still running")
		}
	})
}
