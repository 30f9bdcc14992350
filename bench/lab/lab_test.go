package lab

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/agent"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"defaults", Config{Nodes: 3, Subnets: 2}, ""},
		{"one dataplane per node", Config{Nodes: 3, Subnets: 2, Dataplane: "kernel,afxdp,kernel"}, ""},
		{"too many dataplanes", Config{Nodes: 2, Subnets: 1, Dataplane: "kernel,afxdp,kernel"}, "3 values for 2 nodes"},
		{"bad dataplane in list", Config{Nodes: 2, Subnets: 1, Dataplane: "kernel,dpdk"}, `value 2 is "dpdk"`},
		{"bad encap", Config{Nodes: 2, Subnets: 1, Encap: "gre"}, `encap "gre"`},
		{"bad name", Config{Name: "Lab!", Nodes: 1, Subnets: 1}, `name "Lab!"`},
		{"IPv6 pool", Config{Nodes: 1, Subnets: 1, PoolCIDR: "fd00::/48"}, "IPv4 prefix"},
		{"no nodes", Config{Nodes: 0, Subnets: 1}, "nodes 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	c := Config{Nodes: 4, Subnets: 2}
	if err := c.Validate(); err != nil || c.Dataplane != "kernel" || c.Encap != "vxlan" || c.PoolCIDR != "10.244.0.0/16" {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
}

func TestNodeDataplaneAndIPIP(t *testing.T) {
	c := Config{Nodes: 4, Subnets: 2, Dataplane: "kernel,afxdp"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := 0; i < c.Nodes; i++ {
		got = append(got, c.NodeDataplane(i))
	}
	if strings.Join(got, ",") != "kernel,afxdp,kernel,afxdp" {
		t.Fatalf("node dataplanes %v", got)
	}
	for _, tc := range []struct {
		dp, encap string
		subnets   int
		want      bool
	}{
		{"kernel", "ipip", 2, true},
		{"kernel,afxdp", "ipip", 2, true},
		{"afxdp", "ipip", 2, false},
		{"kernel", "ipip-crosssubnet", 1, false}, // never crosses a subnet
		{"kernel", "ipip-crosssubnet", 2, true},
		{"kernel", "vxlan", 2, false},
	} {
		c := Config{Nodes: 2, Subnets: tc.subnets, Dataplane: tc.dp, Encap: tc.encap}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if got := c.kernelIPIP(); got != tc.want {
			t.Errorf("%s %s %d subnets: kernelIPIP %v, want %v", tc.dp, tc.encap, tc.subnets, got, tc.want)
		}
	}
	if !(&Config{Encap: "none", Subnets: 2}).NeedsBIRD() || (&Config{Encap: "none", Subnets: 1}).NeedsBIRD() ||
		(&Config{Encap: "vxlan", Subnets: 2}).NeedsBIRD() {
		t.Error("NeedsBIRD: only encap none across subnets")
	}
}

func TestBIRDConfig(t *testing.T) {
	nodes := []Node{{Name: "n1", Address: "192.168.101.11/24", Gateway: "192.168.101.1"},
		{Name: "n2", Address: "192.168.102.12/24", Gateway: "192.168.102.1"}}
	cfg := birdConfig("/run/x/bird.log", netip.MustParseAddr("192.168.101.1"), 64512, nodes)
	for _, want := range []string{
		`log "/run/x/bird.log"`,
		"router id 192.168.101.1;",
		"export where source = RTS_BGP;", // learned routes into the router's kernel table
		"graceful restart on;",
		"protocol bgp node_n1 from node { source address 192.168.101.1; neighbor 192.168.101.11 as 64512; }",
		"protocol bgp node_n2 from node { source address 192.168.102.1; neighbor 192.168.102.12 as 64512; }",
		"export none;", // nothing advertised to the nodes
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("BIRD config lacks %q:\n%s", want, cfg)
		}
	}
	if got := birdName("node-7.x"); got != "node_node_7_x" {
		t.Errorf("birdName: %q", got)
	}
}

func TestRouterPeersValid(t *testing.T) {
	peers := routerPeers(2)
	if len(peers) != 2 {
		t.Fatalf("%d peers", len(peers))
	}
	for i, p := range peers {
		p.Default()
		if err := p.Validate(); err != nil {
			t.Errorf("peer %d: %v", i, err)
		}
	}
}

func TestPodMeta(t *testing.T) {
	roles := map[string]int{}
	nss := map[string]int{}
	for i := 1; i <= 3; i++ {
		for j := 1; j <= 2; j++ {
			ns, l := podMeta(i, j)
			nss[ns]++
			roles[ns+"/"+l[LabelRole]]++
			if l[LabelApp] != "lab" {
				t.Errorf("pod %d/%d: labels %v", i, j, l)
			}
		}
	}
	// Both namespaces hold both roles, so every scenario has allowed and
	// denied pairs on every path.
	for _, k := range []string{"lab-a/web", "lab-a/db", "lab-b/web", "lab-b/db"} {
		if roles[k] == 0 {
			t.Errorf("no pod %s in %v", k, roles)
		}
	}
	if nss[NamespaceA] != 3 || nss[NamespaceB] != 3 {
		t.Errorf("namespaces %v", nss)
	}
}

// TestPolicyScenarios: every scenario's objects decode and validate as
// the CLI would apply them, and every expectation has both allowed and
// denied traffic (except default deny) over the lab's pods.
func TestPolicyScenarios(t *testing.T) {
	var pods []Pod
	for i := 1; i <= 3; i++ {
		for j := 1; j <= 2; j++ {
			ns, l := podMeta(i, j)
			pods = append(pods, Pod{Name: "p", Node: "n", Namespace: ns, Labels: l})
		}
	}
	names := map[string]bool{}
	for _, sc := range PolicyScenarios() {
		objs, err := agent.Decode([]byte(sc.YAML))
		if err != nil {
			t.Fatalf("%s: %v", sc.Name, err)
		}
		for _, o := range objs {
			o.Default()
			if err := o.Validate(); err != nil {
				t.Errorf("%s: %v", sc.Name, err)
			}
			k := o.ObjectKind()
			if k != agent.KindGlobalNetworkPolicy && k != agent.KindNetworkPolicy {
				t.Errorf("%s: object of kind %s", sc.Name, k)
			}
		}
		if names[sc.Name] {
			t.Errorf("scenario %s twice", sc.Name)
		}
		names[sc.Name] = true
		allowed, denied := 0, 0
		for _, a := range pods {
			for _, b := range pods {
				for _, proto := range []string{"icmp", "tcp", "udp"} {
					if sc.Allowed(a, b, proto) {
						allowed++
					} else {
						denied++
					}
				}
			}
		}
		if denied == 0 || (allowed == 0) != (sc.Name == "default-deny") {
			t.Errorf("%s: %d allowed, %d denied", sc.Name, allowed, denied)
		}
	}
	for _, n := range []string{"default-deny", "allow-by-label", "namespace-isolation", "egress-deny"} {
		if !names[n] {
			t.Errorf("no scenario %s", n)
		}
	}
	objs, err := agent.Decode([]byte(cyclePolicies))
	if err != nil || len(objs) != 2 {
		t.Fatalf("cycle policies: %d, %v", len(objs), err)
	}
	for _, o := range objs {
		if err := o.Validate(); err != nil {
			t.Error(err)
		}
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("percentile sorted its input")
	}
	if percentile(nil, 50) != 0 {
		t.Error("empty")
	}
}

func TestMaxStall(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	samples := []sample{{at(0), 0}, {at(20), 10}, {at(40), 20}, {at(60), 20}, {at(80), 20}, {at(100), 20},
		{at(120), 30}, {at(140), 40}, {at(160), 40}, {at(180), 50}}
	if got := maxStall(samples, at(0), at(200)); got != 60*time.Millisecond {
		t.Errorf("stall %v, want 60ms", got)
	}
	if got := maxStall(samples, at(110), at(200)); got != 20*time.Millisecond {
		t.Errorf("stall after 110ms: %v, want 20ms", got)
	}
	// A stream that never moves again stalls until the end of the window.
	flat := []sample{{at(0), 5}, {at(20), 5}, {at(40), 5}}
	if got := maxStall(flat, at(0), at(40)); got != 40*time.Millisecond {
		t.Errorf("flat stall %v", got)
	}
}

func TestCompareSnapshots(t *testing.T) {
	base := &snapshot{handles: []string{"a", "b"}, inUse: 2, weps: []string{"ns/w1"},
		nodes: map[string]*nodeSnapshot{"n1": {veths: []string{"tab1"}, routes: []string{"10.0.0.1/32 dev tab1"},
			nft: "table x", local: 1, total: 1, inUse: 1}}}
	same := &snapshot{handles: []string{"a", "b"}, inUse: 2, weps: []string{"ns/w1"},
		nodes: map[string]*nodeSnapshot{"n1": {veths: []string{"tab1"}, routes: []string{"10.0.0.1/32 dev tab1"},
			nft: "table x", local: 1, total: 1, inUse: 1}}}
	for _, l := range compareSnapshots(base, same) {
		if !l.OK {
			t.Errorf("identical snapshots: %s: %s", l.Check, l.Detail)
		}
	}
	leaky := &snapshot{handles: []string{"a", "b", "lab-cyc-7"}, inUse: 3, weps: []string{"ns/w1", "lab-cycle/x"},
		nodes: map[string]*nodeSnapshot{"n1": {veths: []string{"tab1", "tab9"},
			routes: []string{"10.0.0.1/32 dev tab1", "10.0.0.9/32 dev tab9"}, nft: "table x\nelement 10.0.0.9",
			local: 2, total: 2, inUse: 2}}}
	bad := map[string]string{}
	for _, l := range compareSnapshots(base, leaky) {
		if !l.OK {
			bad[l.Check] = l.Detail
		}
	}
	for _, c := range []string{"leak: IPAM", "leak: workload endpoints", "leak: veths", "leak: routes", "leak: nftables",
		"leak: agent endpoints"} {
		if bad[c] == "" {
			t.Errorf("%s not reported", c)
		}
	}
	if !strings.Contains(bad["leak: IPAM"], "lab-cyc-7") || !strings.Contains(bad["leak: veths"], "tab9") ||
		!strings.Contains(bad["leak: nftables"], "+ element 10.0.0.9") {
		t.Errorf("details: %v", bad)
	}
}

func TestReport(t *testing.T) {
	r := &Report{}
	r.add("a", true, "fine")
	r.add("b", false, "broken")
	r.figure("cni-add", "kernel", "p50", 12.5, "ms")
	if f := r.Failed(); len(f) != 1 || f[0].Check != "b" {
		t.Fatalf("failed %v", f)
	}
	var sb strings.Builder
	r.Print(&sb)
	if !strings.Contains(sb.String(), "b      FAIL    broken") {
		t.Errorf("table:\n%s", sb.String())
	}
	sb.Reset()
	if err := r.WriteJSON(&sb); err != nil {
		t.Fatal(err)
	}
	if want := `{"suite":"lab","case":"cni-add","impl":"kernel","metric":"p50","value":12.5,"unit":"ms"}` + "\n"; sb.String() != want {
		t.Errorf("JSON %q, want %q", sb.String(), want)
	}
}
