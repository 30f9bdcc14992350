package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockPath is the file whose exclusive flock serialises e2e runs on a
// machine: two runs at once would share CPU 0 (both pin their traffic
// thread there) and measure each other.
var LockPath = "/run/tabby/e2e.lock"

// ErrBusy is returned by Run when another run held the lock until ctx ended.
var ErrBusy = errors.New("e2e: another e2e run holds the machine lock")

// lockMachine takes the e2e lock, waiting (and saying so once) while another
// process holds it. The returned function releases it.
func lockMachine(ctx context.Context, progress func(string, ...any)) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(LockPath), 0o755); err != nil {
		return nil, fmt.Errorf("e2e lock: %w", err)
	}
	f, err := os.OpenFile(LockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("e2e lock: %w", err)
	}
	said := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("e2e lock: %w", err)
		}
		if !said {
			holder, _ := os.ReadFile(LockPath)
			progress("waiting for another e2e run (pid %s) to finish", strings.TrimSpace(string(holder)))
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("%w: %w", ErrBusy, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
