package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// tabby runs the command line and returns its exit code, stdout and stderr.
func tabby(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// useEtcd points the CLI at the shared etcd under a fresh prefix.
func useEtcd(t *testing.T) {
	t.Setenv("TABBY_ETCD_ENDPOINTS", strings.Join(etcdtest.Server(t).Endpoints(), ","))
	t.Setenv("TABBY_ETCD_PREFIX", etcdtest.Prefix(t))
}

func file(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const cliResources = `
apiVersion: tabby.dev/v1
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 10.80.0.0/16
  vxlanMode: CrossSubnet
---
apiVersion: tabby.dev/v1
kind: Tier
metadata: {name: security}
spec: {order: 10}
---
apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: shop
spec:
  tier: security
  order: 100
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80]}
---
apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: deny-all}
spec:
  order: 2000
  egress: [{action: Deny}]
`

func expect(t *testing.T, what string, code int, stdout, stderr string, wantCode int, wantOut, wantErr []string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", what, code, wantCode, stdout, stderr)
	}
	for _, w := range wantOut {
		if !strings.Contains(stdout, w) {
			t.Errorf("%s: stdout lacks %q:\n%s", what, w, stdout)
		}
	}
	for _, w := range wantErr {
		if !strings.Contains(stderr, w) {
			t.Errorf("%s: stderr lacks %q:\n%s", what, w, stderr)
		}
	}
}

// TestCLIRoundTrip applies, gets and deletes resources with the CLI on a
// real etcd, and checks the error cases.
func TestCLIRoundTrip(t *testing.T) {
	useEtcd(t)
	res := file(t, cliResources)
	code, out, errs := tabby(t, "apply", "-f", res)
	expect(t, "apply", code, out, errs, 0, []string{`ippool "pool-a" created`, `tier "security" created`,
		`networkpolicy "shop/allow-web" created`, `globalnetworkpolicy "deny-all" created`}, nil)
	code, out, errs = tabby(t, "apply", "-f", res)
	expect(t, "apply again", code, out, errs, 0, []string{`ippool "pool-a" configured`, `networkpolicy "shop/allow-web" configured`}, nil)

	code, out, errs = tabby(t, "get", "ippools")
	expect(t, "get pools", code, out, errs, 0, []string{"NAME", "CIDR", "pool-a", "10.80.0.0/16"}, nil)
	code, out, errs = tabby(t, "get", "ippool", "pool-a", "-o", "wide")
	expect(t, "get pool wide", code, out, errs, 0, []string{"BLOCKSIZE", "26", "CrossSubnet"}, nil)
	code, out, errs = tabby(t, "get", "networkpolicy", "-n", "shop")
	expect(t, "get policies", code, out, errs, 0, []string{"NAMESPACE", "shop", "allow-web", "security", "app == 'web'"}, nil)
	code, out, errs = tabby(t, "get", "gnp", "deny-all", "-o", "yaml")
	expect(t, "get yaml", code, out, errs, 0, []string{"apiVersion: tabby.dev/v1", "kind: GlobalNetworkPolicy", "name: deny-all", "resourceVersion:"}, nil)
	objs, err := agent.Decode([]byte(out))
	if err != nil || len(objs) != 1 {
		t.Errorf("-o yaml does not decode: %v", err)
	}
	code, out, errs = tabby(t, "get", "IPPool", "-o", "json")
	expect(t, "get json", code, out, errs, 0, []string{`"kind": "IPPoolList"`, `"cidr": "10.80.0.0/16"`}, nil)

	// Invalid resources: every error names the object and the field, and
	// nothing is written.
	bad := file(t, `
apiVersion: tabby.dev/v1
kind: IPPool
metadata: {name: bad-pool}
spec: {cidr: 10.81.0.0/16, blockSize: 33}
---
apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata: {name: bad-policy, namespace: shop}
spec:
  ingress: [{action: Maybe}]
---
apiVersion: tabby.dev/v1
kind: AgentConfiguration
metadata: {name: default}
spec: {dataplane: foo}
`)
	code, out, errs = tabby(t, "apply", "-f", bad)
	expect(t, "apply invalid", code, out, errs, 1, nil, []string{
		`IPPool "bad-pool": spec.blockSize: 33 is out of range 20..32 for IPv4`,
		`NetworkPolicy "shop/bad-policy": spec.ingress[0].action: "Maybe" is not one of Allow, Deny, Pass, Log`,
		`AgentConfiguration "default": spec.dataplane: "foo": must be afxdp or kernel`,
		"3 of 3 resources invalid; nothing applied"})
	code, _, _ = tabby(t, "get", "ippool", "bad-pool")
	if code != 1 {
		t.Errorf("invalid pool was written (get exit %d)", code)
	}
	overlap := file(t, "apiVersion: tabby.dev/v1\nkind: IPPool\nmetadata: {name: pool-b}\nspec: {cidr: 10.80.128.0/17}\n")
	code, out, errs = tabby(t, "apply", "-f", overlap)
	expect(t, "apply overlapping", code, out, errs, 1, nil, []string{`IPPool "pool-b": spec.cidr: 10.80.128.0/17 overlaps IPPool "pool-a"`})
	undecodable := file(t, "apiVersion: tabby.dev/v1\nkind: IPPool\nmetadata: {name: x}\nspec: {cidr: 10.9.0.0/16, size: 3}\n")
	code, out, errs = tabby(t, "apply", "-f", undecodable)
	expect(t, "apply unknown field", code, out, errs, 1, nil, []string{"r.yaml: document 1: IPPool: unknown field \"spec.size\""})
	code, out, errs = tabby(t, "apply")
	expect(t, "apply without -f", code, out, errs, 2, nil, []string{"apply needs -f"})
	code, out, errs = tabby(t, "get", "pods")
	expect(t, "unknown kind", code, out, errs, 2, nil, []string{`unknown kind "pods"`})
	code, out, errs = tabby(t, "get", "ippool", "-o", "xml")
	expect(t, "bad output", code, out, errs, 2, nil, []string{`-o "xml"`})

	// Delete by name, by file, and missing objects.
	code, out, errs = tabby(t, "delete", "gnp", "deny-all")
	expect(t, "delete", code, out, errs, 0, []string{`globalnetworkpolicy "deny-all" deleted`}, nil)
	code, out, errs = tabby(t, "delete", "gnp", "deny-all")
	expect(t, "delete missing", code, out, errs, 1, nil, []string{`GlobalNetworkPolicy "deny-all": not found`})
	code, out, errs = tabby(t, "delete", "gnp", "deny-all", "--ignore-not-found")
	expect(t, "delete ignore missing", code, out, errs, 0, nil, nil)
	code, out, errs = tabby(t, "delete", "-f", res, "--ignore-not-found")
	expect(t, "delete -f", code, out, errs, 0, []string{`ippool "pool-a" deleted`, `networkpolicy "shop/allow-web" deleted`}, nil)
	code, out, errs = tabby(t, "get", "networkpolicies")
	expect(t, "get after delete", code, out, errs, 0, []string{"NAMESPACE"}, nil)
	if strings.Contains(out, "allow-web") {
		t.Errorf("policy still listed:\n%s", out)
	}
}

// TestCLINoDatastore: without endpoints and without an agent's embedded
// etcd the CLI says what to set.
func TestCLINoDatastore(t *testing.T) {
	t.Setenv("TABBY_ETCD_ENDPOINTS", "")
	t.Setenv("TABBY_STATE_DIR", t.TempDir())
	code, out, errs := tabby(t, "get", "ippools")
	expect(t, "no datastore", code, out, errs, 1, nil, []string{"no etcd endpoints: set TABBY_ETCD_ENDPOINTS"})
	t.Setenv("TABBY_DATASTORE", "mongodb")
	code, out, errs = tabby(t, "get", "ippools")
	expect(t, "bad datastore", code, out, errs, 1, nil, []string{`TABBY_DATASTORE="mongodb": must be etcd or kubernetes`})
	code, out, errs = tabby(t, "status", "--agent", filepath.Join(t.TempDir(), "none.sock"))
	expect(t, "status without agent", code, out, errs, 1, nil, []string{"no agent at"})
}

// TestAgentCommandBadConfig: a bad value fails at once, naming its source,
// before any datastore is contacted.
func TestAgentCommandBadConfig(t *testing.T) {
	t.Setenv("TABBY_ETCD_ENDPOINTS", "http://127.0.0.1:1")
	t.Setenv("TABBY_DATAPLANE", "foo")
	code, out, errs := tabby(t, "agent")
	expect(t, "env", code, out, errs, 1, nil, []string{`TABBY_DATAPLANE="foo": must be afxdp or kernel`})
	t.Setenv("TABBY_DATAPLANE", "")
	os.Unsetenv("TABBY_DATAPLANE")
	cfg := file(t, "pollMode: sometimes\n")
	code, out, errs = tabby(t, "agent", "--config", cfg)
	expect(t, "file", code, out, errs, 1, nil, []string{`r.yaml: pollMode="sometimes": must be one of adaptive, busy, interrupt`})
	code, out, errs = tabby(t, "agent", "--xdp-mode", "fast")
	expect(t, "flag", code, out, errs, 1, nil, []string{`--xdp-mode="fast": must be one of auto, native, generic`})
	code, out, errs = tabby(t, "agent", "--no-such-flag")
	expect(t, "unknown flag", code, out, errs, 2, nil, []string{"flag provided but not defined"})
}
