package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EmbeddedConfig configures an embedded single-member etcd server.
type EmbeddedConfig struct {
	// Dir is the data directory. Empty: a new temporary directory, removed
	// by Close.
	Dir string
	// Name is the member name (default "tabby").
	Name string
	// NoFsync turns off fsync (etcd's --unsafe-no-fsync): much faster
	// writes, and a crash of the machine loses recent ones. Sensible only
	// for throw-away data.
	NoFsync bool
	// AutoCompactionRetention keeps this much history (periodic
	// compaction; default 5m; negative disables it).
	AutoCompactionRetention time.Duration
	// StartTimeout bounds waiting for the member to become ready (default
	// 60s).
	StartTimeout time.Duration
	// TLS, when set, serves clients over TLS with this certificate and
	// key; with CAFile, clients must present a certificate it verifies.
	TLS *EmbeddedTLS
}

// EmbeddedTLS are the server's TLS files.
type EmbeddedTLS struct {
	CertFile, KeyFile, CAFile string
}

// Embedded is a running single-member etcd server listening on 127.0.0.1
// ports chosen by the kernel.
type Embedded struct {
	etcd      *embed.Etcd
	dir       string
	removeDir bool
	endpoints []string

	closeOnce sync.Once
	closeErr  error
}

// StartEmbedded starts an embedded etcd server on 127.0.0.1 (client and
// peer ports chosen by the kernel) and waits until it serves.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	e := &Embedded{dir: cfg.Dir}
	if e.dir == "" {
		dir, err := os.MkdirTemp("", "tabby-etcd-")
		if err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
		e.dir, e.removeDir = dir, true
	}
	ok := false
	defer func() {
		if !ok && e.removeDir {
			os.RemoveAll(e.dir)
		}
	}()

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	if ec.Name == "" {
		ec.Name = "tabby"
	}
	ec.Dir = e.dir
	local := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	client := local
	scheme := "http://"
	if t := cfg.TLS; t != nil {
		client.Scheme, scheme = "https", "https://"
		ec.ClientTLSInfo = transport.TLSInfo{
			CertFile: t.CertFile, KeyFile: t.KeyFile,
			TrustedCAFile: t.CAFile, ClientCertAuth: t.CAFile != "",
		}
	}
	ec.ListenClientUrls = []url.URL{client}
	ec.AdvertiseClientUrls = []url.URL{client}
	ec.ListenPeerUrls = []url.URL{local}
	ec.AdvertisePeerUrls = []url.URL{local}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.UnsafeNoFsync = cfg.NoFsync
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	ec.LogLevel = "error"
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	switch r := cfg.AutoCompactionRetention; {
	case r < 0:
		ec.AutoCompactionRetention = "0"
	case r == 0:
		ec.AutoCompactionRetention = "5m"
	default:
		ec.AutoCompactionRetention = r.String()
	}
	timeout := cfg.StartTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}

	srv, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: start: %w", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-srv.Server.ReadyNotify():
	case err := <-srv.Err():
		srv.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-t.C:
		srv.Close()
		return nil, fmt.Errorf("embedded etcd: not ready after %s", timeout)
	case <-ctx.Done():
		srv.Close()
		return nil, fmt.Errorf("embedded etcd: %w", ctx.Err())
	}
	e.etcd = srv
	for _, l := range srv.Clients {
		e.endpoints = append(e.endpoints, scheme+l.Addr().String())
	}
	if len(e.endpoints) == 0 {
		srv.Close()
		return nil, errors.New("embedded etcd: no client listener")
	}
	ok = true
	return e, nil
}

// Endpoints returns the server's client URLs.
func (e *Embedded) Endpoints() []string { return append([]string(nil), e.endpoints...) }

// Dir returns the data directory.
func (e *Embedded) Dir() string { return e.dir }

// Datastore returns a datastore connected to the server; cfg.Endpoints is
// overwritten. Closing the datastore leaves the server running.
func (e *Embedded) Datastore(cfg Config) (*Datastore, error) {
	cfg.Endpoints = e.Endpoints()
	return New(cfg)
}

// Close stops the server and removes its data directory if StartEmbedded
// created it. Later calls do nothing and return the first call's result.
func (e *Embedded) Close() error {
	e.closeOnce.Do(func() {
		e.etcd.Close()
		<-e.etcd.Server.StopNotify()
		if e.removeDir {
			if err := os.RemoveAll(e.dir); err != nil {
				e.closeErr = fmt.Errorf("embedded etcd: remove %s: %w", e.dir, err)
			}
		}
	})
	return e.closeErr
}
