package agent

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
)

func pod(ns, name, node, ip string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
			PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

// TestAgentClusterObjects runs the agent with a Cluster source of
// Kubernetes objects (control/datastore/kubernetes over client-go's fake
// clientset standing in for the apiserver; IPAM and the Tabby resources on
// etcd): pods are the workload endpoints, Namespaces label them, and a
// networking.k8s.io NetworkPolicy converted by policyconv decides traffic
// to the local pod registered through the endpoint API, whose
// registration survives in the endpoints file.
func TestAgentClusterObjects(t *testing.T) {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(8080)
	client := fake.NewSimpleClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"}}},
		pod("shop", "db-1", "n2", "10.70.99.5", map[string]string{"app": "db"}),
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
				}},
			}},
	)
	cluster := kubernetes.NewCluster(client, kubernetes.ClusterOptions{})
	t.Cleanup(cluster.Stop)
	a, dp := startTablesAgentWithOptions(t, nil, nil, func(o *Options) { o.Cluster = cluster })
	ctx := context.Background()

	resp, err := NewClient(a.Addr("cni")).AddEndpoint(ctx, EndpointRequest{ContainerID: "k8s-c1", Namespace: "shop",
		Pod: "web-1", InterfaceName: "tabweb1", Labels: map[string]string{"app": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Name != "web-1" {
		t.Errorf("endpoint named %q, want the pod's name", resp.Name)
	}
	web := netip.MustParsePrefix(resp.IPs[0]).Addr()
	// kubelet reports the pod's address.
	if _, err := client.CoreV1().Pods("shop").Create(ctx, pod("shop", "web-1", "n1", web.String(),
		map[string]string{"app": "web"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(src string, dport uint16) acl.Verdict {
		s := netip.MustParseAddr(src)
		p := &acl.Packet{Family: acl.IPv4, Proto: 6, SrcPort: 40000, DstPort: dport,
			Src4: binary.BigEndian.Uint32(s.AsSlice()), Dst4: binary.BigEndian.Uint32(web.AsSlice())}
		return dp.t.Load().Policy.Check(p).Verdict
	}
	waitFor(t, "the NetworkPolicy and the remote pod in the policy", 10*time.Second, func() bool {
		return check("10.70.99.5", 8080) == acl.Allowed && check("192.0.2.99", 8080) == acl.Denied
	})
	if v := check("10.70.99.5", 9090); v != acl.Denied {
		t.Errorf("db to web:9090 %v, want deny", v)
	}
	st := a.Status(ctx)
	if !st.Ready || st.Endpoints.Local != 1 || st.Endpoints.Total != 2 || len(st.Policy.Errors) > 0 {
		t.Errorf("status: %+v", st)
	}
	if eps := st.Endpoints.List; len(eps) != 1 || eps[0].Spec.InterfaceName != "tabweb1" || eps[0].Spec.ContainerID != "k8s-c1" {
		t.Errorf("local endpoint lost its registration: %+v", eps)
	}
	b, err := os.ReadFile(filepath.Join(a.Config().StateDir, endpointsFileName))
	if err != nil || !strings.Contains(string(b), "k8s-c1") {
		t.Errorf("endpoints file: %v %s", err, b)
	}
	// Deleting the NetworkPolicy lifts it (the compiler knows it as
	// "knp.default.web", not by its key).
	if err := client.NetworkingV1().NetworkPolicies("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the NetworkPolicy lifted", 10*time.Second, func() bool {
		return check("192.0.2.99", 8080) == acl.Allowed && check("10.70.99.5", 9090) == acl.Allowed
	})
	dr, err := NewClient(a.Addr("cni")).DeleteEndpoint(ctx, "k8s-c1")
	if err != nil || len(dr.Released) != 1 || len(dr.Endpoints) != 1 {
		t.Errorf("delete: %v %+v", err, dr)
	}
}
