package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	k8sclient "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

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
	// QPS and Burst bound the client's request rate (default 50 and 100;
	// a negative QPS disables the limit). client-go's own default of 5
	// would throttle IPAM.
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

	clusterOnce sync.Once
	cluster     *Cluster
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
	ctx, cancel := context.WithCancel(context.Background())
	return &Datastore{cfg: cfg, rest: rc, dyn: dyn, meta: meta, core: core, log: cfg.Logger, ctx: ctx, cancel: cancel}, nil
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

// kindInfo describes how a kind is stored.
type kindInfo struct {
	kind       resources.Kind
	gvr        schema.GroupVersionResource
	namespaced bool
}

func lookupKind(kind resources.Kind) (kindInfo, error) {
	info, ok := resources.LookupKind(kind)
	if !ok {
		return kindInfo{}, fmt.Errorf("kubernetes: unknown kind %q", kind)
	}
	return kindInfo{
		kind:       kind,
		gvr:        schema.GroupVersionResource{Group: resources.Group, Version: resources.Version, Resource: info.Plural},
		namespaced: info.Namespaced,
	}, nil
}

// client returns the dynamic client of a kind in namespace ns (all
// namespaces when ns is empty).
func (d *Datastore) client(ki kindInfo, ns string) dynamic.ResourceInterface {
	r := d.dyn.Resource(ki.gvr)
	if ki.namespaced && ns != "" {
		return r.Namespace(ns)
	}
	return r
}

// objectFor checks k and returns its kind and stored name.
func objectFor(k resources.Key) (kindInfo, string, error) {
	ki, err := lookupKind(k.Kind)
	if err != nil {
		return ki, "", err
	}
	if k.Name == "" || (ki.namespaced && k.Namespace == "") || (!ki.namespaced && k.Namespace != "") {
		return ki, "", fmt.Errorf("kubernetes: %s: invalid key", k)
	}
	return ki, storedName(k.Name), nil
}

// Get returns the object with key k.
func (d *Datastore) Get(ctx context.Context, k resources.Key) (resources.Resource, error) {
	ki, name, err := objectFor(k)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	return d.get(ctx, ki, k, name)
}

func (d *Datastore) get(ctx context.Context, ki kindInfo, k resources.Key, name string) (resources.Resource, error) {
	u, err := d.client(ki, k.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, mapError("get", k, err)
	}
	obj, err := decode(ki.kind, u)
	if err != nil {
		return nil, err
	}
	if obj.Meta().Name != k.Name {
		// A stored name that only hashes like k's.
		return nil, &datastore.NotFoundError{Key: k}
	}
	return obj, nil
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

// list reads every object of a kind, in pages, at one resourceVersion. A
// continuation that expired restarts the list.
func (d *Datastore) list(ctx context.Context, ki kindInfo) ([]unstructured.Unstructured, string, error) {
	for attempt := 0; ; attempt++ {
		var items []unstructured.Unstructured
		opts := metav1.ListOptions{Limit: d.cfg.ListPageSize}
		rev := ""
		for {
			l, err := d.client(ki, "").List(ctx, opts)
			if err != nil {
				if opts.Continue != "" && apierrors.IsResourceExpired(err) && attempt < 3 {
					break
				}
				return nil, "", mapError("list", resources.Key{Kind: ki.kind}, err)
			}
			if rev == "" {
				rev = l.GetResourceVersion()
			}
			items = append(items, l.Items...)
			if opts.Continue = l.GetContinue(); opts.Continue == "" {
				return items, rev, nil
			}
		}
	}
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
	var out []resources.Key
	opts := metav1.ListOptions{Limit: d.cfg.ListPageSize}
	for attempt := 0; ; {
		l, err := d.meta.Resource(ki.gvr).List(ctx, opts)
		if err != nil {
			if opts.Continue != "" && apierrors.IsResourceExpired(err) && attempt < 3 {
				attempt++
				out, opts.Continue = out[:0], ""
				continue
			}
			return nil, mapError("list", resources.Key{Kind: kind}, err)
		}
		for _, m := range l.Items {
			out = append(out, resources.Key{Kind: kind, Namespace: m.Namespace, Name: realName(m.Name, m.Annotations)})
		}
		if opts.Continue = l.Continue; opts.Continue == "" {
			return out, nil
		}
	}
}

// Create stores a new object. It returns the stored object, with the
// apiserver's uid, creationTimestamp and resourceVersion.
func (d *Datastore) Create(ctx context.Context, obj resources.Resource) (resources.Resource, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	if err := datastore.Admit(ctx, d, obj); err != nil {
		return nil, err
	}
	k := resources.KeyOf(obj)
	ki, _, err := objectFor(k)
	if err != nil {
		return nil, err
	}
	u, err := encodeForCreate(obj)
	if err != nil {
		return nil, err
	}
	out, err := d.client(ki, k.Namespace).Create(ctx, u, metav1.CreateOptions{FieldManager: FieldManager})
	if err != nil {
		return nil, mapError("create", k, err)
	}
	return decode(ki.kind, out)
}

// Update replaces the spec, labels and annotations of an object if its
// resourceVersion is current. It returns the stored object with its new
// resourceVersion (unchanged when nothing changed).
func (d *Datastore) Update(ctx context.Context, obj resources.Resource) (resources.Resource, error) {
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	k := resources.KeyOf(obj)
	rv := obj.Meta().ResourceVersion
	if rv == "" {
		return nil, fmt.Errorf("kubernetes: update %s: resourceVersion is required", k)
	}
	ki, name, err := objectFor(k)
	if err != nil {
		return nil, err
	}
	if err := datastore.Admit(ctx, d, obj); err != nil {
		return nil, err
	}
	patch, err := encodeUpdatePatch(obj)
	if err != nil {
		return nil, err
	}
	out, err := d.client(ki, k.Namespace).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
	if err != nil {
		err = mapError("update", k, err)
		if datastore.IsConflict(err) {
			return nil, d.conflict(ctx, ki, k, name, rv)
		}
		return nil, err
	}
	return decode(ki.kind, out)
}

// conflict returns the error of a failed compare-and-swap: a conflict
// naming the current version, or not found when the object is gone.
func (d *Datastore) conflict(ctx context.Context, ki kindInfo, k resources.Key, name, expected string) error {
	cur, err := d.get(ctx, ki, k, name)
	switch {
	case datastore.IsNotFound(err):
		return err
	case err != nil:
		return &datastore.ConflictError{Key: k, Expected: expected}
	}
	return &datastore.ConflictError{Key: k, Expected: expected, Current: cur.Meta().ResourceVersion}
}

// Delete removes an object; with a revision, only if it is current. The
// object is read first and deleted with its resourceVersion as a
// precondition, so what is returned is exactly what was deleted.
func (d *Datastore) Delete(ctx context.Context, k resources.Key, revision string) (resources.Resource, error) {
	ki, name, err := objectFor(k)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.reqCtx(ctx)
	defer cancel()
	for {
		cur, err := d.get(ctx, ki, k, name)
		if err != nil {
			return nil, err
		}
		rv := cur.Meta().ResourceVersion
		if revision != "" && rv != revision {
			return nil, &datastore.ConflictError{Key: k, Expected: revision, Current: rv}
		}
		err = d.client(ki, k.Namespace).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		if err == nil {
			return cur, nil
		}
		err = mapError("delete", k, err)
		if !datastore.IsConflict(err) {
			return nil, err
		}
		if revision != "" {
			return nil, d.conflict(ctx, ki, k, name, revision)
		}
		// Changed between the read and the delete: read it again.
	}
}
