package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/datapath"
)

// tablesDataplane publishes policy into datapath.Tables without an engine
// (for reconciler tests that need no packets and no root).
type tablesDataplane struct{ t *datapath.Tables }

func (d *tablesDataplane) name() string { return "tables" }
func (d *tablesDataplane) setPolicy(c *acl.Compiled, _ func() *acl.State) error {
	return d.t.SetPolicy(c)
}
func (d *tablesDataplane) counters() (datapath.Counters, bool) { return datapath.Counters{}, false }
func (d *tablesDataplane) err() error                          { return nil }
func (d *tablesDataplane) close() error                        { return nil }

// startTablesAgent starts an agent on the shared etcd whose dataplane is a
// bare Tables.
func startTablesAgent(t *testing.T) (*Agent, *tablesDataplane) {
	return startTablesAgentWith(t, nil, nil)
}

// startTablesAgentWith adds flags and runs before on the agent's store
// before it starts.
func startTablesAgentWith(t *testing.T, extra map[string]string, before func(s *Store)) (*Agent, *tablesDataplane) {
	return startTablesAgentWithOptions(t, extra, before, nil)
}

// startTablesAgentWithOptions also lets opt change the options.
func startTablesAgentWithOptions(t *testing.T, extra map[string]string, before func(s *Store), opt func(*Options)) (*Agent, *tablesDataplane) {
	t.Helper()
	tables, err := datapath.NewTables(datapath.NodeConfig{HostPort: datapath.NoPort, EnforcePolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	dp := &tablesDataplane{t: tables}
	dir := t.TempDir()
	prefix := etcdtest.Prefix(t)
	flags := map[string]string{
		"node-name": "n1", "etcd-endpoints": etcdtest.Server(t).Endpoints()[0], "etcd-prefix": prefix,
		"state-dir": dir, "dataplane": "kernel", "node-address": "192.0.2.10/24", "ipv4-pool-cidr": "10.70.0.0/16",
		"ipv4-pool-block-size": "28", "health-listen": "127.0.0.1:0", "metrics-listen": "127.0.0.1:0",
		"cni-socket": filepath.Join(dir, "agent.sock"), "debounce": "5ms",
	}
	for k, v := range extra {
		flags[k] = v
	}
	if before != nil {
		ds := etcdtest.Datastore(t, etcd.Config{Prefix: prefix})
		before(&Store{DS: ds, Objects: NewEtcdObjects(ds)})
	}
	fl, err := FlagLayer(flags)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := Options{Layers: []*ConfigLayer{fl}, Logger: testLogger(t), dataplane: dp, ProbeInterval: 2 * time.Second}
	if opt != nil {
		opt(&opts)
	}
	a, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	waitReady(t, a, 200, 20*time.Second)
	return a, dp
}

// TestConcurrentReconciler drives the reconciler from every side at once
// (endpoint ADD/DEL from several clients, policy and tier changes in the
// datastore, status, readiness and metrics readers) and checks that the
// published state converges on the datastore's. Run with -race.
func TestConcurrentReconciler(t *testing.T) {
	a, dp := startTablesAgent(t)
	ctx := context.Background()
	cli := NewClient(a.Addr("cni"))
	const workers, perWorker = 4, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker*2)
	kept := make(chan netip.Addr, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				id := fmt.Sprintf("w%d-c%d", w, i)
				resp, err := cli.AddEndpoint(ctx, EndpointRequest{ContainerID: id, Namespace: fmt.Sprintf("ns%d", w),
					Pod: id, Labels: map[string]string{"app": fmt.Sprintf("a%d", i%3)}})
				if err != nil {
					errs <- fmt.Errorf("add %s: %w", id, err)
					continue
				}
				ip := netip.MustParsePrefix(resp.IPs[0]).Addr()
				if _, ok := dp.t.Load().Policy.EndpointOf(ip); !ok {
					errs <- fmt.Errorf("add %s: %s not in the policy published before the reply", id, ip)
				}
				if i%2 == 0 {
					if _, err := cli.DeleteEndpoint(ctx, id); err != nil {
						errs <- fmt.Errorf("delete %s: %w", id, err)
					}
				} else {
					kept <- ip
				}
			}
		})
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() { // policies and tiers churn
		store := a.Store()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			doc := fmt.Sprintf(`
apiVersion: tabby.dev/v1
kind: Tier
metadata: {name: t%d}
spec: {order: %d}
---
apiVersion: tabby.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: p%d}
spec:
  tier: t%d
  selector: app == 'a%d'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [%d]}}]
`, i%3, i, i%5, i%3, i%3, 1000+i)
			objs, err := Decode([]byte(doc))
			if err != nil {
				errs <- err
				return
			}
			for _, o := range objs {
				if _, _, err := store.Apply(ctx, o); err != nil {
					errs <- err
				}
			}
			if i%4 == 3 {
				store.Delete(ctx, resources.Key{Kind: KindGlobalNetworkPolicy, Name: fmt.Sprintf("p%d", i%5)}, "")
			}
		}
	})
	bg.Go(func() { // readers
		for {
			select {
			case <-stop:
				return
			default:
			}
			a.Status(ctx)
			for _, p := range []string{"/readyz", "/metrics", "/healthz"} {
				if resp, err := http.Get("http://" + a.Addr("health") + p); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			cli.Endpoints(ctx)
		}
	})
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	close(kept)
	want := map[netip.Addr]bool{}
	for ip := range kept {
		want[ip] = true
	}
	// Converged: the published policy holds exactly the kept endpoints.
	waitFor(t, "convergence", 10*time.Second, func() bool {
		st := a.Status(ctx)
		return !st.Policy.Pending && st.Endpoints.Local == len(want)
	})
	pol := dp.t.Load().Policy
	for ip := range want {
		if _, ok := pol.EndpointOf(ip); !ok {
			t.Errorf("kept endpoint %s missing from the policy", ip)
		}
	}
	st := a.Status(ctx)
	inUse := 0
	for _, b := range st.Blocks {
		inUse += b.InUse
	}
	if inUse != len(want) || st.Endpoints.Local != len(want) {
		t.Errorf("%d addresses in use, %d local endpoints, want %d", inUse, st.Endpoints.Local, len(want))
	}
	if len(st.Policy.Errors) > 0 {
		t.Errorf("policy errors: %v", st.Policy.Errors)
	}
}

// TestAgentConfigurationLive: an AgentConfiguration written while the
// agent runs changes its log level at once (node over default), and
// removing it restores the lower layer.
func TestAgentConfigurationLive(t *testing.T) {
	lv := new(slog.LevelVar)
	before := func(s *Store) {
		applyYAML(t, s, "apiVersion: tabby.dev/v1\nkind: AgentConfiguration\nmetadata: {name: default}\nspec: {logLevel: warn}\n")
	}
	a, _ := startTablesAgentWithOptions(t, nil, before, func(o *Options) { o.LevelVar = lv })
	if lv.Level() != slog.LevelWarn {
		t.Fatalf("level %v at start, want the datastore's warn", lv.Level())
	}
	if a.Config().Sources["logLevel"] != "datastore" {
		t.Errorf("logLevel source %q", a.Config().Sources["logLevel"])
	}
	applyYAML(t, a.Store(), "apiVersion: tabby.dev/v1\nkind: AgentConfiguration\nmetadata: {name: node.n1}\nspec: {logLevel: debug}\n")
	waitFor(t, "debug level", 5*time.Second, func() bool { return lv.Level() == slog.LevelDebug })
	if _, err := a.Store().Delete(context.Background(), resources.Key{Kind: KindAgentConfiguration, Name: "node.n1"}, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "warn level again", 5*time.Second, func() bool { return lv.Level() == slog.LevelWarn })
}
