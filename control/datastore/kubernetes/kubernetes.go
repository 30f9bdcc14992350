package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	k8sclient "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// FieldManager is the field manager of every write (metadata.managedFields).
const FieldManager = "tabby"

// Config configures a Datastore. The cluster is found, in order, from
// RESTConfig; from Kubeconfig (or $KUBECONFIG, or ~/.kube/config) and
// Context; or, when no kubeconfig exists, from the pod's service account
// (in-cluster).
type Config struct {
	// Kubeconfig is the path of a kubeconfig file (default: $KUBECONFIG,
	// then ~/.kube/config, then in-cluster).
	Kubeconfig string
	// Context is the kubeconfig context to use (default: its current one).
	Context string
	// RESTConfig, when set, is used instead of Kubeconfig and Context (a
	// copy is made; QPS, Burst and UserAgent are still applied).
	RESTConfig *rest.Config
	// QPS and Burst bound the request rate of all the datastore's clients
	// together (default 50 and 100; a negative QPS disables the limit).
	// client-go's own default of 5 would throttle IPAM. A RateLimiter in
	// RESTConfig takes precedence.
	QPS   float32
	Burst int
	// RequestTimeout is applied to every request whose context has no
	// deadline (default 10s).
	RequestTimeout time.Duration
	// ProbeInterval is how often a running Watch checks that the apiserver
	// answers; a failed check restarts the watch from a list (default 10s,
	// negative: no probe).
	ProbeInterval time.Duration
	// WatchTimeout is how long the apiserver keeps one watch request open
	// before the watch resumes with a new one (default 5m, jittered).
	WatchTimeout time.Duration
	// BackoffInitial and BackoffMax bound the jittered exponential back-off
	// between watch retries (default 100ms and 10s).
	BackoffInitial, BackoffMax time.Duration
	// ListPageSize is the page size of lists (default 500).
	ListPageSize int64
	// Logger receives connection and watch messages (default: discarded).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.RequestTimeout, 10*time.Second)
	def(&c.ProbeInterval, 10*time.Second)
	def(&c.WatchTimeout, 5*time.Minute)
	def(&c.BackoffInitial, 100*time.Millisecond)
	def(&c.BackoffMax, 10*time.Second)
	if c.RequestTimeout < 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.QPS == 0 {
		c.QPS = 50
	}
	if c.Burst <= 0 {
		c.Burst = 100
	}
	if c.ListPageSize <= 0 {
		c.ListPageSize = 500
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrNoCRD is matched (errors.Is) by the error of a request for a kind
// whose CustomResourceDefinition is not installed.
var ErrNoCRD = errors.New("custom resource definition not installed (apply deploy/crds)")

// Datastore is the Kubernetes backend. It is safe for concurrent use.
type Datastore struct {
	cfg  Config
	rest *rest.Config
	dyn  dynamic.Interface
	meta metadata.Interface
	core k8sclient.Interface
	log  *slog.Logger

	// ctx ends every watch and the Cluster when Close is called.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	cluster *Cluster
}

var _ datastore.Datastore = (*Datastore)(nil)

// New returns a datastore on the cluster cfg names. It does not contact
// the apiserver: requests fail with their context's deadline while it is
// unreachable.
func New(cfg Config) (*Datastore, error) {
	cfg.setDefaults()
	rc, err := restConfig(cfg)
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = cfg.QPS, cfg.Burst
	if rc.RateLimiter == nil && cfg.QPS > 0 {
		// One budget for the dynamic, metadata and typed clients (each
		// would otherwise get a limiter of its own).
		rc.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	if rc.UserAgent == "" {
		rc.UserAgent = "tabby"
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: dynamic client: %w", err)
	}
	meta, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: metadata client: %w", err)
	}
	core, err := k8sclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client: %w", err)
	}
	return newDatastore(cfg, rc, dyn, meta, core), nil
}

// newDatastore assembles a Datastore from its clients; cfg has its
// defaults.
func newDatastore(cfg Config, rc *rest.Config, dyn dynamic.Interface, meta metadata.Interface, core k8sclient.Interface) *Datastore {
	ctx, cancel := context.WithCancel(context.Background())
	return &Datastore{cfg: cfg, rest: rc, dyn: dyn, meta: meta, core: core, log: cfg.Logger, ctx: ctx, cancel: cancel}
}

func restConfig(cfg Config) (*rest.Config, error) {
	if cfg.RESTConfig != nil {
		return rest.CopyConfig(cfg.RESTConfig), nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if cfg.Kubeconfig != "" {
		rules.ExplicitPath = cfg.Kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: cfg.Context}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: load client configuration: %w", err)
	}
	return rc, nil
}

// RESTConfig returns a copy of the client configuration in use.
func (d *Datastore) RESTConfig() *rest.Config { return rest.CopyConfig(d.rest) }

// Clientset returns the typed client of the cluster's own objects.
func (d *Datastore) Clientset() k8sclient.Interface { return d.core }

// Close stops every watch and the Cluster. Requests in flight are not
// interrupted.
func (d *Datastore) Close() error {
	d.cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.cluster != nil {
		d.cluster.Stop()
	}
	return nil
}

// reqCtx applies the default request timeout to a context without one.
func (d *Datastore) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d.cfg.RequestTimeout)
}

// Get returns the object with key k.
func (d *Datastore) Get(ctx context.Context, k resources.Key) (resources.Resource, error) {
	ki, err := lookupKind(k.Kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	u, err := d.getObject(ctx, ki, k)
	if err != nil {
		return nil, err
	}
	return decode(ki.kind, u)
}

// List returns every object of the kind, read in pages of ListPageSize at
// one resourceVersion.
func (d *Datastore) List(ctx context.Context, kind resources.Kind) (*datastore.List, error) {
	ki, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	items, rev, err := d.list(ctx, ki)
	if err != nil {
		return nil, err
	}
	out := &datastore.List{Items: make([]resources.Resource, 0, len(items)), Revision: rev}
	for i := range items {
		obj, err := decode(kind, &items[i])
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, obj)
	}
	return out, nil
}

// ListKeys returns the key of every object of the kind, reading only the
// objects' metadata.
func (d *Datastore) ListKeys(ctx context.Context, kind resources.Kind) ([]resources.Key, error) {
	ki, err := lookupKind(kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	return d.listKeys(ctx, ki)
}

// Create stores a new object. It returns the stored object, with the
// apiserver's uid, creationTimestamp and resourceVersion.
func (d *Datastore) Create(ctx context.Context, obj resources.Resource) (resources.Resource, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	if err := datastore.Admit(ctx, d, obj); err != nil {
		return nil, err
	}
	ki, err := lookupKind(obj.ResourceKind())
	if err != nil {
		return nil, err
	}
	m, err := toMap(obj)
	if err != nil {
		return nil, err
	}
	u, err := d.createObject(ctx, ki, m)
	if err != nil {
		return nil, err
	}
	return decode(ki.kind, u)
}

// Update replaces the spec, labels and annotations of an object if its
// resourceVersion is current. It returns the stored object with its new
// resourceVersion (unchanged when nothing changed).
func (d *Datastore) Update(ctx context.Context, obj resources.Resource) (resources.Resource, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	k := resources.KeyOf(obj)
	if obj.Meta().ResourceVersion == "" {
		return nil, fmt.Errorf("kubernetes: update %s: resourceVersion is required", k)
	}
	ki, err := lookupKind(k.Kind)
	if err != nil {
		return nil, err
	}
	if err := datastore.Admit(ctx, d, obj); err != nil {
		return nil, err
	}
	m, err := toMap(obj)
	if err != nil {
		return nil, err
	}
	u, err := d.updateObject(ctx, ki, m)
	if err != nil {
		return nil, err
	}
	return decode(ki.kind, u)
}

// Delete removes an object; with a revision, only if it is current. The
// object is read first and deleted with its resourceVersion as a
// precondition, so what is returned is exactly what was deleted.
func (d *Datastore) Delete(ctx context.Context, k resources.Key, revision string) (resources.Resource, error) {
	ki, err := lookupKind(k.Kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	u, err := d.deleteObject(ctx, ki, k, revision)
	if err != nil {
		return nil, err
	}
	return decode(ki.kind, u)
}
