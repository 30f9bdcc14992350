package acl_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/acl/acltest"
)

func TestNftablesStructure(t *testing.T) {
	w := acltest.Generate(7, acltest.Small)
	out, err := acl.RenderNftables(&w.State, acl.Options{Node: "node-0"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "table inet tabby {\n") || !strings.HasSuffix(out, "}\n") {
		t.Fatalf("not a table:\n%s", out)
	}
	if strings.Count(out, "{") != strings.Count(out, "}") {
		t.Fatal("unbalanced braces")
	}
	for _, want := range []string{"chain forward {", "type filter hook forward priority filter; policy accept;",
		"ct state established,related accept", "ip saddr vmap @eg4", "ip6 daddr vmap @in6", "map in4 {",
		"type ipv4_addr : verdict", "flags interval", "goto k0_t0", "counter drop"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
	// Every jump target is defined; every referenced set is defined.
	for _, line := range strings.Split(out, "\n") {
		for _, kw := range []string{"jump ", "goto "} {
			for s := line; strings.Contains(s, kw); {
				s = s[strings.Index(s, kw)+len(kw):]
				name := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '}' })[0]
				if !strings.Contains(out, "chain "+name+" {") {
					t.Errorf("undefined chain %q", name)
				}
			}
		}
		if i := strings.Index(line, "@a"); i >= 0 {
			name := strings.Fields(line[i+1:])[0]
			if !strings.Contains(out, "set "+name+" {") {
				t.Errorf("undefined set %q", name)
			}
		}
	}
	// Local endpoints only: node-0 endpoints appear in the maps.
	for _, e := range w.Endpoints {
		in := strings.Contains(out, e.IPs[0].String()+" : jump")
		if in != (e.Node == "node-0") {
			t.Errorf("endpoint %s (node %s) in maps: %v", e.ID(), e.Node, in)
		}
	}
}

// TestNftablesLoad loads rulesets into a throwaway network namespace with
// nft (skipped when nft or namespaces are unavailable).
func TestNftablesLoad(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (apt-get install nftables)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	ns := fmt.Sprintf("tabby-acl-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for seed := uint64(1); seed <= 5; seed++ {
		w := acltest.Generate(seed, acltest.Small)
		rs, err := acl.RenderNftables(&w.State, acl.Options{Node: "node-1"})
		if err != nil {
			t.Fatal(err)
		}
		f := t.TempDir() + "/rules.nft"
		if err := os.WriteFile(f, []byte("flush ruleset\n"+rs), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-f", f).CombinedOutput(); err != nil {
			t.Fatalf("seed %d: nft -f: %v\n%s", seed, err, out)
		}
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "tabby").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "chain forward") {
			t.Fatalf("list: %v\n%s", err, out)
		}
	}
}
