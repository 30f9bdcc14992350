package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// CheckPort is the port of the TCP and UDP echo servers in the pods.
const CheckPort = 7777

// The checks `tabby lab check` can run.
const (
	CheckMatrix  = "matrix"
	CheckPolicy  = "policy"
	CheckMTU     = "mtu"
	CheckIperf3  = "iperf3"
	CheckRestart = "restart"
)

// AllChecks are the checks in the order they run; DefaultChecks leave
// out the agent restart (it kills an agent).
var (
	AllChecks     = []string{CheckMatrix, CheckPolicy, CheckMTU, CheckIperf3, CheckRestart}
	DefaultChecks = []string{CheckMatrix, CheckPolicy, CheckMTU, CheckIperf3}
)

// CheckOptions selects and tunes the checks.
type CheckOptions struct {
	// Checks to run (AllChecks order); empty: DefaultChecks.
	Checks []string
	// IperfTime is each iperf3 run's duration (default 3s).
	IperfTime time.Duration
	// RestartNode is the node whose agent the restart check kills
	// (default: the node of a pod on another subnet than the first pod,
	// else another node).
	RestartNode string
	// JSON, if set, receives the figures as bench JSON lines.
	JSON io.Writer
}

// Row is one line of the summary table.
type Row struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Figure is one measured value in the project's bench schema.
type Figure struct {
	Suite  string  `json:"suite"`
	Case   string  `json:"case"`
	Impl   string  `json:"impl"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
}

// Report is what the checks found.
type Report struct {
	Rows    []Row
	Figures []Figure
}

func (r *Report) add(check string, ok bool, detail string) {
	r.Rows = append(r.Rows, Row{Check: check, OK: ok, Detail: detail})
}

func (r *Report) figure(cas, impl, metric string, v float64, unit string) {
	r.Figures = append(r.Figures, Figure{Suite: "lab", Case: cas, Impl: impl, Metric: metric, Value: v, Unit: unit})
}

// Failed returns the rows that failed.
func (r *Report) Failed() []Row {
	var out []Row
	for _, row := range r.Rows {
		if !row.OK {
			out = append(out, row)
		}
	}
	return out
}

// Print writes the summary table.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, row := range r.Rows {
		res := "ok"
		if !row.OK {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", row.Check, res, row.Detail)
	}
	tw.Flush()
}

// WriteJSON writes the figures as JSON lines.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, f := range r.Figures {
		if err := enc.Encode(f); err != nil {
			return err
		}
	}
	return nil
}

// checkEnv is a running lab as the checks see it.
type checkEnv struct {
	st     *State
	podOf  map[string]Pod
	nodeOf map[string]Node
}

func newCheckEnv(name string) (*checkEnv, error) {
	st, err := LoadState(name)
	if err != nil {
		return nil, err
	}
	if !st.Alive() || st.Status != "ready" {
		return nil, fmt.Errorf("lab %q is not running (status %s)", name, st.Status)
	}
	e := &checkEnv{st: st, podOf: map[string]Pod{}, nodeOf: map[string]Node{}}
	for _, p := range st.Pods {
		e.podOf[p.Name] = p
	}
	for _, n := range st.Nodes {
		e.nodeOf[n.Name] = n
	}
	return e, nil
}

// pathKind is same-node, other-node (same subnet) or other-subnet.
func (e *checkEnv) pathKind(a, b Pod) string {
	switch {
	case a.Node == b.Node:
		return "same-node"
	case e.nodeOf[a.Node].Subnet != e.nodeOf[b.Node].Subnet:
		return "other-subnet"
	}
	return "other-node"
}

// dataplanes says which dataplanes a path crosses: "kernel",
// "afxdp" or "kernel-afxdp".
func (e *checkEnv) dataplanes(a, b Pod) string {
	da, db := e.nodeOf[a.Node].Dataplane, e.nodeOf[b.Node].Dataplane
	if da == db {
		return da
	}
	return da + "-" + db
}

// Check runs the checks opts selects against lab name, writes their
// details and the summary table to w, and returns the report; the error
// says how many rows failed.
func Check(ctx context.Context, name string, w io.Writer, opts CheckOptions) (*Report, error) {
	e, err := newCheckEnv(name)
	if err != nil {
		return nil, err
	}
	if len(e.st.Pods) < 2 {
		return nil, errors.New("fewer than two pods")
	}
	checks := opts.Checks
	if len(checks) == 0 {
		checks = DefaultChecks
	}
	want := map[string]bool{}
	for _, c := range checks {
		known := false
		for _, k := range AllChecks {
			known = known || k == c
		}
		if !known {
			return nil, fmt.Errorf("check %q: must be one of %s", c, strings.Join(AllChecks, ", "))
		}
		want[c] = true
	}
	stop, err := e.startEchoServers()
	if err != nil {
		return nil, err
	}
	defer stop()
	rep := &Report{}
	for _, c := range []struct {
		name, title string
		run         func()
	}{
		{CheckMatrix, "", func() { e.checkMatrix(ctx, w, rep) }},
		{CheckPolicy, "policy", func() { e.checkPolicy(ctx, w, rep) }},
		{CheckMTU, "MTU", func() { e.checkMTU(ctx, w, rep) }},
		{CheckIperf3, "iperf3", func() { e.checkIperf3(ctx, w, rep, opts.IperfTime) }},
		{CheckRestart, "agent restart during a TCP stream", func() { e.checkRestart(ctx, w, rep, opts.RestartNode) }},
	} {
		if !want[c.name] {
			continue
		}
		if c.title != "" {
			fmt.Fprintf(w, "\n== %s\n", c.title)
		}
		t0 := time.Now()
		c.run()
		fmt.Fprintf(w, "(%s: %s)\n", c.name, time.Since(t0).Round(time.Millisecond))
	}
	fmt.Fprintf(w, "\n== summary: lab %s (%d nodes, dataplane %s, encap %s)\n", e.st.Config.Name, len(e.st.Nodes),
		e.st.Config.Dataplane, e.st.Config.Encap)
	rep.Print(w)
	if opts.JSON != nil {
		if err := rep.WriteJSON(opts.JSON); err != nil {
			return rep, err
		}
	}
	if f := rep.Failed(); len(f) > 0 {
		return rep, fmt.Errorf("%d of %d checks failed", len(f), len(rep.Rows))
	}
	return rep, nil
}

// startEchoServers starts a TCP and a UDP echo server on CheckPort in
// every pod.
func (e *checkEnv) startEchoServers() (func(), error) {
	var lns []io.Closer
	stop := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	for _, p := range e.st.Pods {
		var tl net.Listener
		var ul net.PacketConn
		err := inNetns(p.Netns, func() error {
			var err error
			if tl, err = net.Listen("tcp4", fmt.Sprintf(":%d", CheckPort)); err != nil {
				return err
			}
			ul, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", CheckPort))
			if err != nil {
				tl.Close()
			}
			return err
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("echo server in %s: %w", p.Name, err)
		}
		lns = append(lns, tl, ul)
		go serveTCP(tl)
		go serveUDP(ul)
	}
	return stop, nil
}

// probeResult is one pair and protocol.
type probeResult struct {
	From, To, Kind, Proto string
	Want, OK              bool
	Err                   string
}

// matrixResult sums up probeAll.
type matrixResult struct {
	results         []*probeResult
	total           int
	allowed, denied int
	mismatches      []string
	perKind         map[string][2]int // kind: as expected, total
}

// probeAll probes every ordered pair of pods with each protocol and
// compares the outcome with allowed: allowed traffic gets three tries of
// a second (a first packet may wait for ARP), denied traffic one try of
// 600 ms that must fail.
func (e *checkEnv) probeAll(ctx context.Context, protos []string, allowed func(from, to Pod, proto string) bool) matrixResult {
	var jobs []*probeResult
	for _, a := range e.st.Pods {
		for _, b := range e.st.Pods {
			if a.Name == b.Name {
				continue
			}
			for _, proto := range protos {
				jobs = append(jobs, &probeResult{From: a.Name, To: b.Name, Kind: e.pathKind(a, b), Proto: proto,
					Want: allowed(a, b, proto)})
			}
		}
	}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func(j *probeResult) {
			defer wg.Done()
			defer func() { <-sem }()
			from, to := e.podOf[j.From], e.podOf[j.To]
			var err error
			if j.Want {
				for try := 0; try < 3; try++ {
					if err = probe(ctx, j.Proto, from, to, time.Second); err == nil {
						break
					}
				}
			} else {
				err = probe(ctx, j.Proto, from, to, 600*time.Millisecond)
			}
			j.OK = err == nil
			if err != nil {
				j.Err = err.Error()
			}
		}(j)
	}
	wg.Wait()
	res := matrixResult{results: jobs, total: len(jobs), perKind: map[string][2]int{}}
	for _, j := range jobs {
		if j.Want {
			res.allowed++
		} else {
			res.denied++
		}
		c := res.perKind[j.Kind]
		c[1]++
		if j.OK == j.Want {
			c[0]++
		} else if j.Want {
			res.mismatches = append(res.mismatches, fmt.Sprintf("%s -> %s %s (%s): should pass: %s", j.From, j.To,
				j.Proto, j.Kind, j.Err))
		} else {
			res.mismatches = append(res.mismatches, fmt.Sprintf("%s -> %s %s (%s): should be denied but passed",
				j.From, j.To, j.Proto, j.Kind))
		}
		res.perKind[j.Kind] = c
	}
	sort.Strings(res.mismatches)
	return res
}

// checkMatrix is the connectivity matrix: every ordered pair of pods, with
// ICMP (ping in the source pod), TCP and UDP (echo servers in every pod,
// clients opened in the source pod). It prints a table (one row per pair,
// a column per protocol) and a summary line.
func (e *checkEnv) checkMatrix(ctx context.Context, w io.Writer, rep *Report) {
	protos := []string{"icmp", "tcp", "udp"}
	res := e.probeAll(ctx, protos, func(Pod, Pod, string) bool { return true })
	type key struct{ from, to string }
	rows := map[key]map[string]*probeResult{}
	var order []key
	for _, j := range res.results {
		k := key{j.From, j.To}
		if rows[k] == nil {
			rows[k] = map[string]*probeResult{}
			order = append(order, k)
		}
		rows[k][j.Proto] = j
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tIP\tPATH\tICMP\tTCP\tUDP")
	for _, k := range order {
		r := rows[k]
		cell := func(p string) string {
			if r[p].OK {
				return "ok"
			}
			return "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.from, k.to, e.podOf[k.to].IP, r["icmp"].Kind, cell("icmp"),
			cell("tcp"), cell("udp"))
	}
	tw.Flush()
	if len(res.mismatches) > 0 {
		fmt.Fprintln(w, "\nFailures:")
		printLimited(w, res.mismatches, 20)
	}
	kinds := res.kindSummary()
	fmt.Fprintf(w, "\nSummary: %d/%d checks passed (%d pairs × icmp,tcp,udp; %s)\n", res.total-len(res.mismatches),
		res.total, len(order), kinds)
	rep.add("matrix", len(res.mismatches) == 0, fmt.Sprintf("%d/%d pass (%s)", res.total-len(res.mismatches),
		res.total, kinds))
}

func (m matrixResult) kindSummary() string {
	var kinds []string
	for _, k := range []string{"same-node", "other-node", "other-subnet"} {
		if c, ok := m.perKind[k]; ok {
			kinds = append(kinds, fmt.Sprintf("%s %d/%d", k, c[0], c[1]))
		}
	}
	return strings.Join(kinds, ", ")
}

func serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(c, io.LimitReader(c, 1024))
		}()
	}
}

func serveUDP(c net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = c.WriteTo(buf[:n], addr)
	}
}

// probe sends one message from a pod to another and waits up to timeout
// for the answer: ping for icmp, the echo servers for tcp and udp.
func probe(ctx context.Context, proto string, from, to Pod, timeout time.Duration) error {
	msg := fmt.Sprintf("tabby-lab %s->%s %d", from.Name, to.Name, time.Now().UnixNano())
	switch proto {
	case "icmp":
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", from.Netns, "ping", "-c", "1", "-W",
			fmt.Sprintf("%.1f", timeout.Seconds()), "-q", to.IP).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ping: %v: %s", err, lastLine(string(out)))
		}
		return nil
	case "tcp":
		var c net.Conn
		err := inNetns(from.Netns, func() error {
			var err error
			c, err = net.DialTimeout("tcp4", net.JoinHostPort(to.IP, fmt.Sprint(CheckPort)), timeout)
			return err
		})
		if err != nil {
			return err
		}
		defer c.Close()
		return echo(c, msg, true, timeout)
	case "udp":
		var c net.Conn
		err := inNetns(from.Netns, func() error {
			var err error
			c, err = net.Dial("udp4", net.JoinHostPort(to.IP, fmt.Sprint(CheckPort)))
			return err
		})
		if err != nil {
			return err
		}
		defer c.Close()
		return echo(c, msg, false, timeout)
	}
	return fmt.Errorf("unknown protocol %s", proto)
}

func echo(c net.Conn, msg string, closeWrite bool, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok && closeWrite {
		_ = tc.CloseWrite()
	}
	buf := make([]byte, len(msg)+16)
	got := 0
	for got < len(msg) {
		n, err := c.Read(buf[got:])
		got += n
		if err != nil {
			if got >= len(msg) {
				break
			}
			return err
		}
		if !closeWrite {
			break
		}
	}
	if string(buf[:got]) != msg {
		return fmt.Errorf("echo mismatch: %q", buf[:got])
	}
	return nil
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}
