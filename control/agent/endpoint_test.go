package agent

import (
	"context"
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/resources"
)

// TestRepeatedAddKeepsLabels: an orchestrator labels the WorkloadEndpoint
// the CNI plugin registered without labels (as bench/lab does in etcd
// mode); a repeated ADD (runtimes retry ADD) keeps those labels, the
// annotations, ports and service account, in the datastore and in the
// published policy. An ADD that carries labels replaces them, and a new
// container under the same endpoint name starts from its request.
func TestRepeatedAddKeepsLabels(t *testing.T) {
	a, dp := startTablesAgent(t)
	ctx := context.Background()
	cli := NewClient(a.Addr("cni"))
	req := EndpointRequest{ContainerID: "relabel-1", Namespace: "shop", Pod: "web-1", InterfaceName: "tabrl1"}
	resp, err := cli.AddEndpoint(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParsePrefix(resp.IPs[0]).Addr()
	key := resources.Key{Kind: KindWorkloadEndpoint, Namespace: "shop", Name: resp.Name}
	stored := func() *WorkloadEndpoint {
		t.Helper()
		o, err := a.Store().Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*WorkloadEndpoint)
	}
	policyLabels := func() map[string]string {
		t.Helper()
		p := dp.t.Load().Policy
		idx, ok := p.EndpointOf(ip)
		if !ok {
			t.Fatalf("%s not in the published policy", ip)
		}
		return p.Endpoint(idx).Labels
	}
	orch := map[string]string{"app": "web", "role": "frontend"}

	// The orchestrator's update.
	w := stored()
	w.Labels = maps.Clone(orch)
	w.Annotations = map[string]string{"lab.tabby.dev/owner": "bench"}
	w.Spec.Ports = []resources.EndpointPort{{Name: "http", Protocol: "TCP", Port: 80}}
	w.Spec.ServiceAccountName = "web-sa"
	if _, err := a.Store().Update(ctx, w); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "orchestrator labels in the policy", 10*time.Second, func() bool {
		return maps.Equal(policyLabels(), orch)
	})

	// The CNI plugin's retry: no labels.
	again, err := cli.AddEndpoint(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(again.Labels, orch) {
		t.Errorf("repeated ADD replied labels %v, want %v", again.Labels, orch)
	}
	w = stored()
	if !maps.Equal(w.Labels, orch) {
		t.Errorf("repeated ADD: stored labels %v, want %v", w.Labels, orch)
	}
	if w.Annotations["lab.tabby.dev/owner"] != "bench" || len(w.Spec.Ports) != 1 || w.Spec.ServiceAccountName != "web-sa" {
		t.Errorf("repeated ADD: annotations %v, ports %v, service account %q not kept", w.Annotations, w.Spec.Ports,
			w.Spec.ServiceAccountName)
	}
	if got := policyLabels(); !maps.Equal(got, orch) {
		t.Errorf("repeated ADD: policy labels %v, want %v", got, orch)
	}

	// An ADD with labels replaces them.
	req.Labels = map[string]string{"app": "api"}
	if _, err := cli.AddEndpoint(ctx, req); err != nil {
		t.Fatal(err)
	}
	if w = stored(); !maps.Equal(w.Labels, req.Labels) || w.Annotations["lab.tabby.dev/owner"] != "bench" {
		t.Errorf("ADD with labels: stored labels %v, annotations %v", w.Labels, w.Annotations)
	}
	if got := policyLabels(); !maps.Equal(got, req.Labels) {
		t.Errorf("ADD with labels: policy labels %v, want %v", got, req.Labels)
	}

	// Another container of the same pod (a new sandbox): its own request.
	resp2, err := cli.AddEndpoint(ctx, EndpointRequest{ContainerID: "relabel-2", Namespace: "shop", Pod: "web-1",
		InterfaceName: "tabrl2"})
	if err != nil {
		t.Fatal(err)
	}
	if resp2.Name != resp.Name {
		t.Fatalf("endpoint name %q, want %q", resp2.Name, resp.Name)
	}
	if w = stored(); len(w.Labels) != 0 || w.Spec.ContainerID != "relabel-2" || w.Annotations != nil {
		t.Errorf("new container: stored labels %v, annotations %v, container %q", w.Labels, w.Annotations,
			w.Spec.ContainerID)
	}
}
