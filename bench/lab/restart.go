package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// RestartPort is the port of the restart check's TCP stream.
const RestartPort = 7778

// streamStats is what the restart check's TCP stream saw.
type streamStats struct {
	sent, received atomic.Int64
	// mu guards the errors and the samples (time, bytes received, every
	// 20 ms).
	mu       sync.Mutex
	writeErr error
	readErr  error
	samples  []sample
}

func (s *streamStats) setErr(p *error, err error) {
	s.mu.Lock()
	*p = err
	s.mu.Unlock()
}

type sample struct {
	t time.Time
	n int64
}

// maxStall returns the longest time within [from, to] during which the
// received byte count did not grow.
func maxStall(samples []sample, from, to time.Time) time.Duration {
	var worst time.Duration
	var lastT time.Time
	var lastN int64 = -1
	for _, s := range samples {
		if s.t.Before(from) {
			lastT, lastN = s.t, s.n
			continue
		}
		if s.t.After(to) {
			break
		}
		if lastN < 0 || s.n > lastN {
			lastT, lastN = s.t, s.n
			continue
		}
		if d := s.t.Sub(lastT); d > worst {
			worst = d
		}
	}
	return worst
}

// checkRestart kills one node's agent with SIGKILL while a TCP stream runs
// from a pod on another node to a pod on it, has the supervisor start it
// again, and checks that the established flow survived (no reset, every
// byte delivered; with the kernel dataplane the bytes kept flowing
// throughout, since the kernel forwards without the agent; an afxdp
// agent is its node's dataplane, so there the flow must only resume),
// that the agent came back ready with its endpoints and their labels,
// and that the node's pods are reachable again.
func (e *checkEnv) checkRestart(ctx context.Context, w io.Writer, rep *Report, node string) {
	a, b, err := e.restartPair(node)
	if err != nil {
		rep.add("restart", false, err.Error())
		return
	}
	node = b.Node
	stats := &streamStats{}
	var ln net.Listener
	if err := inNetns(b.Netns, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", RestartPort))
		return err
	}); err != nil {
		rep.add("restart", false, fmt.Sprintf("listen in %s: %v", b.Name, err))
		return
	}
	defer ln.Close()
	serverDone := make(chan struct{})
	go func() {
		defer close(serverDone)
		c, err := ln.Accept()
		if err != nil {
			stats.setErr(&stats.readErr, err)
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			stats.received.Add(int64(n))
			if err != nil {
				if !errors.Is(err, io.EOF) {
					stats.setErr(&stats.readErr, err)
				}
				return
			}
		}
	}()
	var conn net.Conn
	if err := inNetns(a.Netns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", net.JoinHostPort(b.IP, fmt.Sprint(RestartPort)), 3*time.Second)
		return err
	}); err != nil {
		rep.add("restart", false, fmt.Sprintf("connect %s -> %s: %v", a.Name, b.Name, err))
		return
	}
	defer conn.Close()
	stop := make(chan struct{})
	clientDone := make(chan struct{})
	go func() { // ~8 MB/s: enough to see a stall, little CPU
		defer close(clientDone)
		chunk := make([]byte, 16<<10)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				_ = conn.(*net.TCPConn).CloseWrite()
				return
			case <-tick.C:
			}
			_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			n, err := conn.Write(chunk)
			stats.sent.Add(int64(n))
			if err != nil {
				stats.setErr(&stats.writeErr, err)
				return
			}
		}
	}()
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case t := <-tick.C:
				stats.mu.Lock()
				stats.samples = append(stats.samples, sample{t, stats.received.Load()})
				stats.mu.Unlock()
			}
		}
	}()
	finish := func() {
		close(stop)
		<-clientDone
		<-samplerDone
		select {
		case <-serverDone:
		case <-time.After(10 * time.Second):
		}
	}
	// The stream must run before the kill.
	deadline := time.Now().Add(5 * time.Second)
	for stats.received.Load() < 1<<20 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if stats.received.Load() < 1<<20 {
		finish()
		rep.add("restart", false, fmt.Sprintf("stream %s -> %s did not start (%d B in 5s)", a.Name, b.Name,
			stats.received.Load()))
		return
	}
	before := stats.received.Load()
	epsBefore, _ := e.localEndpoints(ctx, node)
	tKill := time.Now()
	res, rerr := RestartAgent(ctx, e.st.Config.Name, node, "KILL")
	tReady := time.Now()
	atReady := stats.received.Load()
	// An afxdp agent is its node's dataplane: TCP resumes at its next
	// retransmission after the agent is back (backed off to seconds).
	resumeBy := time.Now().Add(15 * time.Second)
	for stats.received.Load() <= atReady && time.Now().Before(resumeBy) {
		time.Sleep(20 * time.Millisecond)
	}
	resumed := time.Since(tReady)
	time.Sleep(time.Second)
	finish()
	if rerr != nil {
		rep.add("restart "+node+" agent", false, rerr.Error())
		return
	}
	stats.mu.Lock()
	stall := maxStall(stats.samples, tKill, tReady.Add(time.Second))
	stats.mu.Unlock()
	sent, recv := stats.sent.Load(), stats.received.Load()
	kernel := e.nodeOf[a.Node].Dataplane == "kernel" && e.nodeOf[b.Node].Dataplane == "kernel"
	var problems []string
	stats.mu.Lock()
	writeErr, readErr := stats.writeErr, stats.readErr
	stats.mu.Unlock()
	if writeErr != nil {
		problems = append(problems, "sender: "+writeErr.Error())
	}
	if readErr != nil {
		problems = append(problems, "receiver: "+readErr.Error())
	}
	if sent != recv {
		problems = append(problems, fmt.Sprintf("sent %d B, received %d B", sent, recv))
	}
	if recv <= atReady {
		problems = append(problems, "no bytes after the agent was back")
	}
	if kernel && stall > time.Second {
		problems = append(problems, fmt.Sprintf("stream stalled %s while the agent was down (the kernel dataplane "+
			"should not need the agent to forward)", stall.Round(time.Millisecond)))
	}
	flowing := "kept flowing"
	if !kernel {
		flowing = "resumed"
	}
	detail := fmt.Sprintf("SIGKILL pid %d, new pid %d ready after %s; stream %s->%s (%s) %s: %.1f MB during the "+
		"restart, %.1f MB in all, longest stall %s, no reset", res.OldPID, res.PID, res.Ready.Round(time.Millisecond),
		a.Name, b.Name, e.pathKind(a, b), flowing, float64(atReady-before)/1e6, float64(recv)/1e6,
		stall.Round(time.Millisecond))
	if len(problems) > 0 {
		detail = fmt.Sprintf("SIGKILL, agent back after %s; stream %s->%s: %v", res.Ready.Round(time.Millisecond),
			a.Name, b.Name, problems)
	}
	rep.add("restart "+node+" agent", len(problems) == 0, detail)
	fmt.Fprintln(w, "restart "+node+" agent: "+detail)
	impl := e.dataplanes(a, b)
	rep.figure("agent-restart", e.nodeOf[node].Dataplane, "ready", ms(res.Ready), "ms")
	rep.figure("agent-restart-stream", impl, "longest-stall", ms(stall), "ms")
	if !kernel {
		rep.figure("agent-restart-stream", impl, "resumed-after-ready", ms(resumed), "ms")
	}

	// The agent is back with its endpoints (labels kept), and the node's
	// pods are reachable.
	epsAfter, err := e.localEndpoints(ctx, node)
	var nodePods []Pod
	for _, p := range e.st.Pods {
		if p.Node == node {
			nodePods = append(nodePods, p)
		}
	}
	if err == nil {
		err = waitLabels(ctx, []Node{e.nodeOf[node]}, nodePods, 10*time.Second)
	}
	if err == nil && epsAfter != epsBefore {
		err = fmt.Errorf("%d local endpoints before the restart, %d after", epsBefore, epsAfter)
	}
	if err != nil {
		rep.add("restart: endpoints", false, err.Error())
	} else {
		rep.add("restart: endpoints", true, fmt.Sprintf("%d local endpoints on %s, labels kept", epsAfter, node))
	}
	m := e.probeAll(ctx, []string{"icmp", "tcp", "udp"}, func(Pod, Pod, string) bool { return true })
	rep.add("restart: matrix", len(m.mismatches) == 0, fmt.Sprintf("%d/%d pass after the restart",
		m.total-len(m.mismatches), m.total))
	if len(m.mismatches) > 0 {
		printLimited(w, m.mismatches, 20)
	}
}

// restartPair picks the stream's pods: b on the node to restart (node, or
// else the node of a pod in another subnet than the first pod, or else
// on another node), a on another node.
func (e *checkEnv) restartPair(node string) (Pod, Pod, error) {
	pods := e.st.Pods
	for _, want := range []string{"other-subnet", "other-node"} {
		for _, a := range pods {
			for _, b := range pods {
				if e.pathKind(a, b) != want || (node != "" && b.Node != node) {
					continue
				}
				return a, b, nil
			}
		}
	}
	if node != "" {
		return Pod{}, Pod{}, fmt.Errorf("no pod on %s with a pod on another node to stream from", node)
	}
	return Pod{}, Pod{}, errors.New("the restart check needs pods on two nodes")
}

// localEndpoints counts the endpoints node's agent reports as its own.
func (e *checkEnv) localEndpoints(ctx context.Context, node string) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := agentClient(e.nodeOf[node]).Status(cctx)
	if err != nil {
		return 0, fmt.Errorf("agent %s: %w", node, err)
	}
	return s.Endpoints.Local, nil
}
