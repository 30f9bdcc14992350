package bgp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/bench/topo"
)

// A speaker in a network namespace runs in a child process: the test binary
// re-executed under `ip netns exec` with helperEnv set. GoBGP opens its
// listener and its outgoing connections from whatever thread runs them, so
// only a process that is entirely in the namespace keeps all of them there.
// The child reads helperRequests (JSON lines) on stdin and writes
// helperReplies on stdout.
const helperEnv = "TABBY_BGP_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(runHelper(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

type helperRequest struct {
	Reconcile *Desired `json:"reconcile,omitempty"`
	Status    bool     `json:"status,omitempty"`
}

type helperReply struct {
	Routes []RouteEvent `json:"routes,omitempty"`
	Status *Status      `json:"status,omitempty"`
	Done   bool         `json:"done,omitempty"`
	Error  string       `json:"error,omitempty"`
}

func runHelper(in io.Reader, out io.Writer) int {
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	send := func(r helperReply) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(r)
	}
	lvl := slog.LevelWarn
	if os.Getenv("TABBY_TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	s := New(Options{
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})),
		GoBGPLogLevel: lvl,
		ConnectRetry:  time.Second,
		OnRoutes:      func(evs []RouteEvent) { send(helperReply{Routes: evs}) },
	})
	defer s.Close()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var req helperRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			send(helperReply{Error: err.Error()})
			continue
		}
		switch {
		case req.Reconcile != nil:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := s.Reconcile(ctx, *req.Reconcile)
			cancel()
			if err != nil {
				send(helperReply{Error: err.Error()})
				continue
			}
			send(helperReply{Done: true})
		case req.Status:
			st, err := s.Status(context.Background())
			if err != nil {
				send(helperReply{Error: err.Error()})
				continue
			}
			send(helperReply{Status: &st})
		}
	}
	return 0
}

// nsSpeaker is the test's end of a speaker running in a namespace.
type nsSpeaker struct {
	t       *testing.T
	stdin   io.WriteCloser
	rec     *recorder
	replies chan helperReply
	stderr  *lockedWriter
	pid     int
}

// startNsSpeaker starts a speaker process in n, killed when the topology
// closes.
func startNsSpeaker(t *testing.T, tp *topo.Topology, n *topo.Netns) *nsSpeaker {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := n.Command(context.Background(), exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sp := &nsSpeaker{t: t, stdin: stdin, rec: newRecorder(t, n.Node), replies: make(chan helperReply, 16), stderr: &lockedWriter{}}
	cmd.Stderr = sp.stderr
	if err := tp.Start(cmd); err != nil {
		t.Fatal(err)
	}
	sp.pid = cmd.Process.Pid
	t.Cleanup(func() {
		stdin.Close()
		if t.Failed() {
			t.Logf("speaker in %s, stderr:\n%s", n.Node, sp.stderr.String())
		}
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<26)
		for sc.Scan() {
			var r helperReply
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				continue
			}
			if len(r.Routes) > 0 {
				sp.rec.onRoutes(r.Routes)
				continue
			}
			sp.replies <- r
		}
		close(sp.replies)
	}()
	return sp
}

func (sp *nsSpeaker) call(req helperRequest) helperReply {
	sp.t.Helper()
	b, _ := json.Marshal(req)
	if _, err := sp.stdin.Write(append(b, '\n')); err != nil {
		sp.t.Fatalf("speaker helper: %v", err)
	}
	select {
	case r, ok := <-sp.replies:
		if !ok {
			sp.t.Fatalf("speaker helper exited")
		}
		if r.Error != "" {
			sp.t.Fatalf("speaker helper: %s", r.Error)
		}
		return r
	case <-time.After(15 * time.Second):
		sp.t.Fatalf("speaker helper: no reply")
	}
	return helperReply{}
}

func (sp *nsSpeaker) reconcile(d Desired) { sp.call(helperRequest{Reconcile: &d}) }

func (sp *nsSpeaker) status() Status { return *sp.call(helperRequest{Status: true}).Status }

// waitEstablished waits until the peer at addr is established.
func (sp *nsSpeaker) waitEstablished(addr netip.Addr, timeout time.Duration) PeerStatus {
	sp.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, p := range sp.status().Peers {
			if p.Address == addr && p.Established {
				return p
			}
		}
		if time.Now().After(deadline) {
			sp.t.Fatalf("peer %s not established after %v: %+v", addr, timeout, sp.status().Peers)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lockedWriter is a buffer written by a process and read by the test.
// kill kills the speaker process without letting it close its sessions
// (a crash).
func (sp *nsSpeaker) kill() {
	syscall.Kill(-sp.pid, syscall.SIGKILL)
}

type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
