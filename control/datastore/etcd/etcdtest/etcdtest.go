// Package etcdtest gives tests and benchmarks a real etcd: one embedded
// single-member server per test binary (started by Main) or per test, and
// a datastore per test under a key prefix of its own, so tests sharing the
// server never see each other's objects.
package etcdtest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore/etcd"
)

var (
	shared  *etcd.Embedded
	counter atomic.Int64
)

// Main runs a test binary's tests with one shared embedded etcd server:
//
//	func TestMain(m *testing.M) { etcdtest.Main(m) }
func Main(m *testing.M) {
	srv, err := etcd.StartEmbedded(context.Background(), etcd.EmbeddedConfig{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdtest:", err)
		os.Exit(1)
	}
	shared = srv
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

// Server returns the shared server, or starts one for this test alone
// (stopped and removed in tb's cleanup).
func Server(tb testing.TB) *etcd.Embedded {
	tb.Helper()
	if shared != nil {
		return shared
	}
	return StartServer(tb, etcd.EmbeddedConfig{})
}

// StartServer starts a server of tb's own.
func StartServer(tb testing.TB, cfg etcd.EmbeddedConfig) *etcd.Embedded {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := etcd.StartEmbedded(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := srv.Close(); err != nil {
			tb.Error(err)
		}
	})
	return srv
}

// Prefix returns a key prefix no other call in this process returns.
func Prefix(tb testing.TB) string {
	return fmt.Sprintf("/tabbytest/%d-%d/", os.Getpid(), counter.Add(1))
}

// Datastore returns a datastore on Server(tb) under a fresh prefix, closed
// in tb's cleanup. cfg's Endpoints and Prefix are filled in.
func Datastore(tb testing.TB, cfg etcd.Config) *etcd.Datastore {
	tb.Helper()
	srv := Server(tb)
	if cfg.Prefix == "" {
		cfg.Prefix = Prefix(tb)
	}
	d, err := srv.Datastore(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	tb.Cleanup(func() { once.Do(func() { d.Close() }) })
	return d
}
