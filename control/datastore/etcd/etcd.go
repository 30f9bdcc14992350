// Package etcd is the etcd v3 backend of the datastore: Tabby's resources
// stored as JSON, one key per object, under a prefix:
//
//	<prefix><plural>/<name>              cluster-scoped kinds
//	<prefix><plural>/<namespace>/<name>  namespaced kinds
//
// with the default prefix /tabby/v1/ (so /tabby/v1/ippools/pool-a). An
// object's resourceVersion is the etcd mod revision of its key; Create,
// Update and Delete are etcd transactions comparing it, so each is one
// atomic compare-and-swap.
//
// Objects (objects.go) gives the same storage, compare-and-swap and watch
// for kinds package resources does not define — the agent's
// AgentConfiguration, Tier, NetworkPolicy, GlobalNetworkPolicy and
// WorkloadEndpoint — on JSON documents, so the agent's object store
// (agent.EtcdObjects) lives next to the datastore's keys without this
// package importing the agent.
//
// The backend talks to an external cluster by endpoints, with TLS when
// CertFile/KeyFile/CAFile are given, or to an embedded single-member server
// (StartEmbedded) on 127.0.0.1.
package etcd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// DefaultPrefix is the key prefix of every object.
const DefaultPrefix = "/tabby/v1/"

// Config configures a Datastore.
type Config struct {
	// Endpoints are the cluster's client URLs (http://127.0.0.1:2379 or
	// https://...). Required.
	Endpoints []string
	// CertFile and KeyFile are the client certificate and key, CAFile the
	// CA bundle that verifies the servers. Any of them switches to TLS.
	CertFile, KeyFile, CAFile string
	// Username and Password authenticate to a cluster with auth enabled.
	Username, Password string
	// Prefix is prepended to every key (default DefaultPrefix). Separate
	// prefixes keep several Tabby installations, or tests, apart in one
	// cluster.
	Prefix string
	// DialTimeout bounds connection setup (default 5s).
	DialTimeout time.Duration
	// RequestTimeout is applied to every request whose context has no
	// deadline (default 10s).
	RequestTimeout time.Duration
	// KeepAliveTime and KeepAliveTimeout detect dead connections (default
	// 10s and 5s).
	KeepAliveTime, KeepAliveTimeout time.Duration
	// ProbeInterval is how often a running Watch checks that the cluster
	// answers; a failed check restarts the watch from a list (default 5s).
	ProbeInterval time.Duration
	// BackoffInitial and BackoffMax bound the jittered exponential back-off
	// between watch retries (default 100ms and 10s).
	BackoffInitial, BackoffMax time.Duration
	// Logger receives connection and watch messages (default: discarded).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DialTimeout, 5*time.Second)
	def(&c.RequestTimeout, 10*time.Second)
	def(&c.KeepAliveTime, 10*time.Second)
	def(&c.KeepAliveTimeout, 5*time.Second)
	def(&c.ProbeInterval, 5*time.Second)
	def(&c.BackoffInitial, 100*time.Millisecond)
	def(&c.BackoffMax, 10*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Datastore is the etcd backend. It is safe for concurrent use.
type Datastore struct {
	cfg Config
	cli *clientv3.Client
	log *slog.Logger
	// closed is cancelled by Close; it ends every watch.
	closed      context.Context
	cancelWatch context.CancelFunc
}

var (
	_ datastore.Datastore  = (*Datastore)(nil)
	_ datastore.Transactor = (*Datastore)(nil)
)

// New connects to the cluster at cfg.Endpoints. It does not wait for the
// cluster to answer: requests fail with their context's deadline while it
// is unreachable.
func New(cfg Config) (*Datastore, error) {
	cfg.setDefaults()
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	var tlsCfg *tls.Config
	if cfg.CertFile != "" || cfg.KeyFile != "" || cfg.CAFile != "" {
		if (cfg.CertFile == "") != (cfg.KeyFile == "") {
			return nil, errors.New("etcd: a client certificate needs both CertFile and KeyFile")
		}
		info := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile}
		var err error
		if tlsCfg, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("etcd: load TLS files: %w", err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    cfg.KeepAliveTime,
		DialKeepAliveTimeout: cfg.KeepAliveTimeout,
		PermitWithoutStream:  true,
		TLS:                  tlsCfg,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: connect to %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	closed, cancel := context.WithCancel(context.Background())
	return &Datastore{cfg: cfg, cli: cli, log: cfg.Logger, closed: closed, cancelWatch: cancel}, nil
}

// Client returns the underlying etcd client (for tests and tools: compaction,
// status).
func (d *Datastore) Client() *clientv3.Client { return d.cli }

// Close ends every watch (their Events are closed) and closes the client
// connections.
func (d *Datastore) Close() error {
	d.cancelWatch()
	return d.cli.Close()
}

// Prefix returns the key prefix in use.
func (d *Datastore) Prefix() string { return d.cfg.Prefix }

// kindPrefix returns the key prefix of every object of a kind.
func (d *Datastore) kindPrefix(kind resources.Kind) (string, error) {
	info, ok := resources.LookupKind(kind)
	if !ok {
		return "", fmt.Errorf("etcd: unknown kind %q", kind)
	}
	return d.cfg.Prefix + info.Plural + "/", nil
}

// key returns the etcd key of k.
func (d *Datastore) key(k resources.Key) (string, error) {
	p, err := d.kindPrefix(k.Kind)
	if err != nil {
		return "", err
	}
	return joinKey(p, k)
}

// joinKey returns the etcd key of k under its kind's prefix:
// <prefix><name> or <prefix><namespace>/<name>. A slash in the name or
// namespace would make two keys one, so it is refused.
func joinKey(prefix string, k resources.Key) (string, error) {
	if k.Name == "" || strings.Contains(k.Name, "/") || strings.Contains(k.Namespace, "/") {
		return "", fmt.Errorf("etcd: %s: invalid name", k)
	}
	if k.Namespace != "" {
		return prefix + k.Namespace + "/" + k.Name, nil
	}
	return prefix + k.Name, nil
}

// reqCtx applies the default request timeout to a context without one.
func (d *Datastore) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d.cfg.RequestTimeout)
}

func formatRev(rev int64) string { return strconv.FormatInt(rev, 10) }

func parseRev(k resources.Key, s string) (int64, error) {
	rev, err := strconv.ParseInt(s, 10, 64)
	if err != nil || rev <= 0 {
		return 0, fmt.Errorf("etcd: %s: invalid resourceVersion %q", k, s)
	}
	return rev, nil
}

// decode turns a stored value into an object with its resourceVersion.
func decode(kind resources.Kind, key string, value []byte, modRev int64) (resources.Resource, error) {
	obj, err := resources.DecodeJSON(kind, value)
	if err != nil {
		return nil, fmt.Errorf("etcd: key %s: %w", key, err)
	}
	obj.Meta().ResourceVersion = formatRev(modRev)
	return obj, nil
}

// encode marshals obj for storage: without its resourceVersion.
func encode(obj resources.Resource) ([]byte, error) {
	m := obj.Meta()
	rv := m.ResourceVersion
	m.ResourceVersion = ""
	b, err := resources.Marshal(obj)
	m.ResourceVersion = rv
	if err != nil {
		return nil, fmt.Errorf("etcd: encode %s: %w", resources.KeyOf(obj), err)
	}
	return b, nil
}

// Get returns the object with key k.
func (d *Datastore) Get(ctx context.Context, k resources.Key) (resources.Resource, error) {
	key, err := d.key(k)
	if err != nil {
		return nil, err
	}
	kv, err := d.getKV(ctx, k, key)
	if err != nil {
		return nil, err
	}
	return decode(k.Kind, key, kv.Value, kv.ModRevision)
}

// getKV reads the key of k (a *datastore.NotFoundError when it is absent).
func (d *Datastore) getKV(ctx context.Context, k resources.Key, key string) (*mvccpb.KeyValue, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	resp, err := d.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("etcd: get %s: %w", k, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, &datastore.NotFoundError{Key: k}
	}
	return resp.Kvs[0], nil
}

// List returns every object of the kind.
func (d *Datastore) List(ctx context.Context, kind resources.Kind) (*datastore.List, error) {
	prefix, err := d.kindPrefix(kind)
	if err != nil {
		return nil, err
	}
	resp, err := d.listKVs(ctx, kind, prefix)
	if err != nil {
		return nil, err
	}
	out := &datastore.List{Items: make([]resources.Resource, 0, len(resp.Kvs)), Revision: formatRev(resp.Header.Revision)}
	for _, kv := range resp.Kvs {
		obj, err := decode(kind, string(kv.Key), kv.Value, kv.ModRevision)
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, obj)
	}
	return out, nil
}

// listKVs reads every key of a kind, under prefix, at one revision.
func (d *Datastore) listKVs(ctx context.Context, kind resources.Kind, prefix string) (*clientv3.GetResponse, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	resp, err := d.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd: list %s: %w", kind, err)
	}
	return resp, nil
}

// ListKeys returns the key of every object of the kind.
func (d *Datastore) ListKeys(ctx context.Context, kind resources.Kind) ([]resources.Key, error) {
	prefix, err := d.kindPrefix(kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	resp, err := d.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("etcd: list %s: %w", kind, err)
	}
	out := make([]resources.Key, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), prefix)
		k := resources.Key{Kind: kind, Name: rest}
		if ns, name, ok := strings.Cut(rest, "/"); ok {
			k.Namespace, k.Name = ns, name
		}
		out = append(out, k)
	}
	return out, nil
}

// Create stores a new object. On success obj itself is returned, with
// defaults, uid, creationTimestamp and resourceVersion filled in.
func (d *Datastore) Create(ctx context.Context, obj resources.Resource) (resources.Resource, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	if err := datastore.Admit(ctx, d, obj); err != nil {
		return nil, err
	}
	k := resources.KeyOf(obj)
	key, err := d.key(k)
	if err != nil {
		return nil, err
	}
	m := obj.Meta()
	if m.UID == "" {
		m.UID = newUID()
	}
	if m.CreationTimestamp == "" {
		m.CreationTimestamp = time.Now().UTC().Format(time.RFC3339)
	}
	m.ResourceVersion = ""
	val, err := encode(obj)
	if err != nil {
		return nil, err
	}
	rev, err := d.createKV(ctx, k, key, val)
	if err != nil {
		return nil, err
	}
	m.ResourceVersion = formatRev(rev)
	return obj, nil
}

// createKV stores val at the key of k if that key does not exist (a
// *datastore.AlreadyExistsError otherwise) and returns the revision of the
// write.
func (d *Datastore) createKV(ctx context.Context, k resources.Key, key string, val []byte) (int64, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	resp, err := d.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("etcd: create %s: %w", k, err)
	}
	if !resp.Succeeded {
		return 0, &datastore.AlreadyExistsError{Key: k}
	}
	return resp.Header.Revision, nil
}

// Update replaces an object if its resourceVersion is current. On success
// obj itself is returned with defaults and the new resourceVersion.
func (d *Datastore) Update(ctx context.Context, obj resources.Resource) (resources.Resource, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	k := resources.KeyOf(obj)
	m := obj.Meta()
	// A missing or malformed version is the caller's error whatever the
	// object holds: say so before admission.
	if _, err := requiredRev("update", k, m.ResourceVersion); err != nil {
		return nil, err
	}
	if err := datastore.Admit(ctx, d, obj); err != nil {
		return nil, err
	}
	key, err := d.key(k)
	if err != nil {
		return nil, err
	}
	val, err := encode(obj)
	if err != nil {
		return nil, err
	}
	rev, err := d.updateKV(ctx, k, key, val, m.ResourceVersion)
	if err != nil {
		return nil, err
	}
	m.ResourceVersion = formatRev(rev)
	return obj, nil
}

// requiredRev parses the resourceVersion an op on k compares, which must
// be set.
func requiredRev(op string, k resources.Key, revision string) (int64, error) {
	if revision == "" {
		return 0, fmt.Errorf("etcd: %s %s: resourceVersion is required", op, k)
	}
	return parseRev(k, revision)
}

// updateKV stores val at the key of k if the key's mod revision is
// revision (a *datastore.ConflictError otherwise, a
// *datastore.NotFoundError when the key is absent) and returns the
// revision of the write.
func (d *Datastore) updateKV(ctx context.Context, k resources.Key, key string, val []byte, revision string) (int64, error) {
	rev, err := requiredRev("update", k, revision)
	if err != nil {
		return 0, err
	}
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	resp, err := d.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(val))).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("etcd: update %s: %w", k, err)
	}
	if !resp.Succeeded {
		return 0, failedCompare(k, revision, resp)
	}
	return resp.Header.Revision, nil
}

// failedCompare turns the Else branch of a failed compare into the right
// error: not found, or a conflict with the current revision.
func failedCompare(k resources.Key, expected string, resp *clientv3.TxnResponse) error {
	if len(resp.Responses) == 1 {
		if r := resp.Responses[0].GetResponseRange(); r != nil && len(r.Kvs) == 1 {
			return &datastore.ConflictError{Key: k, Expected: expected, Current: formatRev(r.Kvs[0].ModRevision)}
		}
	}
	return &datastore.NotFoundError{Key: k}
}

// Delete removes an object, compare-and-swap on revision when it is set.
func (d *Datastore) Delete(ctx context.Context, k resources.Key, revision string) (resources.Resource, error) {
	key, err := d.key(k)
	if err != nil {
		return nil, err
	}
	prev, err := d.deleteKV(ctx, k, key, revision)
	if err != nil {
		return nil, err
	}
	return decode(k.Kind, key, prev.Value, prev.ModRevision)
}

// deleteKV removes the key of k, if its mod revision is revision when
// that is set, and returns its last version (a *datastore.NotFoundError
// when it is absent, a *datastore.ConflictError when it has changed).
func (d *Datastore) deleteKV(ctx context.Context, k resources.Key, key, revision string) (*mvccpb.KeyValue, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	del := clientv3.OpDelete(key, clientv3.WithPrevKV())
	var resp *clientv3.TxnResponse
	var err error
	if revision == "" {
		resp, err = d.cli.Txn(ctx).Then(del).Commit()
	} else {
		rev, perr := parseRev(k, revision)
		if perr != nil {
			return nil, perr
		}
		resp, err = d.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(del).
			Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
			Commit()
	}
	if err != nil {
		return nil, fmt.Errorf("etcd: delete %s: %w", k, err)
	}
	if !resp.Succeeded {
		return nil, failedCompare(k, revision, resp)
	}
	dr := resp.Responses[0].GetResponseDeleteRange()
	if dr == nil || len(dr.PrevKvs) == 0 {
		return nil, &datastore.NotFoundError{Key: k}
	}
	return dr.PrevKvs[0], nil
}

// maxTxnOps is etcd's default limit of operations in one transaction.
const maxTxnOps = 128

// Commit applies ops in one etcd transaction: the conditions of all ops are
// compared at once, and either all are applied or none.
func (d *Datastore) Commit(ctx context.Context, ops ...datastore.Op) ([]resources.Resource, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	if len(ops) > maxTxnOps {
		return nil, fmt.Errorf("etcd: commit: %d ops, at most %d", len(ops), maxTxnOps)
	}
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	type prepared struct {
		k   resources.Key
		key string
	}
	preps := make([]prepared, len(ops))
	cmps := make([]clientv3.Cmp, 0, len(ops))
	thens := make([]clientv3.Op, 0, len(ops))
	elses := make([]clientv3.Op, 0, len(ops))
	seen := make(map[string]bool, len(ops))
	for i, op := range ops {
		var k resources.Key
		switch op.Type {
		case datastore.OpCreate, datastore.OpUpdate:
			if op.Object == nil {
				return nil, fmt.Errorf("etcd: commit: op %d has no object", i)
			}
			k = resources.KeyOf(op.Object)
		case datastore.OpDelete:
			k = op.Key
		default:
			return nil, fmt.Errorf("etcd: commit: op %d has unknown type %d", i, op.Type)
		}
		key, err := d.key(k)
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, fmt.Errorf("etcd: commit: %s appears twice", k)
		}
		seen[key] = true
		preps[i] = prepared{k, key}
		switch op.Type {
		case datastore.OpCreate:
			if err := datastore.Admit(ctx, d, op.Object); err != nil {
				return nil, err
			}
			m := op.Object.Meta()
			if m.UID == "" {
				m.UID = newUID()
			}
			if m.CreationTimestamp == "" {
				m.CreationTimestamp = time.Now().UTC().Format(time.RFC3339)
			}
			m.ResourceVersion = ""
			val, err := encode(op.Object)
			if err != nil {
				return nil, err
			}
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
			thens = append(thens, clientv3.OpPut(key, string(val)))
		case datastore.OpUpdate:
			rev, err := requiredRev("commit: update", k, op.Object.Meta().ResourceVersion)
			if err != nil {
				return nil, err
			}
			if err := datastore.Admit(ctx, d, op.Object); err != nil {
				return nil, err
			}
			val, err := encode(op.Object)
			if err != nil {
				return nil, err
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", rev))
			thens = append(thens, clientv3.OpPut(key, string(val)))
		case datastore.OpDelete:
			if op.Revision != "" {
				rev, err := parseRev(k, op.Revision)
				if err != nil {
					return nil, err
				}
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", rev))
			} else {
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), ">", 0))
			}
			thens = append(thens, clientv3.OpDelete(key))
		}
		elses = append(elses, clientv3.OpGet(key, clientv3.WithKeysOnly()))
	}
	resp, err := d.cli.Txn(ctx).If(cmps...).Then(thens...).Else(elses...).Commit()
	if err != nil {
		return nil, fmt.Errorf("etcd: commit %d ops: %w", len(ops), err)
	}
	if !resp.Succeeded {
		// Find the first op whose condition failed from the keys' state.
		for i, op := range ops {
			var cur *mvccpb.KeyValue
			if r := resp.Responses[i].GetResponseRange(); r != nil && len(r.Kvs) == 1 {
				cur = r.Kvs[0]
			}
			p := preps[i]
			switch op.Type {
			case datastore.OpCreate:
				if cur != nil {
					return nil, &datastore.AlreadyExistsError{Key: p.k}
				}
			case datastore.OpUpdate:
				switch {
				case cur == nil:
					return nil, &datastore.NotFoundError{Key: p.k}
				case formatRev(cur.ModRevision) != op.Object.Meta().ResourceVersion:
					return nil, &datastore.ConflictError{Key: p.k, Expected: op.Object.Meta().ResourceVersion, Current: formatRev(cur.ModRevision)}
				}
			case datastore.OpDelete:
				switch {
				case cur == nil:
					return nil, &datastore.NotFoundError{Key: p.k}
				case op.Revision != "" && formatRev(cur.ModRevision) != op.Revision:
					return nil, &datastore.ConflictError{Key: p.k, Expected: op.Revision, Current: formatRev(cur.ModRevision)}
				}
			}
		}
		return nil, fmt.Errorf("etcd: commit %d ops: a condition failed and then held again", len(ops))
	}
	out := make([]resources.Resource, len(ops))
	rv := formatRev(resp.Header.Revision)
	for i, op := range ops {
		if op.Type != datastore.OpDelete {
			op.Object.Meta().ResourceVersion = rv
			out[i] = op.Object
		}
	}
	return out, nil
}

// Compact compacts the cluster's history up to the current revision and
// returns that revision. Watches that were behind it relist.
func (d *Datastore) Compact(ctx context.Context) (int64, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	resp, err := d.cli.Get(ctx, d.cfg.Prefix, clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("etcd: compact: %w", err)
	}
	rev := resp.Header.Revision
	if _, err := d.cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return 0, fmt.Errorf("etcd: compact to %d: %w", rev, err)
	}
	return rev, nil
}

// newUID returns a random RFC 4122 version 4 UUID.
func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
