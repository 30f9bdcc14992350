package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/policyconv"
	"github.com/tabbynet/tabby/control/resources"
)

// Pseudo-kinds of the Kubernetes cluster objects the reconciler consumes.
const (
	kindNamespace   resources.Kind = "k8s:Namespace"
	kindK8sPolicy   resources.Kind = "k8s:NetworkPolicy"
	kindPodEndpoint resources.Kind = "k8s:Pod"
)

// With the Kubernetes datastore (or Options.Cluster), the cluster's own
// objects replace the agent kinds the datastore cannot store: pods are the
// workload endpoints (remote ones for policy selectors and routes, local
// ones merged with what the CNI plugin registered: veth and MAC),
// Namespaces give namespaceSelectors their labels, and
// networking.k8s.io/v1 NetworkPolicies are converted by control/policyconv.
// This node's endpoint registrations are kept in <stateDir>/endpoints.json
// (the datastore has no WorkloadEndpoints to keep them in), so that a
// restarted agent still routes to its pods and can release them.

func isClusterKind(k resources.Kind) bool {
	return k == kindPodEndpoint || k == kindNamespace || k == kindK8sPolicy
}

// podWorkload converts a pod into a workload endpoint named after the pod.
func podWorkload(p kubernetes.PodEndpoint) *WorkloadEndpoint {
	w := &WorkloadEndpoint{
		ObjectMeta: resources.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels,
			ResourceVersion: p.ResourceVersion, UID: p.UID},
		Spec: WorkloadEndpointSpec{Node: p.Node, Orchestrator: "k8s", Pod: p.Name, Endpoint: "eth0",
			Ports: p.Ports, ServiceAccountName: p.ServiceAccount},
	}
	for _, ip := range p.IPs {
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, fmt.Sprintf("%s/%d", ip, ip.BitLen()))
	}
	return w
}

// clusterInput is one event of a cluster stream as reconciler input.
func clusterInput[T any](kind resources.Kind, ev kubernetes.Event[T], conv func(T) Object) input {
	in := input{kind: kind, typ: ev.Type, err: ev.Err}
	if ev.Type == datastore.Added || ev.Type == datastore.Modified || ev.Type == datastore.Deleted {
		in.obj = conv(ev.Object)
	}
	return in
}

// k8sObject carries a Kubernetes object through the reconciler's input.
type k8sObject struct {
	kind resources.Kind
	meta resources.ObjectMeta
	ns   *corev1.Namespace
	np   *networkingv1.NetworkPolicy
}

func (o *k8sObject) ObjectKind() resources.Kind  { return o.kind }
func (o *k8sObject) Meta() *resources.ObjectMeta { return &o.meta }
func (o *k8sObject) Default()                    {}
func (o *k8sObject) Validate() error             { return nil }

// startClusterWatches subscribes to the cluster's pods, namespaces and
// network policies and forwards them to the reconciler.
func (a *Agent) startClusterWatches(ctx context.Context, forward func(input) bool) error {
	c := a.cluster
	pods, err := c.PodEndpoints(ctx)
	if err != nil {
		return fmt.Errorf("watch pods: %w", err)
	}
	nss, err := c.Namespaces(ctx)
	if err != nil {
		return fmt.Errorf("watch namespaces: %w", err)
	}
	nps, err := c.NetworkPolicies(ctx)
	if err != nil {
		return fmt.Errorf("watch network policies: %w", err)
	}
	a.watchers = append(a.watchers, pods.Stop, nss.Stop, nps.Stop)
	a.wg.Go(func() {
		for ev := range pods.Events() {
			if !forward(clusterInput(kindPodEndpoint, ev, func(p kubernetes.PodEndpoint) Object { return podWorkload(p) })) {
				return
			}
		}
	})
	a.wg.Go(func() {
		for ev := range nss.Events() {
			in := clusterInput(kindNamespace, ev, func(n *corev1.Namespace) Object {
				return &k8sObject{kind: kindNamespace, meta: resources.ObjectMeta{Name: n.Name}, ns: n}
			})
			if !forward(in) {
				return
			}
		}
	})
	a.wg.Go(func() {
		for ev := range nps.Events() {
			in := clusterInput(kindK8sPolicy, ev, func(n *networkingv1.NetworkPolicy) Object {
				return &k8sObject{kind: kindK8sPolicy, meta: resources.ObjectMeta{Namespace: n.Namespace, Name: n.Name}, np: n}
			})
			if !forward(in) {
				return
			}
		}
	})
	return nil
}

// applyK8s records a namespace or a Kubernetes NetworkPolicy.
func (r *reconciler) applyK8s(o *k8sObject, del bool) {
	key := resources.Key{Kind: o.kind, Namespace: o.meta.Namespace, Name: o.meta.Name}
	switch o.kind {
	case kindNamespace:
		if del {
			r.compiler.DeleteNamespace(o.meta.Name)
		} else {
			r.compiler.SetNamespace(acl.Namespace{Name: o.ns.Name, Labels: o.ns.Labels})
		}
		r.dirty.policy = true
	case kindK8sPolicy:
		r.applyPolicy(key, del, func() (acl.Policy, error) { return policyconv.NetworkPolicy(o.np) })
	}
}

// mergeLocal keeps what the CNI plugin registered for a local pod (veth,
// MAC, container ID) when the pod stream reports the pod.
func (r *reconciler) mergeLocal(w *WorkloadEndpoint) {
	if w.Spec.Node != r.node {
		return
	}
	if cur, ok := r.weps[KeyOfObject(w)]; ok {
		if w.Spec.InterfaceName == "" {
			w.Spec.InterfaceName = cur.Spec.InterfaceName
		}
		if w.Spec.MAC == "" {
			w.Spec.MAC = cur.Spec.MAC
		}
		if w.Spec.ContainerID == "" {
			w.Spec.ContainerID = cur.Spec.ContainerID
		}
	}
}

// endpointFile keeps this node's endpoint registrations (Kubernetes
// datastore), by container ID.
type endpointFile struct {
	mu   sync.Mutex
	path string
}

const endpointsFileName = "endpoints.json"

func (f *endpointFile) load() (map[string]*WorkloadEndpoint, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]*WorkloadEndpoint{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("endpoints file: %w", err)
	}
	var list []*WorkloadEndpoint
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("endpoints file %s: %w", f.path, err)
	}
	m := make(map[string]*WorkloadEndpoint, len(list))
	for _, w := range list {
		m[w.Spec.ContainerID] = w
	}
	return m, nil
}

func (f *endpointFile) save(m map[string]*WorkloadEndpoint) error {
	list := make([]*WorkloadEndpoint, 0, len(m))
	for _, w := range m {
		list = append(list, w)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Spec.ContainerID < list[j].Spec.ContainerID })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
		return fmt.Errorf("endpoints file: %w", err)
	}
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("endpoints file: %w", err)
	}
	return os.Rename(tmp, f.path)
}

// update changes the registrations under the file's lock.
func (f *endpointFile) update(fn func(m map[string]*WorkloadEndpoint)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.load()
	if err != nil {
		return err
	}
	fn(m)
	return f.save(m)
}
