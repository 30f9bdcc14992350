package acl_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/acl/acltest"
)

// loadCompiler returns a Compiler holding the tiers, namespaces, endpoints
// and policies of w.
func loadCompiler(t *testing.T, w *acltest.World) *acl.Compiler {
	t.Helper()
	c := acl.NewCompiler(acl.Options{})
	for _, tr := range w.Tiers {
		if err := c.SetTier(tr); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range w.Namespaces {
		c.SetNamespace(n)
	}
	for _, e := range w.Endpoints {
		if err := c.SetEndpoint(e); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range w.Policies {
		if err := c.SetPolicy(p); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// TestIncrementalDifferential applies random changes through a Compiler and
// checks every snapshot against a reference built from scratch.
func TestIncrementalDifferential(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			w := acltest.Generate(seed, acltest.Small)
			extra := acltest.Generate(seed+1000, acltest.Small) // source of new policies
			r := rand.New(rand.NewPCG(seed, 7))
			c := loadCompiler(t, w)
			for step := 0; step < 40; step++ {
				switch r.IntN(7) {
				case 0: // label change
					i := r.IntN(len(w.Endpoints))
					e := &w.Endpoints[i]
					l := map[string]string{}
					for k, v := range e.Labels {
						l[k] = v
					}
					l["app"] = []string{"web", "api", "db", "fresh"}[r.IntN(4)]
					if r.IntN(2) == 0 {
						l["role"] = "admin"
					} else {
						delete(l, "role")
					}
					e.Labels = l
					if err := c.SetEndpoint(*e); err != nil {
						t.Fatal(err)
					}
				case 1: // policy edit: replace with another generated policy
					i := r.IntN(len(w.Policies))
					np := extra.Policies[r.IntN(len(extra.Policies))]
					np.Name, np.Namespace = w.Policies[i].Name, w.Policies[i].Namespace
					if np.Namespace != "" {
						np.NamespaceSelector = ""
					}
					if err := c.SetPolicy(np); err != nil {
						t.Fatal(err)
					}
					w.Policies[i] = np
				case 2: // policy delete
					if len(w.Policies) > 1 {
						i := r.IntN(len(w.Policies))
						c.DeletePolicy(w.Policies[i].ID())
						w.Policies = append(w.Policies[:i], w.Policies[i+1:]...)
					}
				case 3: // new endpoint
					k := len(w.Endpoints) + step*1000
					e := acl.Endpoint{Name: fmt.Sprintf("new%d", k), Namespace: fmt.Sprintf("ns%d", r.IntN(3)),
						Labels: map[string]string{"app": "new", "env": "prod"},
						IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, 200, byte(k >> 8), byte(k)})},
						Ports:  []acl.NamedPort{{Name: "http", Protocol: acl.ProtoTCP, Port: uint16(7000 + r.IntN(3))}}}
					if err := c.SetEndpoint(e); err != nil {
						t.Fatal(err)
					}
					w.Endpoints = append(w.Endpoints, e)
					w.Addrs4 = append(w.Addrs4, e.IPs[0])
				case 4: // endpoint delete
					i := r.IntN(len(w.Endpoints))
					c.DeleteEndpoint(w.Endpoints[i].ID())
					w.Endpoints = append(w.Endpoints[:i], w.Endpoints[i+1:]...)
				case 5: // namespace labels
					i := r.IntN(len(w.Namespaces))
					w.Namespaces[i].Labels = map[string]string{"team": fmt.Sprintf("t%d", r.IntN(3)), "env": "prod"}
					c.SetNamespace(w.Namespaces[i])
				case 6: // an invalid policy is rejected and changes nothing
					bad := w.Policies[0]
					bad.Ingress = []acl.Rule{{Source: acl.EntityRule{Nets: []string{"10.0.0.0/33"}}}}
					bad.Types = nil
					if err := c.SetPolicy(bad); err == nil {
						t.Fatal("invalid policy accepted")
					}
				}
				cp, _ := c.Compile()
				ref, err := acl.NewReference(&w.State, acl.Options{})
				if err != nil {
					t.Fatal(err)
				}
				pkts := w.Packets(seed*100+uint64(step), 2000)
				for i := range pkts {
					if diff := referenceDiff(cp, ref, &pkts[i]); diff != "" {
						t.Fatalf("step %d packet %s", step, diff)
					}
				}
			}
		})
	}
}

// TestCompilerCollect churns labels until stale classes force the compiler
// to start over, and checks the result against the reference.
func TestCompilerCollect(t *testing.T) {
	w := acltest.Generate(5, acltest.Small)
	c := loadCompiler(t, w)
	classes := 0
	for i := 0; i < 1300; i++ {
		e := &w.Endpoints[i%len(w.Endpoints)]
		e.Labels = map[string]string{"app": []string{"web", "api", "db"}[i%3], "gen": fmt.Sprint(i)}
		if err := c.SetEndpoint(*e); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			_, st := c.Compile()
			if st.Classes < classes {
				classes = -1 << 30 // collected
			} else if classes >= 0 {
				classes = st.Classes
			}
		}
	}
	if classes >= 0 {
		t.Fatalf("no collection happened (%d classes)", classes)
	}
	cp, _ := c.Compile()
	ref, err := acl.NewReference(&w.State, acl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range w.Packets(5, 20000) {
		if diff := referenceDiff(cp, ref, &p); diff != "" {
			t.Fatalf("packet %s", diff)
		}
	}
}
