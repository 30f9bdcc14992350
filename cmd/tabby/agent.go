package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tabbynet/tabby/control/agent"
)

// envConfigFile names the configuration file (like --config; the
// environment wins).
const envConfigFile = agent.EnvPrefix + "CONFIG"

// configFlags registers one flag per configuration key on fs and returns
// a function that builds the layers (environment, flags, file) after
// parsing. bootstrapOnly registers only the datastore keys (the CLI).
func configFlags(fs *flag.FlagSet, bootstrapOnly bool) func() ([]*agent.ConfigLayer, error) {
	configPath := fs.String("config", "", "configuration file, YAML (env "+envConfigFile+")")
	for _, k := range agent.ConfigKeys() {
		if bootstrapOnly && !k.Bootstrap {
			continue
		}
		fs.String(k.Flag, "", fmt.Sprintf("%s (env %s, file key %s)", k.Usage, k.Env, k.Name))
	}
	return func() ([]*agent.ConfigLayer, error) {
		set := map[string]string{}
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "config" && isConfigFlag(f.Name) {
				set[f.Name] = f.Value.String()
			}
		})
		var environ []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, envConfigFile+"=") {
				environ = append(environ, kv)
			}
		}
		env, _ := agent.EnvLayer(environ)
		flags, err := agent.FlagLayer(set)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		layers := []*agent.ConfigLayer{env, flags}
		path := *configPath
		if p, ok := os.LookupEnv(envConfigFile); ok {
			path = p
		}
		if path != "" {
			file, err := agent.FileLayer(path)
			if err != nil {
				return nil, err
			}
			layers = append(layers, file)
		}
		return layers, nil
	}
}

func isConfigFlag(name string) bool {
	for _, k := range agent.ConfigKeys() {
		if k.Flag == name {
			return true
		}
	}
	return false
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	layers := configFlags(fs, false)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tabby agent [--config file] [flags]")
		fmt.Fprintln(stderr, "\nRuns the node agent. Configuration precedence: environment (TABBY_*) > flags > file >")
		fmt.Fprintln(stderr, "datastore (AgentConfiguration node.<name>, then default) > defaults.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	ls, err := layers()
	if err != nil {
		return err
	}
	if _, unknown := agent.EnvLayer(os.Environ()); len(unknown) > 0 {
		for _, u := range unknown {
			if u != envConfigFile {
				fmt.Fprintf(stderr, "tabby agent: warning: unknown variable %s ignored\n", u)
			}
		}
	}
	// The logger as far as the local sources configure it; keys the
	// datastore may still supply (interfaces) are validated by Start.
	boot, err := agent.ResolveConfig(ls...)
	if err != nil {
		if boot, err = agent.ResolveBootstrap(ls...); err != nil {
			return err
		}
	}
	log, level := agent.NewLogger(stderr, &boot)
	a, err := agent.Start(ctx, agent.Options{Layers: ls, Logger: log, LevelVar: level})
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	return a.Close()
}
