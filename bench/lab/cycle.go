package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/tabbynet/tabby/bench/topo"
)

// Namespaces of the pods Cycle creates.
const (
	NamespaceCycle = "lab-cycle"
	NamespaceProbe = "lab-probe"
	// CyclePort is where a cycled pod listens for the prober's datagrams.
	CyclePort = 7790
)

// CycleOptions tunes Cycle.
type CycleOptions struct {
	// Cycles is the number of pod add/delete cycles (default 100).
	Cycles int
	// Node is where the pods are added (default: the first node);
	// ProbeNode where the prober pod runs (default: a node in another
	// subnet, else another node, else Node).
	Node, ProbeNode string
	// FirstPacketTimeout bounds the wait for the first packet (default 5s).
	FirstPacketTimeout time.Duration
}

// cyclePolicies isolate the cycled pods (ingress only from the prober's
// namespace) and the prober (egress only to the cycled pods' namespace),
// so that the first packet needs the new pod in the policy of both nodes.
const cyclePolicies = `apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: lab-cycle-ingress
spec:
  selector: projectcalico.org/namespace == '` + NamespaceCycle + `'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: UDP
    source:
      namespaceSelector: projectcalico.org/name == '` + NamespaceProbe + `'
---
apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: lab-probe-egress
spec:
  selector: projectcalico.org/namespace == '` + NamespaceProbe + `'
  types: [Egress]
  egress:
  - action: Allow
    protocol: UDP
    destination:
      namespaceSelector: projectcalico.org/name == '` + NamespaceCycle + `'
`

// percentile returns the nearest-rank percentile p (0..100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Cycle adds and deletes pods on one node of lab name through the CNI
// plugin (libcni, as a runtime does), opts.Cycles times, with a prober pod
// on another node sending UDP to each new pod from the moment ADD
// returns. It reports CNI ADD and DEL latency and ADD-return-to-first-
// packet (p50, p99; figures in the bench schema: suite lab, cases cni-add,
// cni-del, add-to-first-packet, impl the node's dataplane), then checks
// that nothing leaked: IPAM handles and addresses, workload endpoints,
// pod veths and routes, nftables rulesets, the agents' endpoints, and
// conntrack entries that would outlive the kernel's timeouts.
func Cycle(ctx context.Context, name string, w io.Writer, opts CycleOptions) (*Report, error) {
	e, err := newCheckEnv(name)
	if err != nil {
		return nil, err
	}
	if opts.Cycles <= 0 {
		opts.Cycles = 100
	}
	if opts.FirstPacketTimeout <= 0 {
		opts.FirstPacketTimeout = 5 * time.Second
	}
	node, probeNode, err := e.cycleNodes(opts.Node, opts.ProbeNode)
	if err != nil {
		return nil, err
	}
	st := e.st
	store, closeStore, err := OpenStore(st)
	if err != nil {
		return nil, err
	}
	defer closeStore()
	rep := &Report{}
	base, err := takeSnapshot(ctx, st, store)
	if err != nil {
		return nil, fmt.Errorf("before: %w", err)
	}
	basePolicies, err := countPolicies(ctx, store)
	if err != nil {
		return nil, err
	}
	pols := decodeObjects(cyclePolicies)
	if err := applyAll(ctx, store, pols); err != nil {
		return nil, err
	}
	policiesApplied := true
	removePolicies := func() error {
		if !policiesApplied {
			return nil
		}
		policiesApplied = false
		if err := deleteAll(context.WithoutCancel(ctx), store, pols); err != nil {
			return err
		}
		return waitPolicies(context.WithoutCancel(ctx), st.Nodes, basePolicies, 30*time.Second)
	}
	defer func() { _ = removePolicies() }()
	if err := waitPolicies(ctx, st.Nodes, basePolicies+len(pols), 30*time.Second); err != nil {
		return nil, err
	}

	tp, err := topo.New("tlabc")
	if err != nil {
		return nil, err
	}
	defer tp.Close()
	probeNS, err := tp.Namespace("probe")
	if err != nil {
		return nil, err
	}
	podNS, err := tp.Namespace("pod")
	if err != nil {
		return nil, err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{st.Config.CNIBin}, filepath.Join(Dir(name), "cni-cache-cycle"), nil)
	listA, err := cniConfList(st.Config, node)
	if err != nil {
		return nil, err
	}
	listB, err := cniConfList(st.Config, probeNode)
	if err != nil {
		return nil, err
	}
	prober := Pod{Name: "probe", Node: probeNode.Name, Netns: probeNS.Name, ContainerID: "lab-probe-" + tp.Name,
		Namespace: NamespaceProbe}
	var cycled []Pod // added and not yet deleted
	delAll := func() error {
		var errs []error
		for _, p := range cycled {
			if _, err := cniDel(context.WithoutCancel(ctx), cni, listA, node.Netns, p); err != nil {
				errs = append(errs, err)
			}
		}
		cycled = nil
		return errors.Join(errs...)
	}
	defer func() { _ = delAll() }()
	proberAdded := false
	defer func() {
		if proberAdded {
			_, _ = cniDel(context.WithoutCancel(ctx), cni, listB, probeNode.Netns, prober)
		}
	}()
	proberIP, _, err := cniAdd(ctx, cni, listB, probeNode.Netns, prober)
	if err != nil {
		return nil, fmt.Errorf("prober: %w", err)
	}
	proberAdded = true
	prober.IP = proberIP.String()

	// The pod's listener exists before its interface does, as a
	// container's process may; it records when each cycle's first
	// datagram arrives.
	rx, err := newFirstPacketListener(podNS.Name)
	if err != nil {
		return nil, err
	}
	defer rx.close()

	fmt.Fprintf(w, "%d pod add/delete cycles on %s (%s dataplane) through libcni; prober pod on %s (%s, %s path)\n",
		opts.Cycles, node.Name, node.Dataplane, probeNode.Name, probeNode.Dataplane,
		e.pathKind(Pod{Node: probeNode.Name}, Pod{Node: node.Name}))
	var adds, dels, firsts []time.Duration
	var failures []string
	ips := map[netip.Addr]bool{}
	t0 := time.Now()
	for i := 0; i < opts.Cycles; i++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		p := Pod{Name: fmt.Sprintf("cyc%d", i), Node: node.Name, Netns: podNS.Name,
			ContainerID: fmt.Sprintf("lab-cyc-%s-%d", tp.Name, i), Namespace: NamespaceCycle}
		wait := rx.expect(i)
		ip, took, err := cniAdd(ctx, cni, listA, node.Netns, p)
		tReturn := time.Now()
		if err != nil {
			return nil, fmt.Errorf("cycle %d: %w", i, err)
		}
		cycled = append(cycled, p)
		adds = append(adds, took)
		ips[ip] = true
		stopSend, err := sendEvery(prober.Netns, ip, CyclePort, i, time.Millisecond)
		if err != nil {
			return nil, fmt.Errorf("cycle %d: prober: %w", i, err)
		}
		select {
		case at := <-wait:
			firsts = append(firsts, at.Sub(tReturn))
		case <-time.After(opts.FirstPacketTimeout):
			failures = append(failures, fmt.Sprintf("cycle %d (%s): no packet from the prober within %s", i, ip,
				opts.FirstPacketTimeout))
		}
		stopSend()
		took, err = cniDel(ctx, cni, listA, node.Netns, p)
		if err != nil {
			return nil, fmt.Errorf("cycle %d: %w", i, err)
		}
		cycled = cycled[:0]
		dels = append(dels, took)
	}
	elapsed := time.Since(t0)
	if _, err := cniDel(ctx, cni, listB, probeNode.Netns, prober); err != nil {
		return nil, err
	}
	proberAdded = false
	if a, err := netip.ParseAddr(prober.IP); err == nil {
		ips[a] = true
	}
	if err := removePolicies(); err != nil {
		return nil, err
	}
	rx.close()
	if err := tp.Close(); err != nil {
		return nil, err
	}

	impl := node.Dataplane
	for _, m := range []struct {
		cas  string
		what string
		ds   []time.Duration
	}{{"cni-add", "CNI ADD", adds}, {"cni-del", "CNI DEL", dels}, {"add-to-first-packet", "ADD return to first packet", firsts}} {
		p50, p99 := percentile(m.ds, 50), percentile(m.ds, 99)
		rep.figure(m.cas, impl, "p50", ms(p50), "ms")
		rep.figure(m.cas, impl, "p99", ms(p99), "ms")
		ok := len(m.ds) == opts.Cycles
		rep.add("pods: "+m.cas, ok, fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d of %d cycles", ms(p50),
			ms(p99), ms(percentile(m.ds, 100)), len(m.ds), opts.Cycles))
	}
	if len(failures) > 0 {
		fmt.Fprintln(w, "first packets missing:")
		printLimited(w, failures, 10)
	}
	fmt.Fprintf(w, "%d cycles in %s\n", opts.Cycles, elapsed.Round(time.Millisecond))

	// Leaks: everything as before. The agents see deletions through
	// their watches, so their view may lag a moment.
	var leaks []leak
	deadline := time.Now().Add(15 * time.Second)
	for {
		after, err := takeSnapshot(ctx, st, store)
		if err != nil {
			return nil, fmt.Errorf("after: %w", err)
		}
		leaks = compareSnapshots(base, after)
		bad := slices.ContainsFunc(leaks, func(l leak) bool { return !l.OK })
		if !bad || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, l := range leaks {
		rep.add(l.Check, l.OK, l.Detail)
	}
	ct, err := conntrackFor(st.Nodes, ips)
	switch {
	case err != nil:
		rep.add("leak: conntrack", false, err.Error())
	case len(ct.Stale) > 0:
		rep.add("leak: conntrack", false, fmt.Sprintf("%d entries for deleted pods that would outlive the kernel's "+
			"short timeouts: %s", len(ct.Stale), strings.Join(ct.Stale[:min(3, len(ct.Stale))], "; ")))
	default:
		rep.add("leak: conntrack", true, fmt.Sprintf("no lasting entry for the %d deleted pod addresses "+
			"(%d UDP/ICMP entries expiring by kernel timeout; kernel nodes only)", len(ips), ct.Expiring))
	}
	fmt.Fprintf(w, "\n== summary: lab %s, %d pod cycles on %s\n", name, opts.Cycles, node.Name)
	rep.Print(w)
	if f := rep.Failed(); len(f) > 0 {
		return rep, fmt.Errorf("%d of %d checks failed", len(f), len(rep.Rows))
	}
	return rep, nil
}

// cycleNodes resolves CycleOptions' node names.
func (e *checkEnv) cycleNodes(nodeName, probeName string) (Node, Node, error) {
	nodes := e.st.Nodes
	if len(nodes) == 0 {
		return Node{}, Node{}, errors.New("lab has no nodes")
	}
	node := nodes[0]
	if nodeName != "" {
		n, ok := e.nodeOf[nodeName]
		if !ok {
			return Node{}, Node{}, fmt.Errorf("no node %q", nodeName)
		}
		node = n
	}
	if probeName != "" {
		n, ok := e.nodeOf[probeName]
		if !ok {
			return Node{}, Node{}, fmt.Errorf("no node %q", probeName)
		}
		return node, n, nil
	}
	probe := node
	for _, n := range nodes {
		if n.Name == node.Name {
			continue
		}
		if n.Subnet != node.Subnet {
			return node, n, nil
		}
		if probe.Name == node.Name {
			probe = n
		}
	}
	return node, probe, nil
}

// firstPacketListener is a UDP socket in a pod namespace that notes when
// the first datagram of each cycle ("<cycle>") arrives.
type firstPacketListener struct {
	conn net.PacketConn
	mu   sync.Mutex
	want int
	ch   chan time.Time
	once sync.Once
}

func newFirstPacketListener(netns string) (*firstPacketListener, error) {
	l := &firstPacketListener{want: -1}
	err := inNetns(netns, func() error {
		var err error
		l.conn, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", CyclePort))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listener in %s: %w", netns, err)
	}
	go l.run()
	return l, nil
}

func (l *firstPacketListener) run() {
	buf := make([]byte, 64)
	for {
		n, _, err := l.conn.ReadFrom(buf)
		at := time.Now()
		if err != nil {
			return
		}
		i, err := strconv.Atoi(string(buf[:n]))
		if err != nil {
			continue
		}
		l.mu.Lock()
		if i == l.want && l.ch != nil {
			l.ch <- at
			l.ch = nil
		}
		l.mu.Unlock()
	}
}

// expect arms the listener for cycle i: the returned channel gets the
// arrival time of its first datagram.
func (l *firstPacketListener) expect(i int) <-chan time.Time {
	ch := make(chan time.Time, 1)
	l.mu.Lock()
	l.want, l.ch = i, ch
	l.mu.Unlock()
	return ch
}

func (l *firstPacketListener) close() { l.once.Do(func() { l.conn.Close() }) }

// sendEvery sends "<cycle>" to dst:port from a UDP socket in netns every
// interval until the returned function is called.
func sendEvery(netns string, dst netip.Addr, port, cycle int, interval time.Duration) (func(), error) {
	var c net.Conn
	err := inNetns(netns, func() error {
		var err error
		c, err = net.Dial("udp4", netip.AddrPortFrom(dst, uint16(port)).String())
		return err
	})
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	msg := []byte(strconv.Itoa(cycle))
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			_, _ = c.Write(msg) // errors (ICMP unreachable before the route exists) are expected
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(stop)
		<-done
		c.Close()
	}, nil
}
