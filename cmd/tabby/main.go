// Command tabby is Tabby's single binary: the node agent, the benchmark
// harness, the lab and the CLI are its subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"agent", "run the node agent (tabby agent [--config file])", runAgent},
	{"apply", "create or replace resources (tabby apply -f file.yaml)", runApply},
	{"get", "show resources (tabby get <kind> [name] [-o yaml|json|wide])", runGet},
	{"delete", "delete resources (tabby delete <kind> <name> | -f file.yaml)", runDelete},
	{"status", "show the local agent's status (tabby status)", runStatus},
	{"bench", "run benchmark suites (tabby bench <suite> [--json])", runBench},
	{"lab", "multi-node lab in namespaces (tabby lab up|status|check|pods|restart-agent|down)", runLab},
	{"version", "print the version", runVersion},
}

// errUsage marks an error caused by the command line; it exits with status 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "tabby %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(stderr, "tabby %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "tabby: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Tabby: Kubernetes pod networking with a userspace AF_XDP dataplane.")
	fmt.Fprintln(w, "\nUsage: tabby <command> [arguments]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
}
