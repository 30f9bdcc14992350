package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tabbynet/tabby/bench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, "print one JSON object per result line instead of a table")
	quick := fs.Bool("quick", false, "small inputs and short runs (smoke test; do not report these figures)")
	benchTime := fs.String("benchtime", "", "time or iteration count per Go benchmark case (e.g. 2s, 500x)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tabby bench <suite>... [--json] [--quick] [--benchtime d]\n\nSuites:")
		for _, s := range bench.Suites() {
			fmt.Fprintf(stderr, "  %-10s %s\n", s.Name, s.Doc)
		}
		fmt.Fprintln(stderr, "  all        every suite above\n\nFlags:")
		fs.PrintDefaults()
	}
	// Accept flags before and after the suite names.
	var names []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		names = append(names, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(names) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: name a suite", errUsage)
	}
	var suites []bench.Suite
	for _, n := range names {
		if n == "all" {
			suites = append(suites, bench.Suites()...)
			continue
		}
		s, ok := bench.Lookup(n)
		if !ok {
			var known []string
			for _, s := range bench.Suites() {
				known = append(known, s.Name)
			}
			return fmt.Errorf("%w: unknown suite %q (suites: %s, all)", errUsage, n, strings.Join(known, ", "))
		}
		suites = append(suites, s)
	}
	opt := bench.Options{Quick: *quick, BenchTime: *benchTime, Progress: stderr}
	for _, s := range suites {
		opt.Progressf("bench %s: running", s.Name)
		res, err := bench.Run(ctx, s, opt)
		if *jsonOut {
			if werr := bench.WriteJSON(stdout, res); werr != nil {
				return werr
			}
		} else if len(res) > 0 {
			if werr := bench.WriteTable(stdout, res); werr != nil {
				return werr
			}
			fmt.Fprintln(stdout)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
