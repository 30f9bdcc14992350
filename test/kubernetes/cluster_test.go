package kubernetes_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/policyconv"
	"github.com/tabbynet/tabby/control/resources"
)

// objectEvent returns the next Added, Modified or Deleted event, skipping
// Error events.
func objectEvent[T any](t *testing.T, s *kubernetes.Stream[T]) kubernetes.Event[T] {
	t.Helper()
	for {
		ev := datastoretest.Receive(t, s.Events())
		switch ev.Type {
		case datastore.Error:
			t.Logf("error event: %v", ev.Err)
		case datastore.Synced:
			t.Fatalf("unexpected Synced")
		default:
			return ev
		}
	}
}

// synced drains a new stream's initial list and returns its names.
func synced[T any](t *testing.T, s *kubernetes.Stream[T], name func(T) string) []string {
	t.Helper()
	var names []string
	for {
		ev := datastoretest.Receive(t, s.Events())
		switch ev.Type {
		case datastore.Synced:
			return names
		case datastore.Added:
			names = append(names, name(ev.Object))
		default:
			t.Fatalf("%s before Synced", ev.Type)
		}
	}
}

func nameOf[T metav1.Object](o T) string {
	if o.GetNamespace() != "" {
		return o.GetNamespace() + "/" + o.GetName()
	}
	return o.GetName()
}

var namespaceSeq atomic.Int64

// uniqueNamespace returns a namespace name no other call returns: without
// a namespace controller a deleted namespace stays Terminating for good,
// so repeated runs (-count) cannot reuse names.
func uniqueNamespace(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid()%100000, namespaceSeq.Add(1))
}

func stop[T any](t *testing.T, s *kubernetes.Stream[T]) {
	t.Cleanup(s.Stop)
}

// TestCluster: the agent's streams of the cluster's own objects see a
// Namespace, a ServiceAccount, a Pod with labels, named ports and
// status.podIPs, a NetworkPolicy and a Node come and go.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	d := newDatastore(t, kubernetes.Config{})
	cs := d.Clientset()
	c := d.Cluster()
	start := time.Now()

	namespaces, err := c.Namespaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop(t, namespaces)
	pods, err := c.Pods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop(t, pods)
	endpoints, err := c.PodEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop(t, endpoints)
	policies, err := c.NetworkPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop(t, policies)
	nodes, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop(t, nodes)
	accounts, err := c.ServiceAccounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop(t, accounts)
	initial := synced(t, namespaces, nameOf[*corev1.Namespace])
	t.Logf("initial namespaces %v", initial)
	synced(t, pods, nameOf[*corev1.Pod])
	synced(t, endpoints, func(e kubernetes.PodEndpoint) string { return e.Name })
	synced(t, policies, nameOf[*networkingv1.NetworkPolicy])
	synced(t, nodes, nameOf[*corev1.Node])
	synced(t, accounts, nameOf[*corev1.ServiceAccount])
	t.Logf("six streams synced in %s", time.Since(start).Round(time.Millisecond))

	nsName := uniqueNamespace("tabby-ct")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName, Labels: map[string]string{"team": "a"}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := objectEvent(t, namespaces); ev.Type != datastore.Added || ev.Object.Name != nsName || ev.Object.Labels["team"] != "a" {
		t.Fatalf("namespace event %s %v", ev.Type, ev.Object)
	}

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: nsName, Labels: map[string]string{"tier": "front"}}}
	if _, err := cs.CoreV1().ServiceAccounts(nsName).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := objectEvent(t, accounts); ev.Type != datastore.Added || nameOf(ev.Object) != nsName+"/web" || ev.Object.Labels["tier"] != "front" {
		t.Fatalf("service account event %s %v", ev.Type, ev.Object)
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: nsName, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName:                     "node-a",
			ServiceAccountName:           "web",
			AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "web", Image: "example.com/web",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9090}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}}},
		},
	}
	created, err := cs.CoreV1().Pods(nsName).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ev := objectEvent(t, pods); ev.Type != datastore.Added || nameOf(ev.Object) != nsName+"/web-0" {
		t.Fatalf("pod event %s %v", ev.Type, ev.Object)
	}
	// No endpoint until the pod has addresses.
	created.Status.Phase = corev1.PodRunning
	created.Status.PodIP = "10.66.0.7"
	created.Status.PodIPs = []corev1.PodIP{{IP: "10.66.0.7"}, {IP: "fd00:66::7"}}
	running, err := cs.CoreV1().Pods(nsName).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ev := objectEvent(t, pods); ev.Type != datastore.Modified || len(ev.Object.Status.PodIPs) != 2 {
		t.Fatalf("pod event %s %v", ev.Type, ev.Object.Status)
	}
	ev := objectEvent(t, endpoints)
	want := kubernetes.PodEndpoint{Namespace: nsName, Name: "web-0", UID: string(created.UID), Node: "node-a",
		Labels: map[string]string{"app": "web"}, ServiceAccount: "web",
		IPs:             []netip.Addr{netip.MustParseAddr("10.66.0.7"), netip.MustParseAddr("fd00:66::7")},
		Ports:           []resources.EndpointPort{{Name: "http", Protocol: "TCP", Port: 8080}, {Name: "dns", Protocol: "UDP", Port: 53}},
		ResourceVersion: running.ResourceVersion}
	if ev.Type != datastore.Added || fmt.Sprintf("%+v", ev.Object) != fmt.Sprintf("%+v", want) {
		t.Fatalf("endpoint event %s\n got %+v\nwant %+v", ev.Type, ev.Object, want)
	}
	// A label change modifies the endpoint.
	running.Labels["version"] = "2"
	if running, err = cs.CoreV1().Pods(nsName).Update(ctx, running, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := objectEvent(t, endpoints); ev.Type != datastore.Modified || ev.Object.Labels["version"] != "2" {
		t.Fatalf("endpoint event %s %+v", ev.Type, ev.Object)
	}
	objectEvent(t, pods)
	// A finished pod is no endpoint any more.
	running.Status.Phase = corev1.PodSucceeded
	if _, err := cs.CoreV1().Pods(nsName).UpdateStatus(ctx, running, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := objectEvent(t, endpoints); ev.Type != datastore.Deleted || ev.Object.Name != "web-0" {
		t.Fatalf("endpoint event %s %+v", ev.Type, ev.Object)
	}
	objectEvent(t, pods)
	if err := cs.CoreV1().Pods(nsName).Delete(ctx, "web-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	// The apiserver may first mark the pod as being deleted.
	ev2 := objectEvent(t, pods)
	if ev2.Type == datastore.Modified && ev2.Object.DeletionTimestamp != nil {
		ev2 = objectEvent(t, pods)
	}
	if ev2.Type != datastore.Deleted || ev2.Object.Name != "web-0" {
		t.Fatalf("pod event %s %s", ev2.Type, nameOf(ev2.Object))
	}

	port := intstr.FromString("http")
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-web", Namespace: nsName},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
			}},
		},
	}
	if _, err := cs.NetworkingV1().NetworkPolicies(nsName).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pev := objectEvent(t, policies)
	if pev.Type != datastore.Added || nameOf(pev.Object) != nsName+"/allow-web" {
		t.Fatalf("policy event %s %v", pev.Type, pev.Object)
	}
	if p, err := policyconv.NetworkPolicy(pev.Object); err != nil || p.Name != policyconv.NamePrefix+"allow-web" {
		t.Fatalf("converted %+v, %v", p, err)
	}

	kn := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{"zone": "a"}},
		Spec: corev1.NodeSpec{PodCIDRs: []string{"10.66.0.0/24"}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, kn, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := objectEvent(t, nodes); ev.Type != datastore.Added || ev.Object.Name != "node-a" || ev.Object.Labels["zone"] != "a" {
		t.Fatalf("node event %s %v", ev.Type, ev.Object)
	}
	if err := cs.CoreV1().Nodes().Delete(ctx, "node-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := objectEvent(t, nodes); ev.Type != datastore.Deleted || ev.Object.Name != "node-a" {
		t.Fatalf("node event %s %v", ev.Type, ev.Object)
	}

	// A second subscription shares the informer: it gets the cache.
	again, err := c.Namespaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Stop()
	if names := synced(t, again, nameOf[*corev1.Namespace]); len(names) != len(initial)+1 {
		t.Fatalf("second subscription listed %v", names)
	}
	// Stop ends one stream only.
	again.Stop()
	if _, ok := <-again.Events(); ok {
		t.Fatal("stream open after Stop")
	}
	if err := cs.CoreV1().Namespaces().Delete(ctx, nsName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Without a namespace controller the namespace only starts terminating.
	if ev := objectEvent(t, namespaces); ev.Type != datastore.Modified || ev.Object.Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("namespace event %s %v", ev.Type, ev.Object.Status)
	}
}

// TestClusterReconnect: the informers' connection is cut; the streams
// report the broken watch, and once it is back, the changes made
// meanwhile, without a restart.
func TestClusterReconnect(t *testing.T) {
	ctx := context.Background()
	direct := newDatastore(t, kubernetes.Config{})
	d, px := viaProxy(t, fast)
	namespaces, err := d.Cluster().Namespaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer namespaces.Stop()
	synced(t, namespaces, nameOf[*corev1.Namespace])

	px.Cut()
	if ev := datastoretest.Receive(t, namespaces.Events()); ev.Type != datastore.Error {
		t.Fatalf("while cut: %s", ev.Type)
	} else {
		t.Logf("error event: %v", ev.Err)
	}
	cs := direct.Clientset()
	names := []string{uniqueNamespace("tabby-rc"), uniqueNamespace("tabby-rc")}
	for _, name := range names {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	px.Restore()
	got := map[string]bool{}
	for len(got) < 2 {
		ev := objectEvent(t, namespaces)
		if ev.Type != datastore.Added {
			t.Fatalf("after reconnect: %s %s", ev.Type, ev.Object.Name)
		}
		got[ev.Object.Name] = true
	}
	if !got[names[0]] || !got[names[1]] {
		t.Fatalf("after reconnect: %v", got)
	}
}
