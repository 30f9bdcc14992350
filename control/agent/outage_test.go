package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/control/datastore/etcd"
)

// fixedEtcd is an embedded etcd on fixed ports and a fixed data directory,
// so that it can be stopped and started again where clients expect it
// (etcd.StartEmbedded picks new ports every time).
type fixedEtcd struct {
	dir          string
	client, peer int
	srv          *embed.Etcd
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newFixedEtcd(t *testing.T) *fixedEtcd {
	e := &fixedEtcd{dir: t.TempDir(), client: freePort(t), peer: freePort(t)}
	e.start(t)
	t.Cleanup(e.stop)
	return e
}

func (e *fixedEtcd) endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", e.client) }

func (e *fixedEtcd) start(t *testing.T) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "outage"
	cfg.Dir = e.dir
	cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", e.client)}
	pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", e.peer)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true
	var err error
	for range 50 { // the ports of a stopped server may take a moment to free
		if e.srv, err = embed.StartEtcd(cfg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.srv.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready")
	}
}

func (e *fixedEtcd) stop() {
	if e.srv != nil {
		e.srv.Close()
		<-e.srv.Server.StopNotify()
		e.srv = nil
	}
}

// TestAgentDatastoreOutage stops the etcd under a running agent: the agent
// reports not ready while it is down and keeps forwarding with its last
// state; after etcd restarts it resyncs, is ready again and follows new
// changes.
func TestAgentDatastoreOutage(t *testing.T) {
	l := newLab(t)
	e := newFixedEtcd(t)
	a := l.startAgent(t, l.agentFlags(t, []string{e.endpoint()}, "/tabby/v1/", nil))
	waitReady(t, a, 200, 20*time.Second)
	ctx := context.Background()
	cli := NewClient(a.Addr("cni"))
	resp, err := cli.AddEndpoint(ctx, EndpointRequest{ContainerID: "c1", Namespace: "shop", Pod: "web-1",
		InterfaceName: "tabpod1", MAC: l.podMAC.String(), Labels: map[string]string{"app": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParsePrefix(resp.IPs[0]).Addr()
	podRaw, peerRaw := l.raw(l.pod, "pod0"), l.raw(l.peer, "p0")
	forwards := func(port uint16, payload string, within time.Duration) bool {
		t.Helper()
		if err := peerRaw.Send(l.udpFrame(t, ip, port, payload)); err != nil {
			t.Fatal(err)
		}
		_, err := podRaw.Recv(within, hasPayload(payload))
		return err == nil
	}
	if !forwards(7001, "before", 5*time.Second) {
		t.Fatal("not forwarding before the outage")
	}
	gen := a.Tables().Load().Policy.Generation

	e.stop()
	body := waitReady(t, a, 503, 15*time.Second)
	if !strings.Contains(body, "datastore") {
		t.Errorf("/readyz says %q, want the datastore named", body)
	}
	if !forwards(7001, "during", 5*time.Second) {
		t.Error("not forwarding during the outage")
	}
	if g := a.Tables().Load().Policy.Generation; g != gen {
		t.Errorf("policy generation changed during the outage: %d -> %d", gen, g)
	}
	if code, _ := httpGet(t, "http://"+a.Addr("health")+"/healthz"); code != 200 {
		t.Errorf("/healthz %d during the outage: the process is fine", code)
	}

	e.start(t)
	waitReady(t, a, 200, 45*time.Second)
	// The watches follow changes again: a policy closes port 7001.
	ds, err := etcd.New(etcd.Config{Endpoints: []string{e.endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	store := &Store{DS: ds, Objects: NewEtcdObjects(ds)}
	applyYAML(t, store, webIngressPolicy)
	waitFor(t, "the policy after the restart", 10*time.Second, func() bool { return udpCheck(a, ip, 7001) == acl.Denied })
	if forwards(7001, "after-denied", 300*time.Millisecond) {
		t.Error("denied packet forwarded after the restart")
	}
	if !forwards(7000, "after-allowed", 5*time.Second) {
		t.Error("allowed packet not forwarded after the restart")
	}
	_, metrics := httpGet(t, "http://"+a.Addr("metrics")+"/metrics")
	if !strings.Contains(metrics, `tabby_datastore_watch_errors_total{kind="IPPool"}`) {
		t.Error("/metrics has no watch errors after the outage")
	}
}
