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
	"time"

	"github.com/tabbynet/tabby/bench/lab"
)

func labUsage(w io.Writer) {
	fmt.Fprintln(w, `Usage: tabby lab <up|status|check|down> [flags]

A multi-node Tabby lab in network namespaces (root): a router namespace with
one bridge per subnet and a shared etcd, N node namespaces each running a
tabby agent process, and pods created through the CNI plugin.

  tabby lab up [--nodes 3] [--subnets 2] [--pods-per-node 2] [--dataplane kernel|afxdp]
               [--encap vxlan|ipip|none|ipip-crosssubnet|vxlan-crosssubnet] [--cni-bin DIR]
  tabby lab status      nodes, agent readiness, pods and addresses
  tabby lab check       pod-to-pod connectivity matrix (ICMP, TCP, UDP); exit 1 on a failure
  tabby lab down        stop the lab and remove leftovers of crashed labs

All take --name (default "lab"); state is in /run/tabby/lab/<name>.
The CNI plugin (cmd/tabby-cni) is taken from --cni-bin (a directory holding
"tabby" or "tabby-cni"), else tabby-cni next to this binary, else built with
"go build" from the module in the current directory.`)
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
		fs.StringVar(&cfg.Dataplane, "dataplane", "kernel", "kernel or afxdp")
		fs.StringVar(&cfg.Encap, "encap", "vxlan", "vxlan, ipip, none, ipip-crosssubnet or vxlan-crosssubnet")
		fs.StringVar(&cfg.PoolCIDR, "pool", "10.244.0.0/16", "IPv4 pool")
		cniBin := fs.String("cni-bin", "", "directory with the CNI plugin (tabby or tabby-cni)")
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
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		_, err := lab.Check(ctx, *name, stdout)
		return err
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
		for _, n := range []string{"tabby", "tabby-cni"} {
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
