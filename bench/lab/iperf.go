package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// IperfPort is where the iperf3 servers listen in the pods.
const IperfPort = 5201

// iperfPaths picks one pair of pods per path kind and dataplane pair:
// same node, other node, other subnet; kernel, afxdp, kernel-afxdp.
func (e *checkEnv) iperfPaths() [][2]Pod {
	var out [][2]Pod
	seen := map[string]bool{}
	for _, kind := range []string{"same-node", "other-node", "other-subnet"} {
		for _, a := range e.st.Pods {
			for _, b := range e.st.Pods {
				if a.Name == b.Name || e.pathKind(a, b) != kind {
					continue
				}
				k := kind + "/" + e.dataplanes(a, b)
				if !seen[k] {
					seen[k] = true
					out = append(out, [2]Pod{a, b})
				}
			}
		}
	}
	return out
}

// iperfResult is what one iperf3 run measured.
type iperfResult struct {
	Gbps        float64
	Retransmits int
}

// checkIperf3 measures TCP throughput with iperf3 (one stream, DF as TCP
// does, the pod MTU) on each path iperfPaths picks, one after the other.
// Figures go to the report (case iperf3-<path>, impl the dataplanes).
// Speed is reported, never judged: a row fails only if iperf3 does.
func (e *checkEnv) checkIperf3(ctx context.Context, w io.Writer, rep *Report, d time.Duration) {
	if d <= 0 {
		d = 3 * time.Second
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		rep.add("iperf3", false, "iperf3 is not installed (scripts/deps.sh installs it)")
		return
	}
	got := map[string]map[string]float64{} // kind -> dataplanes -> Gbit/s
	for _, pr := range e.iperfPaths() {
		a, b := pr[0], pr[1]
		kind, dps := e.pathKind(a, b), e.dataplanes(a, b)
		row := fmt.Sprintf("iperf3 %s %s", kind, dps)
		r, err := iperf(ctx, a, b, d)
		if err != nil {
			rep.add(row, false, fmt.Sprintf("%s->%s: %v", a.Name, b.Name, err))
			continue
		}
		detail := fmt.Sprintf("%.2f Gbit/s (%s->%s, TCP %s, %d retransmits)", r.Gbps, a.Name, b.Name, d, r.Retransmits)
		rep.add(row, true, detail)
		fmt.Fprintln(w, row+": "+detail)
		rep.figure("iperf3-"+kind, dps, "throughput", r.Gbps, "Gbit/s")
		if got[kind] == nil {
			got[kind] = map[string]float64{}
		}
		got[kind][dps] = r.Gbps
	}
	for _, kind := range []string{"same-node", "other-node", "other-subnet"} {
		k, x := got[kind]["kernel"], got[kind]["afxdp"]
		if k > 0 && x > 0 {
			detail := fmt.Sprintf("afxdp %.2f / kernel %.2f Gbit/s = %.2f× (reported, not judged)", x, k, x/k)
			rep.add("iperf3 "+kind+" afxdp vs kernel", true, detail)
			fmt.Fprintln(w, "iperf3 "+kind+" afxdp vs kernel: "+detail)
		}
	}
}

// iperf runs an iperf3 server in b (one test) and the client in a.
func iperf(ctx context.Context, a, b Pod, d time.Duration) (iperfResult, error) {
	sctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	srv := exec.CommandContext(sctx, "ip", "netns", "exec", b.Netns, "iperf3", "-s", "-1", "--forceflush", "-B", b.IP, "-p",
		fmt.Sprint(IperfPort))
	out, pw := io.Pipe()
	srv.Stdout, srv.Stderr = pw, pw
	if err := srv.Start(); err != nil {
		return iperfResult{}, fmt.Errorf("start iperf3 server: %w", err)
	}
	defer func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
		pw.Close()
	}()
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var seen []string
		ok := false
		for !ok && sc.Scan() {
			seen = append(seen, sc.Text())
			ok = strings.Contains(sc.Text(), "listening")
		}
		if ok {
			listening <- ""
		} else {
			listening <- "exited: " + strings.Join(seen, "\n")
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case s := <-listening:
		if s != "" {
			return iperfResult{}, fmt.Errorf("iperf3 server: %s", s)
		}
	case <-time.After(10 * time.Second):
		return iperfResult{}, fmt.Errorf("iperf3 server in %s not listening after 10s", b.Name)
	}
	cout, err := exec.CommandContext(sctx, "ip", "netns", "exec", a.Netns, "iperf3", "-c", b.IP, "-p",
		fmt.Sprint(IperfPort), "-t", fmt.Sprintf("%.0f", max(1, d.Seconds())), "-J", "--connect-timeout", "3000").Output()
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(cout, &res); jerr != nil {
		return iperfResult{}, fmt.Errorf("iperf3 client: %v (%v): %s", err, jerr, lastLine(string(cout)))
	}
	if res.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3: %s", res.Error)
	}
	if err != nil {
		return iperfResult{}, fmt.Errorf("iperf3 client: %w", err)
	}
	if res.End.SumReceived.BitsPerSecond <= 0 {
		return iperfResult{}, fmt.Errorf("iperf3 measured nothing")
	}
	return iperfResult{Gbps: res.End.SumReceived.BitsPerSecond / 1e9, Retransmits: res.End.SumSent.Retransmits}, nil
}
