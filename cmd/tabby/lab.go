package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tabbynet/tabby/bench/lab"
)

func labUsage(w io.Writer) {
	fmt.Fprintln(w, `Usage: tabby lab <up|status|check|pods|restart-agent|down> [flags]

A multi-node Tabby lab in network namespaces (root): a router namespace with
one bridge per subnet and a shared etcd (and BIRD 2 as the subnets' BGP peer
with --encap none), N node namespaces each running a tabby agent process,
and pods created through the CNI plugin, labelled app=lab, role=web|db, in
namespaces lab-a and lab-b.

  tabby lab up [--nodes 3] [--subnets 2] [--pods-per-node 2]
               [--dataplane kernel|afxdp|kernel,afxdp,...]   (one per node, in turn)
               [--encap vxlan|vxlan-crosssubnet|none|ipip|ipip-crosssubnet] [--cni-bin DIR]
  tabby lab status      nodes, dataplanes, agent readiness, BIRD sessions, pods and addresses
  tabby lab check [--checks matrix,policy,mtu,iperf3[,restart]] [--iperf-time 3s] [--json]
                        the pod-to-pod matrix (ICMP, TCP, UDP), policy (default deny, allow
                        by label, namespace isolation, egress deny), MTU with DF, iperf3
                        per path, agent restart during a TCP stream; a summary table;
                        exit 1 on a failure
  tabby lab pods [--cycles 100] [--node n1] [--probe-node n2] [--json]
                        pod add/delete cycles through libcni: CNI ADD/DEL and ADD-to-first-
                        packet p50/p99, then a leak check (IPAM, veths, routes, nftables,
                        conntrack, agent endpoints)
  tabby lab restart-agent <node> [--signal KILL|TERM]
                        kill a node's agent and have the supervisor start it again
  tabby lab down        stop the lab and remove leftovers of crashed labs

All take --name (default "lab"); state is in /run/tabby/lab/<name>. --json
prints the figures as bench JSON lines ({"suite":"lab",...}) on stdout and
the human output on stderr. The CNI plugin (cmd/tabby-cni) is taken from
--cni-bin (a directory holding "tabby-cni" or "tabby"), else tabby-cni next
to this binary, else built with "go build" from the module in the current
directory.`)
}

func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		labUsage(stderr)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("lab "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "lab", "lab name")
	switch sub {
	case "up":
		cfg := lab.Config{}
		fs.IntVar(&cfg.Nodes, "nodes", 3, "number of nodes")
		fs.IntVar(&cfg.Subnets, "subnets", 2, "number of underlay subnets (nodes round robin)")
		fs.IntVar(&cfg.PodsPerNode, "pods-per-node", 2, "pods per node")
		fs.StringVar(&cfg.Dataplane, "dataplane", "kernel", "kernel or afxdp, or a comma-separated list given to the nodes in turn")
		fs.StringVar(&cfg.Encap, "encap", "vxlan", "vxlan, vxlan-crosssubnet, none, ipip or ipip-crosssubnet")
		fs.StringVar(&cfg.PoolCIDR, "pool", "10.244.0.0/16", "IPv4 pool")
		cniBin := fs.String("cni-bin", "", "directory with the CNI plugin (tabby-cni or tabby)")
		timeout := fs.Duration("timeout", 3*time.Minute, "how long to wait for the lab")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		cfg.Name = *name
		if err := needRoot(); err != nil {
			return err
		}
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.Self = self
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		t0 := time.Now()
		st, err := lab.Up(ctx, cfg, *timeout, func(c *lab.Config, dir string) error {
			bin, err := locatePlugin(*cniBin, self, dir, stderr)
			c.CNIBin = bin
			return err
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "lab %s up in %s: %d nodes, %d pods (topology %s, supervisor pid %d)\n", st.Config.Name,
			time.Since(t0).Round(time.Millisecond), len(st.Nodes), len(st.Pods), st.Topology, st.PID)
		return lab.PrintStatus(ctx, *name, stdout)
	case "status":
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		return lab.PrintStatus(ctx, *name, stdout)
	case "check":
		checks := fs.String("checks", strings.Join(lab.DefaultChecks, ","),
			"checks to run: "+strings.Join(lab.AllChecks, ",")+" (or all)")
		iperfTime := fs.Duration("iperf-time", 3*time.Second, "duration of each iperf3 run")
		restartNode := fs.String("restart-node", "", "node whose agent the restart check kills (default: chosen)")
		jsonOut := fs.Bool("json", false, "figures as JSON lines on stdout (human output on stderr)")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if err := needRoot(); err != nil {
			return err
		}
		opts := lab.CheckOptions{IperfTime: *iperfTime, RestartNode: *restartNode}
		if *checks == "all" {
			opts.Checks = lab.AllChecks
		} else {
			opts.Checks = strings.Split(*checks, ",")
		}
		w := stdout
		if *jsonOut {
			w, opts.JSON = stderr, stdout
		}
		_, err := lab.Check(ctx, *name, w, opts)
		return err
	case "pods":
		opts := lab.CycleOptions{}
		fs.IntVar(&opts.Cycles, "cycles", 100, "pod add/delete cycles")
		fs.StringVar(&opts.Node, "node", "", "node where the pods are added (default: the first)")
		fs.StringVar(&opts.ProbeNode, "probe-node", "", "node of the prober pod (default: another subnet's, else another node)")
		jsonOut := fs.Bool("json", false, "figures as JSON lines on stdout (human output on stderr)")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if err := needRoot(); err != nil {
			return err
		}
		w := stdout
		if *jsonOut {
			w = stderr
		}
		rep, err := lab.Cycle(ctx, *name, w, opts)
		if rep != nil && *jsonOut {
			if jerr := rep.WriteJSON(stdout); jerr != nil {
				return jerr
			}
		}
		return err
	case "restart-agent":
		signal := fs.String("signal", "KILL", "signal for the running agent: KILL, TERM or INT")
		// The node comes first: tabby lab restart-agent n2 [--signal TERM].
		var node string
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			node, args = args[0], args[1:]
		}
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if node == "" && fs.NArg() == 1 {
			node = fs.Arg(0)
		}
		if node == "" {
			return fmt.Errorf("%w: restart-agent takes a node name", errUsage)
		}
		if err := needRoot(); err != nil {
			return err
		}
		res, err := lab.RestartAgent(ctx, *name, node, *signal)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "agent %s: SIG%s to pid %d (exited after %s), new pid %d ready after %s\n", res.Node,
			res.Signal, res.OldPID, res.Exited.Round(time.Millisecond), res.PID, res.Ready.Round(time.Millisecond))
		return nil
	case "down":
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if err := needRoot(); err != nil {
			return err
		}
		did, err := lab.Down(*name)
		for _, d := range did {
			fmt.Fprintln(stdout, d)
		}
		if len(did) == 0 && err == nil {
			fmt.Fprintf(stdout, "lab %s: nothing to remove\n", *name)
		}
		return err
	case "supervise": // internal: started by up
		if len(args) != 1 {
			return fmt.Errorf("%w: supervise takes the configuration", errUsage)
		}
		return lab.Supervise(ctx, args[0], stderr)
	case "etcd": // internal: the lab's etcd, started by the supervisor
		dir := fs.String("dir", "", "data directory")
		listen := fs.String("listen", "0.0.0.0:2379", "relay address")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		return lab.Etcd(ctx, *dir, *listen)
	}
	labUsage(stderr)
	return fmt.Errorf("%w: unknown lab command %q", errUsage, sub)
}

func needRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	return nil
}

// locatePlugin returns a directory holding the CNI plugin as "tabby".
func locatePlugin(flagDir, self, labDir string, stderr io.Writer) (string, error) {
	binDir := filepath.Join(labDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", err
	}
	link := func(src string) (string, error) {
		abs, err := filepath.Abs(src)
		if err != nil {
			return "", err
		}
		return binDir, os.Symlink(abs, filepath.Join(binDir, "tabby"))
	}
	if flagDir != "" {
		// tabby-cni first: a directory of built binaries holds both it
		// and the main tabby binary.
		for _, n := range []string{"tabby-cni", "tabby"} {
			if fi, err := os.Stat(filepath.Join(flagDir, n)); err == nil && fi.Mode().IsRegular() {
				return link(filepath.Join(flagDir, n))
			}
		}
		return "", fmt.Errorf("no tabby or tabby-cni in %s", flagDir)
	}
	if p := filepath.Join(filepath.Dir(self), "tabby-cni"); isFile(p) {
		return link(p)
	}
	if _, err := exec.LookPath("go"); err != nil {
		return "", errors.New("no CNI plugin: pass --cni-bin, put tabby-cni next to tabby, or install go")
	}
	fmt.Fprintln(stderr, "building the CNI plugin (go build github.com/tabbynet/tabby/cmd/tabby-cni)...")
	out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "tabby"),
		"github.com/tabbynet/tabby/cmd/tabby-cni").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build tabby-cni (run from the tabby module, or pass --cni-bin): %v\n%s", err, out)
	}
	return binDir, nil
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
