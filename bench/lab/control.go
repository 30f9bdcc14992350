package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The supervisor's control API: HTTP with JSON bodies on the unix socket
// <lab dir>/control.sock (mode 0600).
//
//	POST /v1/agents/{node}/restart?signal=KILL|TERM|INT
//
// sends the agent of node the signal, waits until it has exited, starts
// it again (same configuration, log appended) and waits until it is
// ready; the reply is a RestartResult. Errors are {"error": "..."} with
// HTTP 404 (no such node), 400 (bad signal), 500 (the agent did not exit
// or come back).

// RestartResult is what an agent restart did.
type RestartResult struct {
	Node   string `json:"node"`
	Signal string `json:"signal"`
	OldPID int    `json:"oldPID"`
	PID    int    `json:"pid"`
	// Exited is how long the old process took to exit after the signal;
	// Ready how long from the signal until the new one was ready.
	Exited time.Duration `json:"exited"`
	Ready  time.Duration `json:"ready"`
}

var signals = map[string]syscall.Signal{"KILL": syscall.SIGKILL, "TERM": syscall.SIGTERM, "INT": syscall.SIGINT}

func controlPath(name string) string { return filepath.Join(Dir(name), "control.sock") }

// serveControl starts the control API; the returned function stops it.
func (sv *supervisor) serveControl(ctx context.Context) (func(), error) {
	path := controlPath(sv.st.Config.Name)
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	sv.mu.Lock()
	sv.st.Control = path
	sv.mu.Unlock()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/agents/{node}/restart", func(w http.ResponseWriter, r *http.Request) {
		sig := strings.ToUpper(strings.TrimPrefix(strings.ToUpper(r.URL.Query().Get("signal")), "SIG"))
		if sig == "" {
			sig = "KILL"
		}
		res, code, err := sv.restartAgent(ctx, r.PathValue("node"), sig)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(res)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	stopped := false
	return func() {
		if !stopped {
			stopped = true
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			_ = os.Remove(path)
		}
	}, nil
}

// restartAgent signals node's agent, waits for it to exit (it stays a
// zombie until the topology closes, so its PID is not reused), starts a
// new one and waits until it is ready.
func (sv *supervisor) restartAgent(ctx context.Context, node, sig string) (*RestartResult, int, error) {
	s, ok := signals[sig]
	if !ok {
		return nil, http.StatusBadRequest, fmt.Errorf("signal %q: must be KILL, TERM or INT", sig)
	}
	sv.restarting.Lock()
	defer sv.restarting.Unlock()
	idx := -1
	sv.mu.Lock()
	for i, n := range sv.st.Nodes {
		if n.Name == node {
			idx = i
		}
	}
	var old Node
	if idx >= 0 {
		old = sv.st.Nodes[idx]
	}
	sv.mu.Unlock()
	if idx < 0 {
		return nil, http.StatusNotFound, fmt.Errorf("no node %q", node)
	}
	res := &RestartResult{Node: node, Signal: sig, OldPID: old.PID}
	sv.logf("restart agent %s: %s to pid %d", node, sig, old.PID)
	t0 := time.Now()
	if err := syscall.Kill(old.PID, s); err != nil && !errors.Is(err, syscall.ESRCH) {
		return nil, http.StatusInternalServerError, fmt.Errorf("signal agent %s (pid %d): %w", node, old.PID, err)
	}
	for !zombie(old.PID) {
		if time.Since(t0) > 30*time.Second {
			return nil, http.StatusInternalServerError, fmt.Errorf("agent %s (pid %d) still runs 30s after %s",
				node, old.PID, sig)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.Exited = time.Since(t0)
	if err := sv.startAgent(idx); err != nil {
		return nil, http.StatusInternalServerError, err
	}
	sv.mu.Lock()
	nd := sv.st.Nodes[idx]
	sv.mu.Unlock()
	res.PID = nd.PID
	if err := waitReady(ctx, nd, 90*time.Second); err != nil {
		return nil, http.StatusInternalServerError, err
	}
	res.Ready = time.Since(t0)
	sv.logf("agent %s restarted: pid %d, ready after %s", node, nd.PID, res.Ready.Round(time.Millisecond))
	return res, http.StatusOK, nil
}

// RestartAgent asks the supervisor of lab name to restart node's agent
// with signal (KILL, TERM or INT) and waits until it is ready again.
func RestartAgent(ctx context.Context, name, node, signal string) (*RestartResult, error) {
	st, err := LoadState(name)
	if err != nil {
		return nil, err
	}
	if !st.Alive() || st.Control == "" {
		return nil, fmt.Errorf("lab %q is not running", name)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", st.Control)
	}}}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, "POST", "http://lab/v1/agents/"+node+"/restart?signal="+signal, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("lab %s: control socket: %w", name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("restart agent %s: %s", node, e.Error)
		}
		return nil, fmt.Errorf("restart agent %s: HTTP %d: %s", node, resp.StatusCode, b)
	}
	var res RestartResult
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
