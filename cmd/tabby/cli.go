package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// The resource CLI (calicoctl's verbs): apply, get, delete, status. They
// reach the datastore with the agent's datastore keys (TABBY_DATASTORE,
// TABBY_ETCD_ENDPOINTS, ... or the matching flags; without endpoints, the
// embedded etcd of the agent whose --state-dir is given).

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// parseFlags parses args; a bad command line is a usage error (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// openStore resolves the datastore keys and connects.
func openStore(layers func() ([]*agent.ConfigLayer, error)) (*agent.Store, func() error, error) {
	ls, err := layers()
	if err != nil {
		return nil, nil, err
	}
	c, err := agent.ResolveBootstrap(ls...)
	if err != nil {
		return nil, nil, err
	}
	return agent.OpenStore(c)
}

// readObjects decodes every file ("-": stdin) and names the file in errors.
func readObjects(files []string, stdin io.Reader) ([]agent.Object, error) {
	var all []agent.Object
	for _, f := range files {
		var b []byte
		var err error
		if f == "-" {
			b, err = io.ReadAll(stdin)
		} else {
			b, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, err
		}
		objs, err := agent.Decode(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		all = append(all, objs...)
	}
	return all, nil
}

func kindWord(k resources.Kind) string { return strings.ToLower(string(k)) }

// stdin is where "-f -" reads (a variable for tests).
var stdin io.Reader = os.Stdin

func runApply(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files stringList
	fs.Var(&files, "f", "file of resources, YAML or JSON, several documents allowed (- for stdin; repeatable)")
	layers := configFlags(fs, true)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tabby apply -f file.yaml [-f ...]\n\nCreates or replaces every resource of the files. Nothing is written if any\nresource is invalid.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if len(files) == 0 || fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: apply needs -f file and no other arguments", errUsage)
	}
	objs, err := readObjects(files, stdin)
	if err != nil {
		return err
	}
	// Validate everything first: a bad document applies nothing.
	var invalid []error
	for _, o := range objs {
		o.Default()
		if err := o.Validate(); err != nil {
			invalid = append(invalid, err)
		}
	}
	if len(invalid) > 0 {
		for _, e := range invalid {
			fmt.Fprintln(stderr, e)
		}
		return fmt.Errorf("%d of %d resources invalid; nothing applied", len(invalid), len(objs))
	}
	store, closeStore, err := openStore(layers)
	if err != nil {
		return err
	}
	defer closeStore()
	failed := 0
	for _, o := range objs {
		_, created, err := store.Apply(ctx, o)
		key := agent.KeyOfObject(o)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", key, err)
			failed++
			continue
		}
		verb := "configured"
		if created {
			verb = "created"
		}
		fmt.Fprintf(stdout, "%s %q %s\n", kindWord(key.Kind), displayName(key), verb)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d resources not applied", failed, len(objs))
	}
	return nil
}

func displayName(k resources.Key) string {
	if k.Namespace != "" {
		return k.Namespace + "/" + k.Name
	}
	return k.Name
}

// lookupKind resolves a kind as typed.
func lookupKind(s string) (resources.Kind, error) {
	if k, ok := agent.KindNames()[s]; ok {
		return k, nil
	}
	if k, ok := agent.KindNames()[strings.ToLower(s)]; ok {
		return k, nil
	}
	var names []string
	for _, info := range resources.Kinds() {
		names = append(names, string(info.Kind))
	}
	for _, info := range agent.AgentKinds() {
		names = append(names, string(info.Kind))
	}
	sort.Strings(names)
	return "", fmt.Errorf("%w: unknown kind %q (kinds: %s)", errUsage, s, strings.Join(names, ", "))
}

func namespaced(k resources.Kind) bool {
	info, ok := agent.LookupAgentKind(k)
	return ok && info.Namespaced
}

// splitFlags parses flags anywhere among the arguments.
func splitFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "", "output format: yaml, json or wide (default: a table)")
	ns := fs.String("n", "", "namespace (namespaced kinds; default: all namespaces)")
	layers := configFlags(fs, true)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tabby get <kind> [name] [-n namespace] [-o yaml|json|wide]\n\nFlags:")
		fs.PrintDefaults()
	}
	pos, err := splitFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		fs.Usage()
		return fmt.Errorf("%w: get needs a kind and at most one name", errUsage)
	}
	switch *output {
	case "", "yaml", "json", "wide":
	default:
		return fmt.Errorf("%w: -o %q: must be yaml, json or wide", errUsage, *output)
	}
	kind, err := lookupKind(pos[0])
	if err != nil {
		return err
	}
	store, closeStore, err := openStore(layers)
	if err != nil {
		return err
	}
	defer closeStore()
	var objs []agent.Object
	if len(pos) == 2 {
		k := resources.Key{Kind: kind, Name: pos[1], Namespace: *ns}
		if namespaced(kind) && k.Namespace == "" {
			k.Namespace = "default"
		}
		o, err := store.Get(ctx, k)
		if err != nil {
			return err
		}
		objs = []agent.Object{o}
	} else {
		all, err := store.List(ctx, kind)
		if err != nil {
			return err
		}
		for _, o := range all {
			if *ns == "" || o.Meta().Namespace == *ns {
				objs = append(objs, o)
			}
		}
	}
	switch *output {
	case "yaml":
		b, err := agent.MarshalYAML(objs...)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	case "json":
		var v any
		if len(pos) == 2 {
			v = objs[0]
		} else {
			v = struct {
				APIVersion string         `json:"apiVersion"`
				Kind       string         `json:"kind"`
				Items      []agent.Object `json:"items"`
			}{resources.APIVersion, string(kind) + "List", objs}
		}
		for _, o := range objs {
			if _, err := agent.Marshal(o); err != nil { // sets apiVersion and kind
				return err
			}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return printTable(stdout, kind, objs, *output == "wide")
}

func printTable(w io.Writer, kind resources.Kind, objs []agent.Object, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	var head []string
	if namespaced(kind) {
		head = append(head, "NAMESPACE")
	}
	head = append(head, "NAME")
	cols, _ := columns(kind, nil, wide)
	fmt.Fprintln(tw, strings.Join(append(head, cols...), "\t"))
	for _, o := range objs {
		var row []string
		if namespaced(kind) {
			row = append(row, o.Meta().Namespace)
		}
		row = append(row, o.Meta().Name)
		_, vals := columns(kind, o, wide)
		fmt.Fprintln(tw, strings.Join(append(row, vals...), "\t"))
	}
	return tw.Flush()
}

// columns returns the table columns of a kind and their values for o (nil:
// only the header).
func columns(kind resources.Kind, o agent.Object, wide bool) ([]string, []string) {
	var cols, vals []string
	add := func(name string, wideOnly bool, v func() string) {
		if wideOnly && !wide {
			return
		}
		cols = append(cols, name)
		if o != nil {
			vals = append(vals, v())
		}
	}
	var r resources.Resource
	if o != nil {
		r = agent.Unwrap(o)
	}
	orDash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	float := func(f *float64) string {
		if f == nil {
			return "-"
		}
		return strconv.FormatFloat(*f, 'f', -1, 64)
	}
	switch kind {
	case resources.KindIPPool:
		p := func() *resources.IPPool { return r.(*resources.IPPool) }
		add("CIDR", false, func() string { return p().Spec.CIDR })
		add("BLOCKSIZE", true, func() string { return strconv.Itoa(p().Spec.BlockSize) })
		add("IPIP", true, func() string { return string(p().Spec.IPIPMode) })
		add("VXLAN", true, func() string { return string(p().Spec.VXLANMode) })
		add("NAT", true, func() string { return strconv.FormatBool(p().Spec.NATOutgoing) })
		add("DISABLED", true, func() string { return strconv.FormatBool(p().Spec.Disabled) })
		add("SELECTOR", true, func() string { return p().Spec.NodeSelector })
	case resources.KindNode:
		n := func() *resources.Node { return r.(*resources.Node) }
		add("ADDRESSES", false, func() string {
			var as []string
			for _, a := range n().Spec.Addresses {
				as = append(as, a.Address)
			}
			return orDash(strings.Join(as, ","))
		})
		add("BGP", true, func() string {
			if b := n().Spec.BGP; b != nil {
				return orDash(b.IPv4Address)
			}
			return "-"
		})
		add("VTEP", true, func() string { return orDash(n().Spec.IPv4VXLANTunnelAddr) })
		add("VTEPMAC", true, func() string { return orDash(n().Spec.VXLANTunnelMACAddr) })
	case resources.KindBGPPeer:
		p := func() *resources.BGPPeer { return r.(*resources.BGPPeer) }
		add("PEERIP", false, func() string { return orDash(p().Spec.PeerIP) })
		add("NODE", false, func() string { return orDash(p().Spec.Node) })
		add("ASN", false, func() string { return strconv.FormatUint(uint64(p().Spec.ASNumber), 10) })
		add("NODESELECTOR", true, func() string { return orDash(p().Spec.NodeSelector) })
		add("PEERSELECTOR", true, func() string { return orDash(p().Spec.PeerSelector) })
	case resources.KindBGPConfiguration:
		c := func() *resources.BGPConfiguration { return r.(*resources.BGPConfiguration) }
		add("ASN", false, func() string { return strconv.FormatUint(uint64(c().Spec.ASNumber), 10) })
		add("MESH", false, func() string {
			if m := c().Spec.NodeToNodeMeshEnabled; m != nil {
				return strconv.FormatBool(*m)
			}
			return "-"
		})
		add("PORT", true, func() string { return strconv.Itoa(int(c().Spec.ListenPort)) })
	case resources.KindHostEndpoint:
		h := func() *resources.HostEndpoint { return r.(*resources.HostEndpoint) }
		add("NODE", false, func() string { return h().Spec.Node })
		add("INTERFACE", false, func() string { return orDash(h().Spec.InterfaceName) })
		add("IPS", true, func() string { return orDash(strings.Join(h().Spec.ExpectedIPs, ",")) })
	case resources.KindIPAMBlock:
		b := func() *resources.IPAMBlock { return r.(*resources.IPAMBlock) }
		add("CIDR", false, func() string { return b().Spec.CIDR })
		add("NODE", false, func() string { return orDash(b().AffineNode()) })
		add("IN-USE", false, func() string {
			s := &b().Spec
			return fmt.Sprintf("%d/%d", len(s.Allocations)-len(s.Unallocated), len(s.Allocations))
		})
	case resources.KindBlockAffinity:
		a := func() *resources.BlockAffinity { return r.(*resources.BlockAffinity) }
		add("NODE", false, func() string { return a().Spec.Node })
		add("CIDR", false, func() string { return a().Spec.CIDR })
		add("STATE", false, func() string { return string(a().Spec.State) })
	case resources.KindIPAMHandle:
		h := func() *resources.IPAMHandle { return r.(*resources.IPAMHandle) }
		add("BLOCKS", false, func() string {
			var bs []string
			for b, n := range h().Spec.Block {
				bs = append(bs, fmt.Sprintf("%s:%d", b, n))
			}
			sort.Strings(bs)
			return strings.Join(bs, ",")
		})
	case agent.KindTier:
		t := func() *agent.Tier { return o.(*agent.Tier) }
		add("ORDER", false, func() string { return float(t().Spec.Order) })
		add("DEFAULTACTION", false, func() string { return orDash(t().Spec.DefaultAction) })
	case agent.KindNetworkPolicy, agent.KindGlobalNetworkPolicy:
		spec := func() *agent.PolicySpec {
			if p, ok := o.(*agent.NetworkPolicy); ok {
				return &p.Spec
			}
			return &o.(*agent.GlobalNetworkPolicy).Spec
		}
		add("TIER", false, func() string { return orDash(spec().Tier) })
		add("ORDER", false, func() string { return float(spec().Order) })
		add("SELECTOR", false, func() string { return orDash(spec().Selector) })
		add("RULES", true, func() string { return fmt.Sprintf("%d in, %d out", len(spec().Ingress), len(spec().Egress)) })
	case agent.KindWorkloadEndpoint:
		w := func() *agent.WorkloadEndpoint { return o.(*agent.WorkloadEndpoint) }
		add("NODE", false, func() string { return w().Spec.Node })
		add("IPS", false, func() string { return strings.Join(w().Spec.IPNetworks, ",") })
		add("POD", true, func() string { return orDash(w().Spec.Pod) })
		add("CONTAINER", true, func() string { return w().Spec.ContainerID })
		add("INTERFACE", true, func() string { return orDash(w().Spec.InterfaceName) })
	}
	return cols, vals
}

func runDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("delete", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files stringList
	fs.Var(&files, "f", "file of resources to delete (- for stdin; repeatable)")
	ns := fs.String("n", "default", "namespace (namespaced kinds)")
	ignoreMissing := fs.Bool("ignore-not-found", false, "succeed when a resource does not exist")
	layers := configFlags(fs, true)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tabby delete <kind> <name> [-n namespace] | tabby delete -f file.yaml\n\nFlags:")
		fs.PrintDefaults()
	}
	pos, err := splitFlags(fs, args)
	if err != nil {
		return err
	}
	var keys []resources.Key
	switch {
	case len(files) > 0 && len(pos) == 0:
		objs, err := readObjects(files, stdin)
		if err != nil {
			return err
		}
		for _, o := range objs {
			keys = append(keys, agent.KeyOfObject(o))
		}
	case len(files) == 0 && len(pos) == 2:
		kind, err := lookupKind(pos[0])
		if err != nil {
			return err
		}
		k := resources.Key{Kind: kind, Name: pos[1]}
		if namespaced(kind) {
			k.Namespace = *ns
		}
		keys = append(keys, k)
	default:
		fs.Usage()
		return fmt.Errorf("%w: delete needs <kind> <name> or -f file", errUsage)
	}
	store, closeStore, err := openStore(layers)
	if err != nil {
		return err
	}
	defer closeStore()
	failed := 0
	for _, k := range keys {
		_, err := store.Delete(ctx, k, "")
		if datastore.IsNotFound(err) && *ignoreMissing {
			err = nil
		}
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s %q deleted\n", kindWord(k.Kind), displayName(k))
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d resources not deleted", failed, len(keys))
	}
	return nil
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("agent", "", "agent API: unix socket path or http://host:port of its health listener (default: "+
		agent.EnvPrefix+"CNI_SOCKET or "+agent.DefaultCNISocket+")")
	output := fs.String("o", "", "output format: json (default: text)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	target := *addr
	if target == "" {
		target = agent.DefaultCNISocket
		if v := os.Getenv(agent.EnvPrefix + "CNI_SOCKET"); v != "" {
			target = v
		}
	}
	st, err := agent.NewClient(target).Status(ctx)
	if err != nil {
		if agent.IsNotRunning(err) {
			return fmt.Errorf("no agent at %s: %w", target, err)
		}
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, &st)
	if !st.Ready {
		return errors.New("agent not ready")
	}
	return nil
}

func printStatus(w io.Writer, st *agent.Status) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY: " + strings.Join(st.NotReady, "; ")
	}
	fmt.Fprintf(w, "Node:       %s (%s dataplane) — %s\n", st.Node, st.Dataplane, ready)
	sync := "synced"
	if !st.Datastore.Synced {
		var bad []string
		for _, k := range st.Datastore.Kinds {
			if !k.Synced {
				bad = append(bad, k.Kind)
			}
		}
		sync = "NOT synced: " + strings.Join(bad, ", ")
	}
	fmt.Fprintf(w, "Datastore:  %s, %s\n", st.Datastore.Type, sync)
	fmt.Fprintf(w, "Endpoints:  %d local, %d in the cluster\n", st.Endpoints.Local, st.Endpoints.Total)
	fmt.Fprintf(w, "Policy:     generation %d, %d policies, %d tiers, compiled in %s\n", st.Policy.Generation,
		st.Policy.Policies, st.Policy.Tiers, st.Policy.CompileTime)
	for _, e := range st.Policy.Errors {
		fmt.Fprintf(w, "            rejected: %s\n", e)
	}
	fmt.Fprintf(w, "Routes:     %d IPv4, %d IPv6 (%d learned by BGP)\n", st.Routes.IPv4, st.Routes.IPv6, st.Routes.Learned)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if len(st.Blocks) > 0 {
		fmt.Fprintln(w, "\nIPAM blocks:")
		fmt.Fprintln(tw, "  CIDR\tIN USE")
		for _, b := range st.Blocks {
			fmt.Fprintf(tw, "  %s\t%d/%d\n", b.CIDR, b.InUse, b.Capacity)
		}
		tw.Flush()
	}
	if st.BGP != nil {
		fmt.Fprintf(w, "\nBGP: AS %d, router ID %s, %d advertised, %d learned\n", st.BGP.ASN, st.BGP.RouterID,
			st.BGP.Advertised, st.BGP.Learned)
		fmt.Fprintln(tw, "  PEER\tASN\tSOURCE\tSTATE\tSINCE")
		for _, p := range st.BGP.Peers {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\n", p.Address, p.ASN, p.Source, p.State, p.Since)
		}
		tw.Flush()
	}
	if st.Counters != nil {
		fmt.Fprintf(w, "\nDataplane: rx %d, tx %d packets; local %d, remote %d, host %d; dropped %d\n",
			st.Counters["rxPackets"], st.Counters["txPackets"], st.Counters["toLocal"], st.Counters["toRemote"],
			st.Counters["toHost"], st.Counters["dropped"])
		var reasons []string
		for r := range st.Drops {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			fmt.Fprintf(w, "  drop %-20s %d\n", r, st.Drops[r])
		}
	}
}
