package agent

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// TestAgentBGP runs the agent with BGP on: the speaker (control/bgp) runs
// and is part of readiness, the node-to-node mesh follows the Nodes in the
// datastore, this node's block is advertised once claimed, and the status
// and metrics show sessions and prefixes.
func TestAgentBGP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// The speaker binds the node address: a loopback one here.
	a, _ := startTablesAgentWith(t, map[string]string{"bgp-enabled": "true", "node-address": "127.0.0.10/8"}, func(s *Store) {
		// A free port, not 179, in the test's network namespace.
		cfg := &resources.BGPConfiguration{ObjectMeta: resources.ObjectMeta{Name: "default"},
			Spec: resources.BGPConfigurationSpec{ListenPort: uint16(port)}}
		if _, err := datastore.Create(context.Background(), s.DS, cfg); err != nil {
			t.Fatal(err)
		}
	})
	ctx := context.Background()
	st := a.Status(ctx)
	if st.BGP == nil || !st.BGP.Running || st.BGP.ASN != 64512 || st.BGP.RouterID != "127.0.0.10" {
		t.Fatalf("bgp status: %+v", st.BGP)
	}
	n2 := &resources.Node{ObjectMeta: resources.ObjectMeta{Name: "n2"},
		Spec: resources.NodeSpec{BGP: &resources.NodeBGPSpec{IPv4Address: "127.0.0.11/8"}}}
	if _, err := datastore.Create(ctx, a.Store().DS, n2); err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(a.Addr("cni")).AddEndpoint(ctx, EndpointRequest{ContainerID: "b1"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "mesh peer and advertised block", 10*time.Second, func() bool {
		st := a.Status(ctx)
		return st.BGP != nil && len(st.BGP.Peers) == 1 && st.BGP.Peers[0].Address == "127.0.0.11" &&
			st.BGP.Advertised == 1
	})
	if p := a.Status(ctx).BGP.Peers[0]; p.Source != "mesh" || p.Established {
		t.Errorf("peer %+v", p)
	}
	_, metrics := httpGet(t, "http://"+a.Addr("metrics")+"/metrics")
	for _, m := range []string{`tabby_bgp_sessions{state="Established"} 0`, `tabby_bgp_prefixes{type="advertised"} 1`,
		`tabby_bgp_prefixes{type="learned"} 0`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}
