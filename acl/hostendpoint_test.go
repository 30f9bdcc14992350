package acl_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/bench/topo"
)

// TestHostEndpointPolicyInKernel enforces host-endpoint policy for traffic
// to the node itself the way Tabby's afxdp mode does: the XDP program passes
// host-bound traffic to the kernel, so the same model is rendered as nftables
// (input/output hooks) and loaded into the node's namespace. Real TCP
// connections check it: the allowed port and the failsafe ports (ssh 22)
// connect, another port does not.
func TestHostEndpointPolicyInKernel(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (make deps installs nftables)")
	}
	tp := topo.ForTest(t, "the")
	node, err := tp.Namespace("node")
	if err != nil {
		t.Fatal(err)
	}
	client, err := tp.Namespace("client")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tp.Veth(node, "eth0", client, "eth0", 1500); err != nil {
		t.Fatal(err)
	}
	nodeIP, clientIP := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")
	if err := node.AddAddr("eth0", netip.PrefixFrom(nodeIP, 24)); err != nil {
		t.Fatal(err)
	}
	if err := client.AddAddr("eth0", netip.PrefixFrom(clientIP, 24)); err != nil {
		t.Fatal(err)
	}
	st := &acl.State{
		Endpoints: []acl.Endpoint{{Name: "node-eth0", Host: true, Labels: map[string]string{"role": "node"},
			IPs: []netip.Addr{nodeIP}}},
		Policies: []acl.Policy{{
			Name: "node-ingress", Selector: "role == 'node'", Types: []acl.Direction{acl.Ingress},
			Ingress: []acl.Rule{{Action: acl.Allow, Protocol: acl.ProtoTCP,
				Destination: acl.EntityRule{Ports: []acl.Port{{Min: 8080, Max: 8080}}}}},
		}},
	}
	ruleset, err := acl.RenderNftables(st, acl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := node.Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
	for _, port := range []int{8080, 22, 9090} {
		if err := node.Do(func() error {
			l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", nodeIP, port))
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	dial := func(port int) error {
		return client.Do(func() error {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", nodeIP, port), 700*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	for _, tc := range []struct {
		port  int
		allow bool
	}{{8080, true}, {22, true}, {9090, false}} {
		err := dial(tc.port)
		if tc.allow && err != nil {
			t.Errorf("port %d: want allowed, got %v", tc.port, err)
		}
		if !tc.allow && err == nil {
			t.Errorf("port %d: want denied by host-endpoint policy, connection succeeded", tc.port)
		}
	}
}
