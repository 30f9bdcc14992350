package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/informers"
	k8sclient "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/tabbynet/tabby/control/datastore"
)

// Cluster streams the cluster's own objects that the agent needs, from one
// set of shared informers: each kind is listed and watched once however
// many streams subscribe to it. Informers start with the first
// subscription to their kind and run until Stop.
//
// The agent consumes it as it consumes datastore.Watch:
//
//	nodes, err := c.Nodes(ctx)
//	for ev := range nodes.Events() {
//		switch ev.Type {
//		case datastore.Added, datastore.Modified: // ev.Object is the new state
//		case datastore.Deleted:                   // ev.Object is the last known state
//		case datastore.Synced:                    // every existing node has been reported
//		case datastore.Error:                     // ev.Err: the watch broke; the informer relists
//		}
//	}
//
// Objects are shared with the informer's cache: read them, never modify
// them (DeepCopy first). Their managedFields are dropped.
type Cluster struct {
	factory informers.SharedInformerFactory
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc

	mu sync.Mutex
	// sinks receive the watch errors of each informer.
	sinks map[cache.SharedIndexInformer]map[*errSink]bool
}

// ClusterOptions configure a Cluster.
type ClusterOptions struct {
	// Resync is the informers' resync period (default 0: none; events are
	// only sent for changes).
	Resync time.Duration
	// Logger receives informer errors (default: discarded).
	Logger *slog.Logger
}

// NewCluster returns a Cluster on client.
func NewCluster(client k8sclient.Interface, opts ClusterOptions) *Cluster {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Cluster{
		factory: informers.NewSharedInformerFactoryWithOptions(client, opts.Resync, informers.WithTransform(dropManagedFields)),
		log:     opts.Logger,
		ctx:     ctx,
		cancel:  cancel,
		sinks:   map[cache.SharedIndexInformer]map[*errSink]bool{},
	}
}

// Cluster returns the datastore's Cluster (created on first use, stopped
// by Close; after Close, subscriptions fail).
func (d *Datastore) Cluster() *Cluster {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cluster == nil {
		d.cluster = NewCluster(d.core, ClusterOptions{Logger: d.log})
		if d.closed {
			d.cluster.Stop()
		}
	}
	return d.cluster
}

func dropManagedFields(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
	}
	return obj, nil
}

// Stop stops every informer and ends every stream.
func (c *Cluster) Stop() {
	c.cancel()
	c.factory.Shutdown()
}

// Nodes streams the cluster's Nodes.
func (c *Cluster) Nodes(ctx context.Context) (*Stream[*corev1.Node], error) {
	return subscribe(ctx, c, "nodes", c.factory.Core().V1().Nodes().Informer(), typed[*corev1.Node])
}

// Namespaces streams the cluster's Namespaces (their labels are what
// namespaceSelectors match).
func (c *Cluster) Namespaces(ctx context.Context) (*Stream[*corev1.Namespace], error) {
	return subscribe(ctx, c, "namespaces", c.factory.Core().V1().Namespaces().Informer(), typed[*corev1.Namespace])
}

// Pods streams every pod of every namespace.
func (c *Cluster) Pods(ctx context.Context) (*Stream[*corev1.Pod], error) {
	return subscribe(ctx, c, "pods", c.factory.Core().V1().Pods().Informer(), typed[*corev1.Pod])
}

// PodEndpoints streams the pods that are workload endpoints (see
// PodEndpointOf), from the same informer as Pods: a pod is Added when it
// gets its addresses, Modified when its addresses, labels, service account
// or named ports change, and Deleted when it goes away, finishes or loses
// its addresses.
func (c *Cluster) PodEndpoints(ctx context.Context) (*Stream[PodEndpoint], error) {
	return subscribe(ctx, c, "pods", c.factory.Core().V1().Pods().Informer(), func(obj any) (PodEndpoint, bool) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return PodEndpoint{}, false
		}
		return PodEndpointOf(pod)
	})
}

// NetworkPolicies streams the cluster's networking.k8s.io/v1
// NetworkPolicies (package policyconv converts them).
func (c *Cluster) NetworkPolicies(ctx context.Context) (*Stream[*networkingv1.NetworkPolicy], error) {
	return subscribe(ctx, c, "networkpolicies", c.factory.Networking().V1().NetworkPolicies().Informer(), typed[*networkingv1.NetworkPolicy])
}

// ServiceAccounts streams the cluster's ServiceAccounts (their labels are
// what serviceAccountSelectors match).
func (c *Cluster) ServiceAccounts(ctx context.Context) (*Stream[*corev1.ServiceAccount], error) {
	return subscribe(ctx, c, "serviceaccounts", c.factory.Core().V1().ServiceAccounts().Informer(), typed[*corev1.ServiceAccount])
}

func typed[T any](obj any) (T, bool) {
	t, ok := obj.(T)
	return t, ok
}

// Event is one event of a Stream.
type Event[T any] struct {
	// Type is Added, Modified, Deleted, Synced or Error.
	Type datastore.EventType
	// Object is set for Added, Modified (the new state) and Deleted (the
	// last known state).
	Object T
	// Err is set for Error.
	Err error
}

// Stream delivers the events of one subscription in order. Its buffer is
// unbounded, so a slow consumer never stalls the shared informer (or the
// other streams of it).
type Stream[T any] struct {
	out    chan Event[T]
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	queue  []Event[T]
	wake   chan struct{}
	synced bool
}

// Events delivers events; it is closed after Stop, when the subscription's
// context is done, or when the Cluster stops.
func (s *Stream[T]) Events() <-chan Event[T] { return s.out }

// Stop ends the subscription and closes Events. It may be called more
// than once and from any goroutine.
func (s *Stream[T]) Stop() {
	s.cancel()
	<-s.done
}

// push queues events; the pump goroutine delivers them.
func (s *Stream[T]) push(evs ...Event[T]) {
	s.mu.Lock()
	s.pushLocked(evs...)
	s.mu.Unlock()
}

func (s *Stream[T]) pushLocked(evs ...Event[T]) {
	s.queue = append(s.queue, evs...)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// markSynced queues Synced once.
func (s *Stream[T]) markSynced() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		s.synced = true
		s.pushLocked(Event[T]{Type: datastore.Synced})
	}
}

func (s *Stream[T]) pump() {
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, ev := range q {
			select {
			case s.out <- ev:
			case <-s.ctx.Done():
				return
			}
		}
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			return
		}
	}
}

// errSink forwards an informer's watch errors to a stream.
type errSink struct{ report func(error) }

// subscribe adds a stream of the objects of inf that conv accepts.
func subscribe[T any](ctx context.Context, c *Cluster, what string, inf cache.SharedIndexInformer, conv func(any) (T, bool)) (*Stream[T], error) {
	s := &Stream[T]{
		out:  make(chan Event[T]),
		done: make(chan struct{}),
		wake: make(chan struct{}, 1),
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	stopWithCluster := context.AfterFunc(c.ctx, s.cancel)

	handler := cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			if !initial {
				s.markSynced()
			}
			if t, ok := conv(obj); ok {
				s.push(Event[T]{Type: datastore.Added, Object: t})
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			s.markSynced()
			if sameVersion(oldObj, newObj) {
				return // a relist or resync reporting what did not change
			}
			o, wasOK := conv(oldObj)
			n, isOK := conv(newObj)
			switch {
			case wasOK && isOK:
				s.push(Event[T]{Type: datastore.Modified, Object: n})
			case isOK:
				s.push(Event[T]{Type: datastore.Added, Object: n})
			case wasOK:
				s.push(Event[T]{Type: datastore.Deleted, Object: o})
			}
		},
		DeleteFunc: func(obj any) {
			s.markSynced()
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if t, ok := conv(obj); ok {
				s.push(Event[T]{Type: datastore.Deleted, Object: t})
			}
		},
	}
	sink := &errSink{report: func(err error) { s.push(Event[T]{Type: datastore.Error, Err: err}) }}

	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		stopWithCluster()
		s.cancel()
		return nil, errors.New("kubernetes: cluster stopped")
	}
	if c.sinks[inf] == nil {
		c.sinks[inf] = map[*errSink]bool{}
		// Only possible before the informer starts, which is below.
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) { c.watchError(what, inf, err) }); err != nil {
			c.log.Warn("informer: cannot set watch error handler", "kind", what, "err", err)
		}
	}
	c.sinks[inf][sink] = true
	reg, err := inf.AddEventHandler(handler)
	if err != nil {
		delete(c.sinks[inf], sink)
		c.mu.Unlock()
		stopWithCluster()
		s.cancel()
		return nil, fmt.Errorf("kubernetes: watch %s: %w", what, err)
	}
	c.factory.Start(c.ctx.Done())
	c.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(s.pump)
	wg.Go(func() {
		if cache.WaitForCacheSync(s.ctx.Done(), reg.HasSynced) {
			s.markSynced()
		}
	})
	go func() {
		<-s.ctx.Done()
		_ = inf.RemoveEventHandler(reg)
		c.mu.Lock()
		delete(c.sinks[inf], sink)
		c.mu.Unlock()
		stopWithCluster()
		wg.Wait()
		close(s.out)
		close(s.done)
	}()
	return s, nil
}

// watchError reports an informer's broken watch to its streams. A watch
// the server closed (EOF) is routine and only logged.
func (c *Cluster) watchError(what string, inf cache.SharedIndexInformer, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		c.log.Debug("informer: watch closed", "kind", what, "err", err)
		return
	}
	c.log.Warn("informer: watch failed, relisting", "kind", what, "err", err)
	err = fmt.Errorf("kubernetes: watch %s: %w", what, err)
	c.mu.Lock()
	defer c.mu.Unlock()
	for sink := range c.sinks[inf] {
		sink.report(err)
	}
}

// sameVersion reports whether two states of an object have one
// resourceVersion.
func sameVersion(a, b any) bool {
	ma, err1 := meta.Accessor(a)
	mb, err2 := meta.Accessor(b)
	return err1 == nil && err2 == nil && ma.GetResourceVersion() != "" && ma.GetResourceVersion() == mb.GetResourceVersion()
}
