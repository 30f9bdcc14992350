package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// tabbyBinary returns the tabby binary: $TABBY_BIN when set (make
// test-k8s builds bin/tabby first), else one built from the repository
// into the test's directory.
func tabbyBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TABBY_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		must(t, err)
		return abs
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	must(t, err)
	out := filepath.Join(t.TempDir(), "tabby")
	start := time.Now()
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/tabby")
	cmd.Dir = root // the main module: its own dependency versions
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/tabby: %v\n%s", err, b)
	}
	t.Logf("built tabby in %s", time.Since(start).Round(time.Millisecond))
	return out
}

// cli runs the tabby binary with the datastore in the environment, as an
// operator's shell would have it.
type cli struct {
	t   *testing.T
	bin string
	env []string
}

func (c *cli) run(args ...string) (stdout, stderr string, err error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = c.env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// ok runs a command that must succeed and returns its output.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("tabby %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// fails runs a command that must fail and returns its stderr.
func (c *cli) fails(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(args...)
	if err == nil {
		c.t.Fatalf("tabby %s succeeded: %s", strings.Join(args, " "), out)
	}
	return errOut
}

// TestCLI: tabby apply -f / get / delete of Tabby's policy kinds against
// the apiserver (the built binary, kubeconfig from the environment or
// flags), seen by a running agent.
func TestCLI(t *testing.T) {
	e := newEnv(t, "n1")
	n1 := e.node("n1")
	a := e.start(n1, nil)
	ctx := context.Background()
	c := &cli{t: t, bin: tabbyBinary(t)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, agent.EnvPrefix) && !strings.HasPrefix(kv, "KUBECONFIG=") {
			c.env = append(c.env, kv)
		}
	}
	c.env = append(c.env, agent.EnvPrefix+"DATASTORE=kubernetes", agent.EnvPrefix+"KUBECONFIG="+e.kubeconfig)
	ns := e.namespace("tabby-cli", nil)
	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(doc), 0o644))
		return p
	}
	gnp := write("gnp.yaml", `apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: deny-db, labels: {owner: cli}}
spec:
  order: 20
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'api'}
    destination: {ports: [5432]}
  - action: Deny
`)
	// Flags instead of the environment for this one.
	out := c.ok("apply", "-f", gnp, "--datastore-type", "kubernetes", "--kubeconfig", e.kubeconfig)
	contains(t, "apply", out, `globalnetworkpolicy "deny-db" created`)
	key := resources.Key{Kind: agent.KindGlobalNetworkPolicy, Name: "deny-db"}
	stored, err := e.store.Get(ctx, key)
	must(t, err)
	g := stored.(*agent.GlobalNetworkPolicy)
	if g.Spec.Selector != "app == 'db'" || len(g.Spec.Ingress) != 2 || g.Labels["owner"] != "cli" || g.Spec.Tier != "default" ||
		g.ResourceVersion == "" || g.UID == "" {
		t.Fatalf("stored: %+v", g)
	}
	waitFor(t, "the agent compiles the policy", 10*time.Second, func() bool {
		return a.Status(ctx).Policy.Policies == 1
	})

	// Apply again, changed: configured, a new version.
	b, err := os.ReadFile(gnp)
	must(t, err)
	must(t, os.WriteFile(gnp, bytes.Replace(b, []byte("order: 20"), []byte("order: 30"), 1), 0o644))
	contains(t, "apply again", c.ok("apply", "-f", gnp), `globalnetworkpolicy "deny-db" configured`)
	again, err := e.store.Get(ctx, key)
	must(t, err)
	if o := again.(*agent.GlobalNetworkPolicy).Spec.Order; o == nil || *o != 30 || again.Meta().ResourceVersion == g.ResourceVersion {
		t.Errorf("after the second apply: order %v, version %s (was %s)", o, again.Meta().ResourceVersion, g.ResourceVersion)
	}

	// get: table, YAML, JSON.
	contains(t, "get table", c.ok("get", "gnp"), "NAME", "deny-db")
	y := c.ok("get", "globalnetworkpolicy", "deny-db", "-o", "yaml")
	contains(t, "get -o yaml", y, "kind: GlobalNetworkPolicy", "selector: app == 'db'", "order: 30")
	objs, err := agent.Decode([]byte(y))
	if err != nil || len(objs) != 1 {
		t.Fatalf("get -o yaml does not decode: %v\n%s", err, y)
	}
	var js struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name, ResourceVersion string
		} `json:"metadata"`
	}
	must(t, json.Unmarshal([]byte(c.ok("get", "gnp", "deny-db", "-o", "json")), &js))
	if js.Kind != "GlobalNetworkPolicy" || js.Metadata.Name != "deny-db" || js.Metadata.ResourceVersion == "" {
		t.Errorf("get -o json: %+v", js)
	}

	// A namespaced Tabby NetworkPolicy and a Tier.
	np := write("np.yaml", `apiVersion: tabby.dev/v1
kind: Tier
metadata: {name: platform}
spec: {order: 50}
---
apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata: {name: api, namespace: `+ns+`}
spec:
  tier: platform
  selector: app == 'api'
  egress:
  - action: Pass
`)
	contains(t, "apply np", c.ok("apply", "-f", np), `tier "platform" created`, `networkpolicy "`+ns+`/api" created`)
	contains(t, "get netpol", c.ok("get", "networkpolicy", "-n", ns), ns, "api")
	waitFor(t, "the agent compiles both policies", 10*time.Second, func() bool {
		st := a.Status(ctx)
		return st.Policy.Policies == 2 && len(st.Policy.Errors) == 0
	})

	// Invalid input applies nothing and names the object and the field.
	bad := write("bad.yaml", `apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: bad}
spec:
  selector: app == 'x
`)
	contains(t, "apply invalid", c.fails("apply", "-f", bad), `GlobalNetworkPolicy "bad"`, "spec.selector")
	if _, err := e.store.Get(ctx, resources.Key{Kind: agent.KindGlobalNetworkPolicy, Name: "bad"}); !datastore.IsNotFound(err) {
		t.Errorf("invalid policy stored: %v", err)
	}
	// Workload endpoints are the pods with Kubernetes.
	contains(t, "get weps", c.fails("get", "workloadendpoints"), "pods are the workload endpoints")

	// delete by name and by file.
	contains(t, "delete", c.ok("delete", "gnp", "deny-db"), `globalnetworkpolicy "deny-db" deleted`)
	contains(t, "get deleted", c.fails("get", "gnp", "deny-db"), "not found")
	contains(t, "delete -f", c.ok("delete", "-f", np), `networkpolicy "`+ns+`/api" deleted`, `tier "platform" deleted`)
	waitFor(t, "the agent drops the policies", 10*time.Second, func() bool {
		st := a.Status(ctx)
		return st.Policy.Policies == 0
	})
	contains(t, "delete missing", c.fails("delete", "gnp", "deny-db"), "not found")
	c.ok("delete", "gnp", "deny-db", "--ignore-not-found")
}
