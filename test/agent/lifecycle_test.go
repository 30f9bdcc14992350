package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/rest"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/datastoretest"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/test/kubeapi"
)

// TestAgentConfigurationLive: AgentConfiguration custom resources
// configure the agent: "default" at start (below flags, so no log-level
// flag here), "node.n1" over it while it runs; deleting it falls back.
// An invalid one is refused naming the field.
func TestAgentConfigurationLive(t *testing.T) {
	e := newEnv(t, "n1")
	n1 := e.node("n1")
	ctx := context.Background()
	applyYAML(t, e.store, "apiVersion: tabby.dev/v1\nkind: AgentConfiguration\nmetadata: {name: default}\nspec: {logLevel: warn}\n")
	a := e.start(n1, map[string]string{"log-level": ""})
	if n1.lv.Level() != slog.LevelWarn {
		t.Fatalf("level %v at start, want the datastore's warn", n1.lv.Level())
	}
	if src := a.Config().Sources["logLevel"]; src != "datastore" {
		t.Errorf("logLevel from %q, want datastore", src)
	}
	applyYAML(t, e.store, "apiVersion: tabby.dev/v1\nkind: AgentConfiguration\nmetadata: {name: node.n1}\nspec: {logLevel: debug}\n")
	waitFor(t, "debug level", 10*time.Second, func() bool { return n1.lv.Level() == slog.LevelDebug })
	// Another node's configuration does not apply here.
	applyYAML(t, e.store, "apiVersion: tabby.dev/v1\nkind: AgentConfiguration\nmetadata: {name: node.n9}\nspec: {logLevel: error}\n")
	_, err := e.store.Delete(ctx, resources.Key{Kind: agent.KindAgentConfiguration, Name: "node.n1"}, "")
	must(t, err)
	waitFor(t, "warn level again", 10*time.Second, func() bool { return n1.lv.Level() == slog.LevelWarn })

	objs, err := agent.Decode([]byte("apiVersion: tabby.dev/v1\nkind: AgentConfiguration\nmetadata: {name: node.n1}\nspec: {logLevel: loud}\n"))
	must(t, err)
	_, _, err = e.store.Apply(ctx, objs[0])
	if err == nil || !strings.Contains(err.Error(), `AgentConfiguration "node.n1"`) || !strings.Contains(err.Error(), "logLevel") {
		t.Fatalf("invalid configuration: %v", err)
	}
	errorIs(t, err, resources.ErrInvalid)
	time.Sleep(200 * time.Millisecond)
	if n1.lv.Level() != slog.LevelWarn || !a.Status(ctx).Ready {
		t.Errorf("after a refused configuration: level %v, ready %v", n1.lv.Level(), a.Status(ctx).Ready)
	}
}

// netEvents records the route (protocol 116) and link changes of a
// namespace until stopped.
type netEvents struct {
	mu     sync.Mutex
	events []string
	done   chan struct{}
}

func watchNet(t *testing.T, n *node) *netEvents {
	t.Helper()
	ev := &netEvents{done: make(chan struct{})}
	h := n.ns.Handle()
	routes := make(chan netlink.RouteUpdate, 256)
	links := make(chan netlink.LinkUpdate, 256)
	fail := func(err error) { ev.add(fmt.Sprintf("subscription error: %v", err)) }
	must(t, netlink.RouteSubscribeWithOptions(routes, ev.done, netlink.RouteSubscribeOptions{Namespace: &h, ErrorCallback: fail}))
	must(t, netlink.LinkSubscribeWithOptions(links, ev.done, netlink.LinkSubscribeOptions{Namespace: &h, ErrorCallback: fail}))
	go func() {
		for {
			select {
			case r, ok := <-routes:
				if !ok {
					return
				}
				if r.Protocol == 116 {
					op := "add"
					if r.Type == unix.RTM_DELROUTE {
						op = "delete"
					}
					ev.add(fmt.Sprintf("%s route %s", op, r.Route))
				}
			case l, ok := <-links:
				if !ok {
					return
				}
				if l.Header.Type == unix.RTM_DELLINK {
					ev.add(fmt.Sprintf("delete link %s", l.Attrs().Name))
				} else if l.Attrs().Name == vxlanDev && l.Attrs().Flags&net.FlagUp == 0 {
					ev.add(fmt.Sprintf("link %s down", l.Attrs().Name))
				}
			case <-ev.done:
				return
			}
		}
	}()
	t.Cleanup(ev.stop)
	return ev
}

func (ev *netEvents) add(s string) {
	ev.mu.Lock()
	ev.events = append(ev.events, s)
	ev.mu.Unlock()
}

func (ev *netEvents) stop() {
	select {
	case <-ev.done:
	default:
		close(ev.done)
	}
}

func (ev *netEvents) list() []string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]string(nil), ev.events...)
}

// vxlanIndex returns the interface index of n's VXLAN device.
func vxlanIndex(t *testing.T, n *node) int {
	t.Helper()
	l, err := n.ns.Link(vxlanDev)
	must(t, err)
	return l.Attrs().Index
}

// TestRestartNoFlap: agent n2 stops and starts again on the same state
// directory. Meanwhile the kernel keeps forwarding (routes, VXLAN device
// and nftables stay), the restarted agent withdraws and re-adds no route
// and does not recreate the VXLAN device on either node, and it converges
// on a policy created while it was down.
func TestRestartNoFlap(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	n1, n2 := e.node("n1"), e.node("n2")
	e.start(n1, nil)
	e.start(n2, nil)
	ctx := context.Background()
	ns := e.namespace("tabby-rs", nil)
	web := e.addPod(n2, ns, "web", map[string]string{"app": "web"})
	client := e.addPod(n1, ns, "client", map[string]string{"app": "client"})
	web.serve(t, 8080)
	expectTraffic(t, client, web, 8080, true)
	before := map[string]string{"n1": protoRoutes(t, n1), "n2": protoRoutes(t, n2)}
	idx := map[string]int{"n1": vxlanIndex(t, n1), "n2": vxlanIndex(t, n2)}
	routesBefore := n2.a.Status(ctx).Routes
	events := map[string]*netEvents{"n1": watchNet(t, n1), "n2": watchNet(t, n2)}

	e.stop(n2)
	// The kernel forwards without the agent.
	expectTraffic(t, client, web, 8080, true)
	// A policy created while n2 is down, for n2's pod.
	applyYAML(t, e.store, `apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: web-closed}
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [8080]}
`)
	time.Sleep(500 * time.Millisecond)
	if err := client.connect(web, 8080); err != nil {
		t.Fatalf("n2's rules changed without its agent: %v", err)
	}

	a := e.start(n2, nil)
	expectTraffic(t, client, web, 8080, false)
	// Let the restarted agent publish whatever it would.
	waitFor(t, "n2's reconciler to settle", 10*time.Second, func() bool {
		st := a.Status(ctx)
		return st.Ready && !st.Policy.Pending
	})
	time.Sleep(time.Second)
	for _, name := range []string{"n1", "n2"} {
		events[name].stop()
		if ev := events[name].list(); len(ev) > 0 {
			t.Errorf("%s: routes or links changed across n2's restart:\n%s", name, strings.Join(ev, "\n"))
		}
		n := e.node(name)
		if got := protoRoutes(t, n); got != before[name] {
			t.Errorf("%s routes changed:\n%s\nwas:\n%s", name, got, before[name])
		}
		if got := vxlanIndex(t, n); got != idx[name] {
			t.Errorf("%s: %s recreated (index %d, was %d)", name, vxlanDev, got, idx[name])
		}
	}
	st := a.Status(ctx)
	if st.Routes != routesBefore || st.Endpoints.Local != 1 || st.Endpoints.Total != 2 {
		t.Errorf("n2 after restart: routes %+v (was %+v), endpoints %+v", st.Routes, routesBefore, st.Endpoints)
	}
	if eps := st.Endpoints.List; len(eps) != 1 || eps[0].Spec.InterfaceName != web.hostIf || eps[0].Spec.ContainerID != web.containerID {
		t.Errorf("n2 lost its endpoint registration: %+v", eps)
	}
	// The restarted agent still releases its pod's address.
	_, err := e.store.Delete(ctx, resources.Key{Kind: agent.KindGlobalNetworkPolicy, Name: "web-closed"}, "")
	must(t, err)
	expectTraffic(t, client, web, 8080, true)
	dr, err := agent.NewClient(a.Addr("cni")).DeleteEndpoint(ctx, web.containerID)
	must(t, err)
	if len(dr.Released) != 1 || dr.Released[0] != web.ip.String() {
		t.Errorf("delete after restart: %+v", dr)
	}
	handles, _, err := datastore.ListOf[*resources.IPAMHandle](ctx, e.kds)
	must(t, err)
	for _, h := range handles {
		if h.Name == web.containerID {
			t.Errorf("handle %s left after delete", h.Name)
		}
	}
}

// TestApiserverOutage: the agent reaches the apiserver through a proxy
// that the test cuts. The agent stays healthy but not ready (the kinds out
// of sync named, Tabby's policy kinds among them), the kernel keeps
// forwarding with the last rules, and once the connection is back the
// watches relist: a GlobalNetworkPolicy created during the outage is
// enforced and the agent is ready again.
func TestApiserverOutage(t *testing.T) {
	e := newEnv(t, "n1")
	n1 := e.node("n1")
	rc := rest.CopyConfig(kubeapi.Shared(t).Config)
	u, err := url.Parse(rc.Host)
	must(t, err)
	px := datastoretest.NewProxy(t, u.Host)
	rc.Host = "https://" + px.Addr()
	e.kubeconfig = kubeapi.KubeconfigOf(t, rc)
	a := e.start(n1, nil)
	ctx := context.Background()
	ns := e.namespace("tabby-out", nil)
	web := e.addPod(n1, ns, "web", map[string]string{"app": "web"})
	client := e.addPod(n1, ns, "client", map[string]string{"app": "client"})
	web.serve(t, 8080)
	expectTraffic(t, client, web, 8080, true)

	px.Cut()
	var st agent.Status
	waitFor(t, "the agent not ready", 20*time.Second, func() bool {
		st = a.Status(ctx)
		return !st.Ready
	})
	t.Logf("not ready: %d reasons, first: %s", len(st.NotReady), st.NotReady[0])
	waitFor(t, "the policy kinds out of sync", 20*time.Second, func() bool {
		st = a.Status(ctx)
		out := map[string]bool{}
		for _, k := range st.Datastore.Kinds {
			out[k.Kind] = !k.Synced
		}
		return out[string(agent.KindGlobalNetworkPolicy)] && out[string(resources.KindIPAMBlock)]
	})
	if code, _ := httpGet(t, "http://"+a.Addr("health")+"/healthz"); code != 200 {
		t.Errorf("/healthz %d during the outage", code)
	}
	if err := client.connect(web, 8080); err != nil {
		t.Errorf("traffic stopped during the outage: %v", err)
	}
	applyYAML(t, e.store, `apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: web-closed}
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Deny
`)
	time.Sleep(500 * time.Millisecond)
	px.Restore()
	waitFor(t, "the agent ready again", 30*time.Second, func() bool { return a.Status(ctx).Ready })
	expectTraffic(t, client, web, 8080, false)
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
