package acl_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/acl/acltest"
)

// diffWorld compiles a world, builds the reference, and compares n random
// packets. It returns the number compared.
func diffWorld(t *testing.T, w *acltest.World, opt acl.Options, seed uint64, n int) {
	t.Helper()
	cp, err := acl.Compile(&w.State, opt)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	ref, err := acl.NewReference(&w.State, opt)
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	pkts := w.Packets(seed, n)
	fails := 0
	for i := range pkts {
		if diff := referenceDiff(cp, ref, &pkts[i]); diff != "" {
			fails++
			if fails <= 5 {
				t.Errorf("packet %d %s", i, diff)
			}
		}
	}
	if fails > 0 {
		t.Fatalf("%d of %d packets differ", fails, len(pkts))
	}
}

// referenceDiff checks one packet against the reference: "" when the
// compiled classifier agrees on the verdict and on what matched in each
// direction, else the packet and both answers.
func referenceDiff(cp *acl.Compiled, ref *acl.Reference, p *acl.Packet) string {
	got := cp.Check(p)
	v, eg, in := ref.Evaluate(p)
	geg, gin := describe(cp, got.Egress, acl.Egress), describe(cp, got.Ingress, acl.Ingress)
	if got.Verdict == v && reflect.DeepEqual(geg, eg) && reflect.DeepEqual(gin, in) {
		return ""
	}
	return fmt.Sprintf("%s:\n got %v egress %+v ingress %+v\nwant %v egress %+v ingress %+v",
		fmtPacket(p), got.Verdict, geg, gin, v, eg, in)
}

func describe(cp *acl.Compiled, r acl.Result, d acl.Direction) acl.Match {
	if r.Kind == acl.MatchNone {
		return acl.Match{}
	}
	return cp.Describe(r, d)
}

func fmtPacket(p *acl.Packet) string {
	if p.Family == acl.IPv4 {
		return fmt.Sprintf("v4 %08x:%d -> %08x:%d proto %d", p.Src4, p.SrcPort, p.Dst4, p.DstPort, p.Proto)
	}
	return fmt.Sprintf("v6 %x:%d -> %x:%d proto %d", p.Src6, p.SrcPort, p.Dst6, p.DstPort, p.Proto)
}

func TestDifferentialSmall(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			w := acltest.Generate(seed, acltest.Small)
			diffWorld(t, w, acl.Options{}, seed, 5000)
		})
	}
}

func TestDifferentialMedium(t *testing.T) {
	p := acltest.Params{Namespaces: 6, Apps: 30, Endpoints: 400, HostEndpoints: 3, Policies: 80, RulesPerPolicy: 4,
		CIDRs: 60, IPv6: true, Tiers: true, Nodes: 3}
	n := 150000
	if testing.Short() {
		n = 20000
	}
	for seed := uint64(100); seed < 108; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			w := acltest.Generate(seed, p)
			opt := acl.Options{}
			if seed%2 == 0 {
				opt.Node = "node-1"
			}
			diffWorld(t, w, opt, seed, n)
		})
	}
}

// TestDifferentialMillion compares 1.5 million packets over 100 small
// worlds (edge-heavy: /0 and /32 nets, port range borders, Pass across
// tiers, empty selectors, named ports, failsafe).
func TestDifferentialMillion(t *testing.T) {
	worlds, per := 100, 15000
	if testing.Short() {
		worlds, per = 10, 5000
	}
	for seed := uint64(1000); seed < 1000+uint64(worlds); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			w := acltest.Generate(seed, acltest.Small)
			diffWorld(t, w, acl.Options{NoFailsafe: seed%5 == 0}, seed, per)
		})
	}
}
