// Package agent is Tabby's node agent (`tabby agent`): what Calico splits
// into Felix, BIRD and the IPAM plugin, in one process. It registers the
// node, assigns pod addresses for the CNI plugin, compiles network policy
// and publishes it to the dataplane, programs routes, runs the BGP speaker,
// and serves health, readiness and Prometheus metrics.
//
// # Structure and ownership
//
// Start wires, in order: configuration (below), the datastore (etcd by
// endpoints with optional TLS, or an embedded single-member etcd whose data
// lives in <stateDir>/etcd and whose client URLs are written to
// <stateDir>/etcd-endpoints for the CLI), the default IPPools when none
// exist, the Node resource (addresses; BGP address when BGP runs; VTEP
// address from IPAM and a MAC derived from the node name when a pool uses
// VXLAN), IPAM (control/ipam), the dataplane, the reconciler and its
// watches, and the HTTP servers.
//
// One reconciler goroutine owns the desired state: every Node, IPPool,
// IPAMBlock, BlockAffinity, BGPConfiguration, BGPPeer, HostEndpoint, Tier,
// NetworkPolicy, GlobalNetworkPolicy, WorkloadEndpoint and
// AgentConfiguration, the routes BGP learned, and the acl.Compiler. Watch
// goroutines (one per kind) and BGP's route delivery only send it inputs;
// the endpoint API hands it functions to run (reconciler.do). After a burst
// of inputs it waits Config.Debounce, then compiles and publishes what is
// dirty: the policy (acl.Compiler incremental compile → Tables.SetPolicy,
// or nftables in kernel mode), routes (RouteProgrammer) and BGP
// (control/bgp: Compute then Speaker.Reconcile). Nothing is published
// before each of its inputs has been listed once (a partial view could
// allow traffic a policy not yet seen denies); until then the afxdp
// dataplane denies every forwarded packet (EnforcePolicy). Other goroutines
// read what it publishes: an atomic Status and a heartbeat.
//
// When the datastore is unreachable the watches report errors and retry
// with back-off; the reconciler keeps its state, the dataplane keeps
// forwarding with the last published tables, /readyz fails naming the
// kinds out of sync, and /healthz stays OK. When the datastore returns, the
// watches relist and report the difference, and the agent is ready again.
//
// # Configuration
//
// Keys (see ConfigKeys; `tabby agent -h` lists them) come from, in order of
// precedence: environment variables TABBY_<KEY> > command-line flags >
// the YAML file given by --config or TABBY_CONFIG > the AgentConfiguration
// "node.<nodeName>" > the AgentConfiguration "default" > defaults. Keys
// that say how to reach the datastore (nodeName, datastoreType,
// etcdEndpoints, etcdCertFile, etcdKeyFile, etcdCAFile, etcdPrefix,
// kubeconfig, stateDir, netns) cannot come from the datastore. Errors name
// the source and the key: TABBY_DATAPLANE="foo": must be afxdp or kernel;
// agent.yaml: dataplane="foo": ...; AgentConfiguration "node.n1":
// spec.dataplane="foo": .... A datastore change of logLevel applies at
// once; other changes are logged and take effect at the next start.
//
//	key (file, spec)     env                      default
//	nodeName             TABBY_NODENAME           host name
//	datastoreType        TABBY_DATASTORE          etcd (or kubernetes)
//	etcdEndpoints        TABBY_ETCD_ENDPOINTS     none: embedded etcd
//	etcdCertFile/KeyFile/CAFile  TABBY_ETCD_CERT_FILE, _KEY_FILE, _CA_FILE
//	etcdPrefix           TABBY_ETCD_PREFIX        /tabby/v1/
//	kubeconfig           TABBY_KUBECONFIG         in-cluster
//	stateDir             TABBY_STATE_DIR          /var/lib/tabby
//	netns                TABBY_NETNS              the agent's namespace
//	dataplane            TABBY_DATAPLANE          afxdp (or kernel)
//	interfaces           TABBY_INTERFACES         required for afxdp; uplink first
//	xdpMode              TABBY_XDP_MODE           auto (native, generic)
//	pollMode             TABBY_POLL_MODE          adaptive (busy, interrupt)
//	maxPods              TABBY_MAX_PODS           110 (afxdp: pods' veths the engine serves)
//	podRingSize          TABBY_POD_RING_SIZE      256 (afxdp: 2.25 MiB of frames per pod)
//	burstRingSize        TABBY_BURST_RING_SIZE    4096 (afxdp: frames a busy socket may borrow)
//	podChecksumOffload   TABBY_POD_CHECKSUM_OFFLOAD  auto (off with afxdp; on, off)
//	nodeAddress          TABBY_IP                 first IPv4 address of the uplink
//	ipv4PoolCIDR         TABBY_IPV4POOL_CIDR      none (ipv4PoolBlockSize, ipv4PoolIPIP,
//	                                              ipv4PoolVXLAN, ipv4PoolNATOutgoing)
//	ipv6PoolCIDR         TABBY_IPV6POOL_CIDR      none (ipv6PoolBlockSize)
//	healthListen         TABBY_HEALTH_LISTEN      127.0.0.1:9099 (off)
//	metricsListen        TABBY_METRICS_LISTEN     :9091 (off; same as health: one server)
//	cniSocket            TABBY_CNI_SOCKET         /run/tabby/agent.sock
//	logLevel, logFormat  TABBY_LOG_LEVEL, _FORMAT info, text (json)
//	bgpEnabled           TABBY_BGP                false
//	debounce             TABBY_DEBOUNCE           50ms
//	ipamGCInterval       TABBY_IPAM_GC_INTERVAL   10m (0s: no IPAM garbage collection)
//	ipamGCGracePeriod    TABBY_IPAM_GC_GRACE_PERIOD  15m
//
// # Agent kinds
//
// Package resources seals its Resource interface, so kinds defined here
// cannot be stored through datastore.Datastore. AgentConfiguration, Tier,
// NetworkPolicy, GlobalNetworkPolicy and WorkloadEndpoint (tabby.dev/v1,
// fields after Calico v3) are therefore stored by an ObjectStore: with
// etcd, EtcdObjects keeps them next to the datastore's keys
// (<prefix>networkpolicies/<namespace>/<name>, ...) through
// etcd.Datastore.Objects, with the same compare-and-swap and
// list-then-watch contract; with Kubernetes,
// KubernetesObjects keeps them as custom resources (deploy/crds) through
// kubernetes.Datastore.Objects, with the apiserver's resourceVersions.
// Store gives the CLI and the agent one view of every kind. Moving these
// kinds into package resources would let every datastore backend store
// them unchanged.
//
// With the Kubernetes datastore the agent watches the Tier, NetworkPolicy,
// GlobalNetworkPolicy and AgentConfiguration custom resources, and the
// cluster's own Pods, Namespaces and networking.k8s.io NetworkPolicies
// (see k8s.go). The pods are the workload endpoints: WorkloadEndpoint
// custom resources are neither watched nor written (KubernetesObjects
// refuses the kind with ErrKindUnavailable), and this node's endpoint
// registrations are kept in <stateDir>/endpoints.json, so each pod is
// counted once. A converted Kubernetes NetworkPolicy is named
// "knp.default.<name>" in its namespace; Tabby NetworkPolicy names may not
// start with that prefix.
//
// # Endpoint API (for the CNI plugin)
//
// HTTP/1.1 with JSON bodies on the unix socket Config.CNISocket (mode
// 0600). Client implements it.
//
// POST /v1/endpoints assigns addresses and registers a workload endpoint;
// the reply comes after the policy that includes the endpoint is published
// to the dataplane. Request (EndpointRequest):
//
//	{"containerID": "4f1c...",        // required: the IPAM handle
//	 "namespace": "shop",             // default "default"
//	 "pod": "web-1",                  // Kubernetes pod name, optional
//	 "endpoint": "eth0",              // interface in the container, default eth0
//	 "interfaceName": "tab4f1c8e2a",  // host side of the veth
//	 "mac": "0a:58:0a:41:00:05",      // container interface MAC
//	 "labels": {"app": "web"},        // what policy selectors match
//	 "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
//	 "serviceAccount": "default",
//	 "ipv4": 1, "ipv6": 0,            // addresses per family (default one IPv4)
//	 "pools4": ["pool-a"], "pools6": []}
//
// Reply 200 (EndpointResponse):
//
//	{"name": "n1-k8s-web-1-eth0", "namespace": "shop", "node": "n1",
//	 "containerID": "4f1c...", "pod": "web-1",
//	 "ips": ["10.65.0.5/32"], "gateway4": "169.254.1.1",
//	 "interfaceName": "tab4f1c8e2a", "mac": "0a:58:0a:41:00:05",
//	 "labels": {"app": "web"}, "policyGeneration": 7}
//
// With the afxdp dataplane the reply also comes only after the pod's
// host-side veth (interfaceName) is an engine port and its addresses are
// routed to it, and carries "disableTxChecksumOffload": true (the plugin
// turns TX checksum offload off on the pod's interface: AF_XDP hands the
// engine raw frames without the kernel's checksum-offload state). A veth
// that cannot be attached fails the request with code "dataplane" and a
// message saying why (no such interface in the dataplane's namespace,
// maxPods pods already attached, another XDP program on it, ...).
//
// A repeated POST for the same containerID returns the addresses it already
// has. The endpoint is stored as a WorkloadEndpoint named
// "<node>-k8s-<pod>-<endpoint>" (or "<node>-cni-<hash>" without a pod).
// A repeated POST keeps what an orchestrator owns on the stored endpoint
// of the same container unless the request carries it: labels (unless
// "labels" is non-empty), ports, service account, and always annotations
// (see EndpointRequest.Labels). The CNI plugin sends no labels and
// runtimes retry ADD, so a retry does not wipe labels an orchestrator set
// on the WorkloadEndpoint (etcd datastore).
//
// DELETE /v1/endpoints/{containerID} removes the container's endpoints,
// then releases its addresses; deleting what does not exist succeeds.
// Reply 200 (DeleteResponse):
//
//	{"containerID": "4f1c...", "released": ["10.65.0.5"],
//	 "endpoints": ["shop/n1-k8s-web-1-eth0"]}
//
// GET /v1/endpoints lists this node's endpoints (EndpointResponse
// objects). GET /v1/status is the agent's Status (also on the health
// listener). Errors are ErrorResponse {"error": "...", "code": c} with
// HTTP 400 "invalid", 503 "not_ready" (before the first sync; retry),
// 503 "exhausted" (no free address), 503 "unavailable" (datastore
// unreachable; retry), 500 "dataplane" (afxdp: the pod's interface could
// not be attached or routed), 500 "internal".
//
// # Pods on the afxdp dataplane
//
// The engine starts on the configured interfaces (the uplink); every local
// workload endpoint's host-side veth becomes an engine port at runtime
// (engine.AddInterface), without stopping the engine or disturbing other
// pods' traffic. The reconciler does it while programming routes: before
// the routes, the interfaces of local endpoints that are no port yet are
// attached (also a veth replaced by one of the same name, as a repeated
// CNI ADD does); after them, the ports of endpoints that are gone are
// detached (route first, then engine.RemoveInterface, which copes with a
// veth deleted with its pod). Endpoints of the endpoint API, of the
// datastore and of the endpoints file are treated alike, so a restarted
// agent attaches the pods that exist. A failed attach is retried every
// round and logged once; every attach and detach is logged with the XDP
// and socket modes chosen and counted in
// tabby_dataplane_interface_operations_total. The engine's frame memory is
// sized for maxPods pods (podRingSize-descriptor rings, 256 by default:
// 2.25 MiB each). The pod's
// veth carries ARP and traffic for the node itself to the kernel (proxy
// ARP answers for 169.254.1.1; the steering program passes everything that
// is not for a pod CIDR, and the node's addresses); traffic to pod CIDRs
// goes to the engine. A CNI plugin maps not_ready and
// unavailable to CNI error 11 (try again later).
//
// # Pods on the kernel dataplane
//
// At start the kernel dataplane sets net.ipv4.ip_forward=1, and
// net.ipv6.conf.all.forwarding=1 when an IPv6 pool exists, in its
// namespace (as Felix does): each change is logged, and a sysctl that
// cannot be set fails the start naming it. An IPv6 pool created later
// does not turn IPv6 forwarding on before the next start.
//
// When a local endpoint is removed (DELETE, a datastore deletion, or an
// update that drops some of its addresses), the reconciler's next flush,
// after the policy and routes no longer name it, deletes the kernel
// conntrack entries of those addresses in the dataplane's namespace:
// those whose original source, original destination or reply source (a
// flow DNATed to the pod) is one of them, IPv4 and IPv6 (netlink, one table
// dump per family). A pod that reuses the address thus inherits no flow.
// DELETE replies after it, before the addresses are released. Deleted
// entries are counted in tabby_dataplane_conntrack_deleted_total{family}
// and logged at debug; a failure is logged, counted in
// tabby_dataplane_conntrack_delete_errors_total and not retried (the
// entries then expire by the kernel's timeouts). The afxdp dataplane does
// the same in the engine's userspace conntrack (every worker forgets the
// flows with the address at either end, between batches) and in the
// kernel's, which tracks the pod's traffic to the node itself.
//
// # Health, readiness, metrics
//
// /healthz: the reconciler loop turned within Options.StuckAfter and the
// engine runs. /readyz: every watch synced, a policy published, the engine
// running, the BGP speaker running (when enabled); the body lists what is
// not. /metrics: see the metric list on type metrics (tabby_datastore_*,
// tabby_reconcile_*, tabby_ipam_*, tabby_fib_routes, tabby_policy_*,
// tabby_dataplane_*{reason=...}, tabby_dataplane_conntrack_*, tabby_bgp_*,
// tabby_cni_requests_total).
//
// # Shutdown
//
// Close (on SIGTERM in `tabby agent`) stops accepting endpoint requests,
// waits for those in flight, stops the reconciler and the watches, shuts
// the BGP speaker down gracefully (peers keep this node's routes for their
// graceful-restart time), closes the engine (XDP detached) and the
// servers. It deletes nothing from the datastore, and in kernel mode it
// leaves routes and nftables rules in place, so pods keep their addresses
// and a restarted agent finds everything as it left it.
//
// # Integration seams
//
//   - Routes: RouteProgrammer. afxdp uses FIBRoutes (control/routes:
//     Compute + Userspace, next hops resolved from the kernel's neighbour
//     table in the dataplane namespace, plus a /32 per local endpoint
//     to its veth's engine port); kernel mode uses KernelRoutes
//     (control/routes.Kernel); Options.Routes replaces either.
//   - BGP: control/bgp's Speaker behind bgpSpeaker.
//   - Kubernetes: datastoreType kubernetes (connect) uses
//     control/datastore/kubernetes for the resources, KubernetesObjects
//     for the agent kinds and its Cluster for pods, namespaces and
//     NetworkPolicies; Options.Cluster adds the cluster's objects to an
//     etcd datastore. test/agent (the test/ module) runs agents in this
//     mode against a real kube-apiserver.
package agent
