package kubernetes_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
)

// fakeCluster returns a fake clientset whose watches report when they
// start (the fake tracker drops what changes between an informer's list
// and its watch), and a Cluster on it.
func fakeCluster(t *testing.T) (*fake.Clientset, *kubernetes.Cluster, chan string) {
	t.Helper()
	client := fake.NewClientset()
	watching := make(chan string, 16)
	client.PrependWatchReactor("*", func(action clienttesting.Action) (bool, watch.Interface, error) {
		w, err := client.Tracker().Watch(action.GetResource(), action.GetNamespace())
		if err != nil {
			return false, nil, err
		}
		watching <- action.GetResource().Resource
		return true, w, nil
	})
	c := kubernetes.NewCluster(client, kubernetes.ClusterOptions{})
	t.Cleanup(c.Stop)
	return client, c, watching
}

func next[T any](t *testing.T, s *kubernetes.Stream[T]) kubernetes.Event[T] {
	t.Helper()
	return datastoretest.Receive(t, s.Events())
}

func none[T any](t *testing.T, s *kubernetes.Stream[T]) {
	t.Helper()
	select {
	case ev := <-s.Events():
		t.Fatalf("unexpected %s event %+v", ev.Type, ev.Object)
	case <-time.After(100 * time.Millisecond):
	}
}

func waitWatch(t *testing.T, watching chan string, resource string) {
	t.Helper()
	for {
		select {
		case r := <-watching:
			if r == resource {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no watch of %s", resource)
		}
	}
}

func describeNode(ev kubernetes.Event[*corev1.Node]) string {
	if ev.Object == nil {
		return ev.Type.String()
	}
	return fmt.Sprintf("%s %s %s", ev.Type, ev.Object.Name, ev.Object.Labels["zone"])
}

func TestClusterNodes(t *testing.T) {
	ctx := context.Background()
	n1 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"zone": "a"}}}
	client, c, watching := fakeCluster(t)
	if _, err := client.CoreV1().Nodes().Create(ctx, n1, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Added n1 a", "Synced"} {
		if got := describeNode(next(t, s)); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	waitWatch(t, watching, "nodes")
	n2 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", ResourceVersion: "2"}}
	if _, err := client.CoreV1().Nodes().Create(ctx, n2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n1 = n1.DeepCopy()
	n1.Labels["zone"] = "b"
	n1.ResourceVersion = "3"
	if _, err := client.CoreV1().Nodes().Update(ctx, n1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Added n2 ", "Modified n1 b", "Deleted n2 "} {
		if got := describeNode(next(t, s)); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}

	// A second subscriber gets the cache, then Synced.
	s2, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Added n1 b", "Synced"} {
		if got := describeNode(next(t, s2)); got != want {
			t.Fatalf("second subscriber: got %s, want %s", got, want)
		}
	}
	s2.Stop()
	s2.Stop()
	if _, ok := <-s2.Events(); ok {
		t.Fatal("events open after Stop")
	}
	// Stopping the cluster ends the others.
	c.Stop()
	for range s.Events() {
	}
	if _, err := c.Nodes(ctx); err == nil {
		t.Fatal("subscribed to a stopped cluster")
	}
}

func TestClusterPodEndpoints(t *testing.T) {
	ctx := context.Background()
	client, c, watching := fakeCluster(t)
	eps, err := c.PodEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer eps.Stop()
	if ev := next(t, eps); ev.Type != datastore.Synced {
		t.Fatalf("first event %s", ev.Type)
	}
	waitWatch(t, watching, "pods")
	pods := client.CoreV1().Pods("ns")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", ResourceVersion: "1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "n1"}}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	none(t, eps) // no address yet
	pod = pod.DeepCopy()
	pod.ResourceVersion = "2"
	pod.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.1"}}
	if _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, eps); ev.Type != datastore.Added || fmt.Sprint(ev.Object.IPs) != "[10.0.0.1]" || ev.Object.Node != "n1" {
		t.Fatalf("%s %+v", ev.Type, ev.Object)
	}
	pod = pod.DeepCopy()
	pod.ResourceVersion = "3"
	pod.Labels = map[string]string{"app": "api"}
	if _, err := pods.Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, eps); ev.Type != datastore.Modified || ev.Object.Labels["app"] != "api" {
		t.Fatalf("%s %+v", ev.Type, ev.Object)
	}
	pod = pod.DeepCopy()
	pod.ResourceVersion = "4"
	pod.Status.Phase = corev1.PodFailed
	if _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, eps); ev.Type != datastore.Deleted || ev.Object.Name != "p" {
		t.Fatalf("%s %+v", ev.Type, ev.Object)
	}
	if err := pods.Delete(ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	none(t, eps) // already gone as an endpoint
}

func TestPodEndpointOf(t *testing.T) {
	base := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "9", Labels: map[string]string{"a": "b"}},
			Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "sa", Containers: []corev1.Container{
				{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}, {ContainerPort: 81}}},
				{Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}},
			}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}},
		}
	}
	tests := []struct {
		name string
		mod  func(*corev1.Pod)
		ok   bool
		ips  string
	}{
		{"running", func(*corev1.Pod) {}, true, "[10.0.0.1 fd00::1]"},
		{"podIP only", func(p *corev1.Pod) { p.Status.PodIPs = nil }, true, "[10.0.0.1]"},
		{"pending without address", func(p *corev1.Pod) { p.Status = corev1.PodStatus{Phase: corev1.PodPending} }, false, ""},
		{"host network", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, false, ""},
		{"succeeded", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }, false, ""},
		{"failed", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }, false, ""},
		{"mapped v4", func(p *corev1.Pod) { p.Status.PodIPs = []corev1.PodIP{{IP: "::ffff:10.0.0.2"}} }, true, "[10.0.0.2]"},
		{"garbage address", func(p *corev1.Pod) { p.Status.PodIPs = []corev1.PodIP{{IP: "x"}}; p.Status.PodIP = "" }, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base()
			tt.mod(p)
			ep, ok := kubernetes.PodEndpointOf(p)
			if ok != tt.ok {
				t.Fatalf("ok = %v", ok)
			}
			if !ok {
				return
			}
			want := kubernetes.PodEndpoint{Namespace: "ns", Name: "p", UID: "u", Node: "n1", Labels: map[string]string{"a": "b"},
				ServiceAccount: "sa", Ports: []resources.EndpointPort{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "dns", Protocol: "UDP", Port: 53}},
				ResourceVersion: "9"}
			if fmt.Sprint(ep.IPs) != tt.ips {
				t.Fatalf("IPs %v, want %s", ep.IPs, tt.ips)
			}
			ep.IPs = nil
			if fmt.Sprintf("%+v", ep) != fmt.Sprintf("%+v", want) {
				t.Fatalf("\n got %+v\nwant %+v", ep, want)
			}
		})
	}
}
