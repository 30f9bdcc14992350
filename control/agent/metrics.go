package agent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

// Metric names (all prefixed tabby_).
//
//	tabby_agent_ready                          1 when /readyz is OK
//	tabby_datastore_ready                      1 when every watch is synced
//	tabby_datastore_synced{kind}               1 when the kind's watch is synced
//	tabby_datastore_watch_errors_total{kind}   watch breaks
//	tabby_reconcile_total                      publish rounds of the reconciler
//	tabby_reconcile_duration_seconds           their duration
//	tabby_object_errors_total{kind}            objects rejected by the compiler
//	tabby_ipam_blocks                          blocks affine to this node
//	tabby_ipam_addresses_in_use                addresses allocated in them
//	tabby_ipam_addresses_capacity              addresses they hold
//	tabby_ipam_gc_released_total{what}         addresses/blocks/affinities released by IPAM GC
//	tabby_ipam_gc_errors_total                 failed IPAM GC rounds
//	tabby_fib_routes{family}                   routes in the forwarding table
//	tabby_policy_compile_duration_seconds      policy compile time
//	tabby_policy_generation                    generation of the published policy
//	tabby_policy_endpoints                     endpoints in the compiled policy
//	tabby_policy_publish_errors_total          failed publishes
//	tabby_cni_requests_total{method,code}      endpoint API requests
//	tabby_dataplane_packets_total{direction}   rx/tx packets (afxdp)
//	tabby_dataplane_bytes_total{direction}     rx/tx bytes (afxdp)
//	tabby_dataplane_forwarded_total{to}        local/remote/host deliveries
//	tabby_dataplane_drops_total{reason}        drops per reason (afxdp)
//	tabby_dataplane_socket_drops_total{reason} frames lost at the AF_XDP sockets, by the kernel
//	                                           (rx_dropped, rx_ring_full, fill_ring_empty,
//	                                           rx_invalid_descs, tx_invalid_descs) or refused by
//	                                           Tabby (rx_invalid, tx_invalid, tx_ring_full) (afxdp)
//	tabby_dataplane_socket_kicks_total         copy-mode TX sendto kicks (afxdp)
//	tabby_dataplane_frames{state}              UMEM frames: free, fill (lent to the kernel for RX),
//	                                           app (in a batch), tx (in transmission) (afxdp)
//	tabby_dataplane_interfaces{origin}         engine interfaces: config, pod (afxdp)
//	tabby_dataplane_interface_operations_total{op,result,xdp_mode,socket_mode}
//	                                           pods' veths attached/detached (afxdp)
//	tabby_dataplane_conntrack_deleted_total{family}
//	                                           conntrack entries of removed local endpoints deleted (kernel)
//	tabby_dataplane_conntrack_delete_errors_total  failed deletions of them (kernel)
//	tabby_bgp_sessions{state}                  BGP sessions by state
//	tabby_bgp_prefixes{type}                   advertised/learned prefixes
type metrics struct {
	reg *prometheus.Registry

	ready             prometheus.Gauge
	datastoreReady    prometheus.Gauge
	synced            *prometheus.GaugeVec
	watchErrors       *prometheus.CounterVec
	reconciles        prometheus.Counter
	reconcileDuration prometheus.Histogram
	objectErrors      *prometheus.CounterVec
	ipamBlocks        prometheus.Gauge
	ipamInUse         prometheus.Gauge
	ipamCapacity      prometheus.Gauge
	fibRoutes         *prometheus.GaugeVec
	policyCompile     prometheus.Histogram
	policyGeneration  prometheus.Gauge
	policyEndpoints   prometheus.Gauge
	policyErrors      prometheus.Counter
	cniRequests       *prometheus.CounterVec
	gcReleased        *prometheus.CounterVec
	gcErrors          prometheus.Counter
	ports             *prometheus.GaugeVec
	portOps           *prometheus.CounterVec
	conntrackDeleted  *prometheus.CounterVec
	conntrackErrors   prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	g := func(name, help string) prometheus.Gauge {
		x := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		m.reg.MustRegister(x)
		return x
	}
	m.ready = g("tabby_agent_ready", "1 when the agent is ready (/readyz).")
	m.datastoreReady = g("tabby_datastore_ready", "1 when every datastore watch is synced.")
	m.synced = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tabby_datastore_synced",
		Help: "1 when the kind's datastore watch is synced."}, []string{"kind"})
	m.watchErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tabby_datastore_watch_errors_total",
		Help: "Datastore watch breaks per kind."}, []string{"kind"})
	m.reconciles = prometheus.NewCounter(prometheus.CounterOpts{Name: "tabby_reconcile_total",
		Help: "Publish rounds of the reconciler."})
	m.reconcileDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tabby_reconcile_duration_seconds",
		Help: "Duration of a publish round.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)})
	m.objectErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tabby_object_errors_total",
		Help: "Objects rejected by the reconciler (previous version kept)."}, []string{"kind"})
	m.ipamBlocks = g("tabby_ipam_blocks", "IPAM blocks affine to this node.")
	m.ipamInUse = g("tabby_ipam_addresses_in_use", "Addresses allocated in this node's blocks.")
	m.ipamCapacity = g("tabby_ipam_addresses_capacity", "Addresses in this node's blocks.")
	m.fibRoutes = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tabby_fib_routes",
		Help: "Routes in the forwarding table."}, []string{"family"})
	m.policyCompile = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tabby_policy_compile_duration_seconds",
		Help: "Policy compile time.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)})
	m.policyGeneration = g("tabby_policy_generation", "Generation of the published policy.")
	m.policyEndpoints = g("tabby_policy_endpoints", "Endpoints in the compiled policy.")
	m.policyErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "tabby_policy_publish_errors_total",
		Help: "Failed policy publishes."})
	m.cniRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tabby_cni_requests_total",
		Help: "Endpoint API requests by method and HTTP status."}, []string{"method", "code"})
	m.gcReleased = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tabby_ipam_gc_released_total",
		Help: "Addresses, blocks and affinities released by IPAM garbage collection."}, []string{"what"})
	m.gcErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "tabby_ipam_gc_errors_total",
		Help: "Failed IPAM garbage collection rounds."})
	for _, w := range []string{"addresses", "blocks", "affinities"} {
		m.gcReleased.WithLabelValues(w)
	}
	m.ports = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tabby_dataplane_interfaces",
		Help: "Engine interfaces: configured ones (origin config) and pods' veths (origin pod)."}, []string{"origin"})
	m.portOps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tabby_dataplane_interface_operations_total",
		Help: "Pods' veths attached to and detached from the engine, with the XDP and AF_XDP socket modes chosen."},
		[]string{"op", "result", "xdp_mode", "socket_mode"})
	m.conntrackDeleted = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tabby_dataplane_conntrack_deleted_total",
		Help: "Kernel conntrack entries of removed local endpoints' addresses deleted (kernel dataplane)."},
		[]string{"family"})
	m.conntrackErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "tabby_dataplane_conntrack_delete_errors_total",
		Help: "Failed deletions of removed local endpoints' conntrack entries (kernel dataplane)."})
	m.conntrackDeleted.WithLabelValues("ipv4")
	m.conntrackDeleted.WithLabelValues("ipv6")
	m.reg.MustRegister(m.conntrackDeleted, m.conntrackErrors, m.gcReleased, m.gcErrors, m.synced, m.watchErrors, m.reconciles, m.reconcileDuration, m.objectErrors, m.fibRoutes,
		m.policyCompile, m.policyErrors, m.cniRequests, m.ports, m.portOps,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, k := range append(append([]resources.Kind(nil), datastoreKinds...), objectKinds...) {
		m.synced.WithLabelValues(string(k)).Set(0)
	}
	m.fibRoutes.WithLabelValues("ipv4").Set(0)
	m.fibRoutes.WithLabelValues("ipv6").Set(0)
	return m
}

func (m *metrics) setSynced(k resources.Kind, ok bool) {
	m.synced.WithLabelValues(string(k)).Set(boolFloat(ok))
}

// dataplaneCollector reads the engine's counters at scrape time.
type dataplaneCollector struct {
	dp      func() dataplane
	packets *prometheus.Desc
	bytes   *prometheus.Desc
	fwd     *prometheus.Desc
	drops   *prometheus.Desc
	sdrops  *prometheus.Desc
	kicks   *prometheus.Desc
	frames  *prometheus.Desc
}

func newDataplaneCollector(dp func() dataplane) *dataplaneCollector {
	return &dataplaneCollector{
		dp: dp,
		packets: prometheus.NewDesc("tabby_dataplane_packets_total", "Packets received and sent by the dataplane.",
			[]string{"direction"}, nil),
		bytes: prometheus.NewDesc("tabby_dataplane_bytes_total", "Bytes received and sent by the dataplane.",
			[]string{"direction"}, nil),
		fwd: prometheus.NewDesc("tabby_dataplane_forwarded_total", "Packets delivered, by destination kind.",
			[]string{"to"}, nil),
		drops: prometheus.NewDesc("tabby_dataplane_drops_total", "Packets dropped by the dataplane, per reason.",
			[]string{"reason"}, nil),
		sdrops: prometheus.NewDesc("tabby_dataplane_socket_drops_total",
			"Frames lost at the AF_XDP sockets (kernel XDP_STATISTICS and frames Tabby refused), per reason.",
			[]string{"reason"}, nil),
		kicks: prometheus.NewDesc("tabby_dataplane_socket_kicks_total", "Copy-mode TX sendto kicks.", nil, nil),
		frames: prometheus.NewDesc("tabby_dataplane_frames", "UMEM frames by state (free, fill, app, tx).",
			[]string{"state"}, nil),
	}
}

func (c *dataplaneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.fwd
	ch <- c.drops
	ch <- c.sdrops
	ch <- c.kicks
	ch <- c.frames
}

func (c *dataplaneCollector) Collect(ch chan<- prometheus.Metric) {
	dp := c.dp()
	if dp == nil {
		return
	}
	ct, ok := dp.counters()
	if !ok {
		return
	}
	counter := func(d *prometheus.Desc, v uint64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label)
	}
	counter(c.packets, ct.RxPackets, "rx")
	counter(c.packets, ct.TxPackets, "tx")
	counter(c.bytes, ct.RxBytes, "rx")
	counter(c.bytes, ct.TxBytes, "tx")
	counter(c.fwd, ct.ToLocal, "local")
	counter(c.fwd, ct.ToRemote, "remote")
	counter(c.fwd, ct.ToHost, "host")
	for _, r := range datapath.DropReasons() {
		counter(c.drops, ct.Drops[r], r.String())
	}
	if sd, ok := dp.(interface{ socketTotals() afxdp.SocketStats }); ok {
		st := sd.socketTotals()
		for _, r := range []struct {
			v    uint64
			name string
		}{
			{st.KernelRxDropped, "rx_dropped"}, {st.KernelRxRingFull, "rx_ring_full"},
			{st.KernelRxFillRingEmpty, "fill_ring_empty"}, {st.KernelRxInvalidDescs, "rx_invalid_descs"},
			{st.KernelTxInvalidDescs, "tx_invalid_descs"}, {st.RxInvalid, "rx_invalid"},
			{st.TxInvalid, "tx_invalid"}, {st.TxRingFull, "tx_ring_full"},
		} {
			counter(c.sdrops, r.v, r.name)
		}
		ch <- prometheus.MustNewConstMetric(c.kicks, prometheus.CounterValue, float64(st.Kicks))
	}
	if fd, ok := dp.(interface{ frames() afxdp.FrameCounts }); ok {
		f := fd.frames()
		for _, s := range []struct {
			v    int
			name string
		}{{f.Free, "free"}, {f.Fill, "fill"}, {f.App, "app"}, {f.Tx, "tx"}} {
			ch <- prometheus.MustNewConstMetric(c.frames, prometheus.GaugeValue, float64(s.v), s.name)
		}
	}
}

// bgpCollector reads the speaker's sessions at scrape time.
type bgpCollector struct {
	speaker  bgpSpeaker
	sessions *prometheus.Desc
	prefixes *prometheus.Desc
}

func newBGPCollector(s bgpSpeaker) *bgpCollector {
	return &bgpCollector{speaker: s,
		sessions: prometheus.NewDesc("tabby_bgp_sessions", "BGP sessions by state.", []string{"state"}, nil),
		prefixes: prometheus.NewDesc("tabby_bgp_prefixes", "BGP prefixes advertised and learned.", []string{"type"}, nil),
	}
}

func (c *bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sessions
	ch <- c.prefixes
}

func (c *bgpCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.speaker.Status(ctx)
	if err != nil {
		return
	}
	states := map[string]int{"Established": 0}
	for _, p := range st.Peers {
		states[p.State]++
	}
	for s, n := range states {
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(n), s)
	}
	ch <- prometheus.MustNewConstMetric(c.prefixes, prometheus.GaugeValue, float64(st.Advertised), "advertised")
	ch <- prometheus.MustNewConstMetric(c.prefixes, prometheus.GaugeValue, float64(st.Learned), "learned")
}
