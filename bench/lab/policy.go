package lab

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/resources"
)

// PolicyScenario is one policy check: objects applied to the datastore,
// and for every pair of pods and protocol whether traffic is then
// allowed.
type PolicyScenario struct {
	Name string
	// What says in a few words what the objects do.
	What string
	// YAML holds the objects (tabby.dev/v1).
	YAML string
	// Allowed is the expectation for traffic from one pod to another
	// with proto (icmp, tcp, udp; tcp and udp to CheckPort).
	Allowed func(from, to Pod, proto string) bool
}

// defaultDenyYAML isolates every lab pod both ways.
const defaultDenyYAML = `apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: lab-default-deny
spec:
  order: 1000
  selector: app == 'lab'
  types: [Ingress, Egress]
`

// PolicyScenarios are the lab's policy checks, in the order they run.
// Each starts from no policy and is removed before the next.
func PolicyScenarios() []PolicyScenario {
	role := func(p Pod) string { return p.Labels[LabelRole] }
	return []PolicyScenario{
		{
			Name: "default-deny",
			What: "GlobalNetworkPolicy app=='lab', Ingress+Egress, no rules",
			YAML: defaultDenyYAML,
			Allowed: func(from, to Pod, proto string) bool {
				return false
			},
		},
		{
			Name: "allow-by-label",
			What: "default deny + web egress and db ingress allowed for TCP " + fmt.Sprint(CheckPort) + " by role label",
			YAML: defaultDenyYAML + `---
apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: lab-web-egress-to-db
spec:
  order: 100
  selector: role == 'web'
  types: [Egress]
  egress:
  - action: Allow
    protocol: TCP
    destination:
      selector: role == 'db'
      ports: [` + fmt.Sprint(CheckPort) + `]
---
apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: lab-db-ingress-from-web
spec:
  order: 100
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == 'web'
    destination:
      ports: [` + fmt.Sprint(CheckPort) + `]
`,
			Allowed: func(from, to Pod, proto string) bool {
				return proto == "tcp" && role(from) == "web" && role(to) == "db"
			},
		},
		{
			Name: "namespace-isolation",
			What: "NetworkPolicy per namespace: ingress only from the same namespace",
			YAML: nsIsolationYAML(NamespaceA) + "---\n" + nsIsolationYAML(NamespaceB),
			Allowed: func(from, to Pod, proto string) bool {
				return from.Namespace == to.Namespace
			},
		},
		{
			Name: "egress-deny",
			What: "web pods: egress to namespace " + NamespaceB + " denied, the rest allowed",
			YAML: `apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: lab-web-egress-deny
spec:
  order: 100
  selector: role == 'web'
  types: [Egress]
  egress:
  - action: Deny
    destination:
      namespaceSelector: projectcalico.org/name == '` + NamespaceB + `'
  - action: Allow
`,
			Allowed: func(from, to Pod, proto string) bool {
				return !(role(from) == "web" && to.Namespace == NamespaceB)
			},
		},
	}
}

func nsIsolationYAML(ns string) string {
	return `apiVersion: tabby.dev/v1
kind: NetworkPolicy
metadata:
  name: lab-isolate
  namespace: ` + ns + `
spec:
  selector: all()
  types: [Ingress]
  ingress:
  - action: Allow
    source:
      selector: all()
`
}

// checkPolicy runs every scenario: apply, wait until every agent has
// published it, probe every pair and protocol against the expectation
// (allowed traffic passes, denied traffic fails within a short timeout),
// delete, wait. It adds one row per scenario.
func (e *checkEnv) checkPolicy(ctx context.Context, w io.Writer, rep *Report) {
	store, closeStore, err := OpenStore(e.st)
	if err != nil {
		rep.add("policy", false, err.Error())
		return
	}
	defer closeStore()
	base, err := countPolicies(ctx, store)
	if err != nil {
		rep.add("policy", false, err.Error())
		return
	}
	for _, sc := range PolicyScenarios() {
		row := "policy " + sc.Name
		objs := decodeObjects(sc.YAML)
		t0 := time.Now()
		if err := applyAll(ctx, store, objs); err != nil {
			rep.add(row, false, err.Error())
			_ = deleteAll(ctx, store, objs)
			continue
		}
		err := waitPolicies(ctx, e.st.Nodes, base+len(objs), 30*time.Second)
		published := time.Since(t0)
		var res matrixResult
		if err == nil {
			res = e.probeAll(ctx, []string{"icmp", "tcp", "udp"}, sc.Allowed)
		}
		derr := deleteAll(ctx, store, objs)
		if derr == nil {
			derr = waitPolicies(ctx, e.st.Nodes, base, 30*time.Second)
		}
		switch {
		case err != nil:
			rep.add(row, false, err.Error())
		case derr != nil:
			rep.add(row, false, "remove: "+derr.Error())
		default:
			ok := len(res.mismatches) == 0
			rep.figure("policy-"+sc.Name, e.st.Config.Dataplane, "published", ms(published), "ms")
			rep.add(row, ok, fmt.Sprintf("%d/%d as expected (%d allowed, %d denied); published on %d nodes in %s",
				res.total-len(res.mismatches), res.total, res.allowed, res.denied, len(e.st.Nodes),
				published.Round(time.Millisecond)))
			if !ok {
				fmt.Fprintf(w, "policy %s (%s): unexpected results:\n", sc.Name, sc.What)
				printLimited(w, res.mismatches, 20)
			}
		}
	}
	// The lab as found: every pair again, every protocol.
	res := e.probeAll(ctx, []string{"icmp", "tcp", "udp"}, func(Pod, Pod, string) bool { return true })
	rep.add("policy removed: matrix", len(res.mismatches) == 0,
		fmt.Sprintf("%d/%d pass again", res.total-len(res.mismatches), res.total))
	if len(res.mismatches) > 0 {
		fmt.Fprintln(w, "after the policies were removed:")
		printLimited(w, res.mismatches, 20)
	}
}

// countPolicies counts the policies in the datastore (the lab's checks
// add theirs on top of what a user applied).
func countPolicies(ctx context.Context, s *agent.Store) (int, error) {
	n := 0
	for _, k := range []resources.Kind{agent.KindNetworkPolicy, agent.KindGlobalNetworkPolicy} {
		objs, err := s.List(ctx, k)
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", k, err)
		}
		n += len(objs)
	}
	return n, nil
}

func printLimited(w io.Writer, lines []string, n int) {
	for i, l := range lines {
		if i == n {
			fmt.Fprintf(w, "  ... %d more\n", len(lines)-n)
			return
		}
		fmt.Fprintln(w, "  "+strings.TrimSpace(l))
	}
}
