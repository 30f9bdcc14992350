// Package kubernetes is the Kubernetes backend of the datastore: Tabby's
// resources stored as custom resources of API group tabby.dev/v1 (the
// CustomResourceDefinitions in deploy/crds), read and written through the
// kube-apiserver, plus read-only streams of the cluster's own objects
// (Nodes, Pods, Namespaces, NetworkPolicies, ServiceAccounts) for the
// agent.
//
// # Mapping
//
// A Tabby object is already shaped as a Kubernetes object (apiVersion,
// kind, metadata, spec), so it is stored as is, one custom resource per
// object: IPPool "pool-a" is ippools.tabby.dev "pool-a". The apiserver sets
// metadata.uid, creationTimestamp and resourceVersion; everything Tabby
// does not model (managedFields, finalizers, ownerReferences, status) is
// left alone by Update.
//
// Names that are not valid Kubernetes names (IPAM handles may hold
// uppercase letters and '_') are stored under "tabby-" followed by the
// first 40 hex digits of their SHA-256, with the real name in the
// annotation tabby.dev/name; every method takes and returns the real name.
//
// # Compare-and-swap
//
// An object's resourceVersion is the apiserver's. Update is a JSON patch
// that replaces spec, labels and annotations and sets
// metadata.resourceVersion to the caller's: the apiserver refuses it with
// 409 Conflict unless that is the stored version, so each Update is one
// atomic compare-and-swap. Delete passes the version as a precondition.
// The datastore's typed errors are returned for 404, 409 and
// AlreadyExists; a 422 from the CRD's schema becomes a
// *resources.ValidationError. There are no multi-object transactions: the
// backend does not implement datastore.Transactor, and IPAM uses its
// compare-and-swap path.
//
// # Watches
//
// Watch is a list then a watch from the list's resourceVersion, with
// bookmarks so that the version it resumes from stays recent. A watch the
// server ends (its timeout) resumes from the last version seen without a
// relist. A watch that fails (the apiserver unreachable, a failed liveness
// probe) or whose version has expired (410 Gone, "too old resource
// version") reports an Error event, backs off, relists, reports the
// difference from what it had reported, then Synced — the datastore
// package's contract, which the etcd backend also keeps.
//
// # Other kinds
//
// Objects (objects.go) gives the same storage, compare-and-swap and watch
// for the tabby.dev kinds package resources does not define — the agent's
// AgentConfiguration, Tier, NetworkPolicy, GlobalNetworkPolicy and
// WorkloadEndpoint — on JSON documents, so the agent's object store
// (agent.KubernetesObjects) lives on Kubernetes without this package
// importing the agent.
//
// # CRDs
//
// deploy/crds holds one CustomResourceDefinition per tabby.dev kind,
// generated from the Go types by package crdgen (run
// go test ./control/datastore/kubernetes/ -run TestCRDs -update after
// changing a type; the test fails while they differ). InstallCRDs applies
// them and waits until the apiserver serves them.
//
// # Cluster objects
//
// Cluster (see cluster.go) wraps one client-go SharedInformerFactory. Each
// subscription (Nodes, Namespaces, Pods, PodEndpoints, NetworkPolicies,
// ServiceAccounts) is an event stream with the Watch contract: every cached
// object as Added, then Synced, then changes in order. Informers relist by
// themselves after an expired version or a lost connection; the stream
// reports an Error when their watch breaks and then the difference as
// Added, Modified and Deleted events (no second Synced).
//
// Datastore and Cluster are safe for concurrent use.
package kubernetes
