package lab

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// Pod namespaces and labels the lab gives its pods.
const (
	NamespaceA = "lab-a"
	NamespaceB = "lab-b"
	// LabelApp is app=lab on every lab pod, LabelRole role=web or db.
	LabelApp  = "app"
	LabelRole = "role"
)

// podMeta returns the namespace and labels of pod j (1-based) of node i
// (1-based): odd pods in lab-a, even in lab-b; role web when i+j is even.
func podMeta(i, j int) (string, map[string]string) {
	ns := NamespaceA
	if j%2 == 0 {
		ns = NamespaceB
	}
	role := "web"
	if (i+j)%2 == 1 {
		role = "db"
	}
	return ns, map[string]string{LabelApp: "lab", LabelRole: role}
}

// OpenStore connects to the lab's datastore (its etcd, over the relay's
// unix socket) as `tabby apply` does. Close it when done.
func OpenStore(st *State) (*agent.Store, func() error, error) {
	if st.EtcdSocket == "" {
		return nil, nil, fmt.Errorf("lab %s: no etcd socket in its state", st.Config.Name)
	}
	c := agent.DefaultConfig()
	c.Datastore = agent.DatastoreConfig{Type: "etcd", EtcdEndpoints: []string{"unix://" + st.EtcdSocket}}
	s, closeFn, err := agent.OpenStore(c)
	if err != nil {
		return nil, nil, fmt.Errorf("lab %s: datastore: %w", st.Config.Name, err)
	}
	return s, closeFn, nil
}

// EtcdEndpoint is what to set TABBY_ETCD_ENDPOINTS to for `tabby apply`,
// `tabby get` ... against the lab from the host.
func (st *State) EtcdEndpoint() string { return "unix://" + st.EtcdSocket }

// update reads the object at key, lets mutate change it and writes it
// back, retrying on conflicts (agents write Nodes too).
func update(ctx context.Context, s *agent.Store, key resources.Key, mutate func(agent.Object)) error {
	for try := 0; ; try++ {
		obj, err := s.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("get %s: %w", key, err)
		}
		mutate(obj)
		_, err = s.Update(ctx, obj)
		if err == nil {
			return nil
		}
		if !datastore.IsConflict(err) || try == 10 {
			return fmt.Errorf("update %s: %w", key, err)
		}
	}
}

// labelEndpoint sets the labels of a pod's WorkloadEndpoint, as an
// orchestrator does in etcd mode (the CNI plugin registers endpoints
// without labels).
func labelEndpoint(ctx context.Context, s *agent.Store, node string, p Pod) error {
	key := resources.Key{Kind: agent.KindWorkloadEndpoint, Namespace: p.Namespace,
		Name: agent.WorkloadEndpointName(node, p.Name, "eth0", p.ContainerID)}
	return update(ctx, s, key, func(o agent.Object) {
		m := o.Meta()
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		maps.Copy(m.Labels, p.Labels)
	})
}

// labelNode sets a label on a Node (the agents keep labels they did not
// set).
func labelNode(ctx context.Context, s *agent.Store, node, k, v string) error {
	return update(ctx, s, resources.Key{Kind: resources.KindNode, Name: node}, func(o agent.Object) {
		m := o.Meta()
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		m.Labels[k] = v
	})
}

// routerPeers are the BGPPeers that make the router each subnet's peer.
func routerPeers(subnets int) []agent.Object {
	var out []agent.Object
	for s := 1; s <= subnets; s++ {
		out = append(out, agent.Wrap(&resources.BGPPeer{
			ObjectMeta: resources.ObjectMeta{Name: fmt.Sprintf("lab-router-subnet%d", s)},
			Spec: resources.BGPPeerSpec{NodeSelector: fmt.Sprintf("%s == '%d'", LabelSubnet, s),
				PeerIP: subnetGW(s).Addr().String(), ASNumber: resources.DefaultASNumber},
		}))
	}
	return out
}

// applyAll creates or replaces objs.
func applyAll(ctx context.Context, s *agent.Store, objs []agent.Object) error {
	for _, o := range objs {
		o.Default()
		if err := o.Validate(); err != nil {
			return err
		}
		if _, _, err := s.Apply(ctx, o); err != nil {
			return fmt.Errorf("apply %s: %w", agent.KeyOfObject(o), err)
		}
	}
	return nil
}

// deleteAll deletes objs; absent ones are not an error.
func deleteAll(ctx context.Context, s *agent.Store, objs []agent.Object) error {
	var errs []error
	for _, o := range objs {
		if _, err := s.Delete(ctx, agent.KeyOfObject(o), ""); err != nil && !datastore.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s: %w", agent.KeyOfObject(o), err))
		}
	}
	return errors.Join(errs...)
}

// decodeObjects parses YAML objects (the lab's policies).
func decodeObjects(yaml string) []agent.Object {
	objs, err := agent.Decode([]byte(yaml))
	if err != nil {
		panic(fmt.Sprintf("lab: bad built-in objects: %v\n%s", err, yaml)) // a bug in this package
	}
	return objs
}

// waitPolicies waits until every agent has published a policy built from
// exactly want policies (nothing pending), then lets the kernel
// dataplane's rules settle for a moment.
func waitPolicies(ctx context.Context, nodes []Node, want int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, n := range nodes {
		cli := agent.NewClient(n.Socket)
		var last string
		for {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			s, err := cli.Status(cctx)
			cancel()
			if err == nil && s.Policy.Policies == want && !s.Policy.Pending && len(s.Policy.Errors) == 0 {
				break
			}
			switch {
			case err != nil:
				last = err.Error()
			case len(s.Policy.Errors) > 0:
				last = "errors: " + strings.Join(s.Policy.Errors, "; ")
			default:
				last = fmt.Sprintf("%d policies, pending %v", s.Policy.Policies, s.Policy.Pending)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("agent %s: policy not published after %s (want %d policies): %s", n.Name, within,
					want, last)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(100 * time.Millisecond):
	}
	return nil
}

// waitLabels waits until every agent lists its local endpoints with the
// lab's labels.
func waitLabels(ctx context.Context, nodes []Node, pods []Pod, within time.Duration) error {
	want := map[string]map[string]string{}
	for _, p := range pods {
		want[p.ContainerID] = p.Labels
	}
	deadline := time.Now().Add(within)
	for _, n := range nodes {
		cli := agent.NewClient(n.Socket)
		for {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			eps, err := cli.Endpoints(cctx)
			cancel()
			ok := err == nil
			for _, e := range eps {
				if l, mine := want[e.ContainerID]; mine && !maps.Equal(pick(e.Labels, l), l) {
					ok = false
				}
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("agent %s: pod labels not seen after %s (err %v)", n.Name, within, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// pick returns the entries of m whose keys are in keys.
func pick(m, keys map[string]string) map[string]string {
	out := map[string]string{}
	for k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

// agentClient is the endpoint API client of node n's agent.
func agentClient(n Node) *agent.Client { return agent.NewClient(n.Socket) }
