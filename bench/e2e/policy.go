package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/acl/acltest"
	"github.com/tabbynet/tabby/datapath/header"
)

// The policy cases' endpoints (see the package documentation): servers
// behind the sink (the dut's local pods the policy protects), clients
// behind gen that a rule deep in the list allows, and intruders behind gen
// that no rule allows.
var (
	policyServers   = addrRange(netip.MustParseAddr("10.244.1.1"), 64)
	policyClients   = addrRange(netip.MustParseAddr("10.244.2.1"), 100)
	policyIntruders = addrRange(netip.MustParseAddr("10.244.2.201"), 32)
)

// policyDenyEvery makes every policyDenyEvery-th flow of a policy case an
// intruder's (denied): 5% of the frames.
const policyDenyEvery = 20

// policyNode is the node the servers live on (the dut): the policy gets
// compiled for its endpoints only.
const policyNode = acltest.TargetNode

func addrRange(first netip.Addr, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	a := first
	for i := range out {
		out[i] = a
		a = a.Next()
	}
	return out
}

// policyWorld is the policy of one policy case: acltest.RuleScale's world
// of n ingress rules for the role=target endpoints (every rule names its
// peers: selectors over 2,000 pods elsewhere or CIDRs from a pool; ports
// mostly TCP), with the lab's pods added as endpoints and rule allowIndex
// replaced by the one rule that allows the clients' traffic (UDP to port
// 9 from app=e2e-client).
type policyWorld struct {
	rules      int
	allowIndex int
	state      *acl.State
	opts       acl.Options
	// allowPolicy and allowRule locate the allowing rule (the policy's
	// ID, a global policy's name; the rule's index in its ingress rules).
	allowPolicy string
	allowRule   int
}

// allowAt is the position of the allowing rule: 95% deep in the list.
func allowAt(n int) int { return n - max(n/20, 1) }

// buildPolicyWorld builds the policy of a case with n rules.
func buildPolicyWorld(n int) (*policyWorld, error) {
	if n < 1 {
		return nil, fmt.Errorf("policy with %d rules", n)
	}
	w := acltest.RuleScale(1, n)
	s := &w.State
	k := allowAt(n)
	// RuleScale puts 10 rules in each policy, in order.
	pi, ri := k/10, k%10
	if pi >= len(s.Policies) || ri >= len(s.Policies[pi].Ingress) {
		return nil, fmt.Errorf("policy world: rule %d of %d not found", k, n)
	}
	s.Policies[pi].Ingress[ri] = acl.Rule{
		Action:   acl.Allow,
		Protocol: acl.ProtoUDP,
		Source:   acl.EntityRule{Selector: "app == 'e2e-client'", NamespaceSelector: "all()"},
		Destination: acl.EntityRule{
			Ports: []acl.Port{{Min: udpDstPort, Max: udpDstPort}},
		},
	}
	add := func(name, node string, labels map[string]string, addrs []netip.Addr) {
		for i, a := range addrs {
			l := map[string]string{}
			for k, v := range labels {
				l[k] = v
			}
			s.Endpoints = append(s.Endpoints, acl.Endpoint{Name: fmt.Sprintf("%s-%d", name, i), Namespace: "ns0",
				Node: node, Labels: l, IPs: []netip.Addr{a}})
		}
	}
	add("e2e-server", policyNode, map[string]string{"role": "target", "app": "e2e-server"}, policyServers)
	add("e2e-client", "e2e-gen", map[string]string{"app": "e2e-client"}, policyClients)
	add("e2e-intruder", "e2e-gen", map[string]string{"app": "e2e-intruder"}, policyIntruders)
	return &policyWorld{rules: n, allowIndex: k, state: s, opts: acl.Options{Node: policyNode},
		allowPolicy: s.Policies[pi].Name, allowRule: ri}, nil
}

// probe returns the policy-model packet of a policy-case flow from src to
// the first server.
func probePacket(src netip.Addr) acl.Packet {
	s, d := src.As4(), policyServers[0].As4()
	return acl.Packet{Family: acl.IPv4, Proto: header.ProtoUDP, SrcPort: 40000, DstPort: udpDstPort,
		Src4: be32(s), Dst4: be32(d)}
}

func be32(a [4]byte) uint32 {
	return uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
}

// verifyCompiled checks that the compiled policy decides the case's traffic
// as intended: a client's flow allowed by the deep rule, an intruder's
// denied at the end of the tier (no rule matched it).
func (pw *policyWorld) verifyCompiled(c *acl.Compiled) error {
	pa := probePacket(policyClients[0])
	chk := c.Check(&pa)
	m := c.Describe(chk.Ingress, acl.Ingress)
	if chk.Verdict != acl.Allowed || m.Kind != acl.MatchRule || m.Policy != pw.allowPolicy || m.Index != pw.allowRule {
		return fmt.Errorf("compiled policy: client flow %v, ingress match %+v; want allowed by %s rule %d",
			chk.Verdict, m, pw.allowPolicy, pw.allowRule)
	}
	pd := probePacket(policyIntruders[0])
	chk = c.Check(&pd)
	m = c.Describe(chk.Ingress, acl.Ingress)
	if chk.Verdict != acl.Denied || m.Kind != acl.MatchEndOfTier {
		return fmt.Errorf("compiled policy: intruder flow %v, ingress match %+v; want denied at the end of the tier",
			chk.Verdict, m)
	}
	return nil
}

// Policy loading. Both implementations get the same policyWorld: the kernel
// as the nftables ruleset acl.RenderNftables makes of it, afxdp as the
// acl.Compile snapshot.
type policyDUT interface {
	// loadPolicy installs pw and returns how long installing took (what
	// MetricPolicyLoad reports) and a description for the progress line.
	loadPolicy(pw *policyWorld) (time.Duration, string, error)
	// unloadPolicy removes it again.
	unloadPolicy() error
}

var (
	nftOnce sync.Once
	nftPath string
)

// nftBinary returns the path of nft, or "" when it is not installed.
func nftBinary() string {
	nftOnce.Do(func() { nftPath, _ = exec.LookPath("nft") })
	return nftPath
}

// nftMissing is why the kernel implementation skips the policy cases when
// nft is not installed.
const nftMissing = "nft not installed: apt-get install nftables"

// loadPolicy renders pw as an nftables ruleset and loads it into the dut
// with `nft -f`; the time reported is nft's (the kernel's load), rendering
// is reported in the description.
func (k *kernelDUT) loadPolicy(pw *policyWorld) (time.Duration, string, error) {
	nft := nftBinary()
	if nft == "" {
		return 0, "", fmt.Errorf("%s", nftMissing)
	}
	t0 := time.Now()
	rs, err := acl.RenderNftables(pw.state, pw.opts)
	if err != nil {
		return 0, "", err
	}
	render := time.Since(t0)
	f, err := os.CreateTemp("", "tabby-e2e-*.nft")
	if err != nil {
		return 0, "", err
	}
	path := f.Name()
	defer os.Remove(path)
	if _, err := f.WriteString(rs); err != nil {
		f.Close()
		return 0, "", err
	}
	if err := f.Close(); err != nil {
		return 0, "", err
	}
	// A replaced table would keep the old one's chains: start clean.
	_ = k.unloadPolicy()
	var load time.Duration
	err = k.l.dut.Do(func() error {
		// The child is forked from this thread, inside the dut's
		// namespace (no `ip netns exec` in the measured time).
		cmd := exec.Command(nft, "-f", path)
		t1 := time.Now()
		out, err := cmd.CombinedOutput()
		load = time.Since(t1)
		if err != nil {
			return fmt.Errorf("nft -f: %v: %s", err, firstLines(string(out), 5))
		}
		return nil
	})
	if err != nil {
		return 0, "", fmt.Errorf("dut: %w", err)
	}
	k.policy = true
	desc := fmt.Sprintf("ruleset of %d KiB (%d chains, %d sets) rendered in %.0f ms, loaded with nft -f in %.0f ms",
		len(rs)>>10, strings.Count(rs, "\tchain "), strings.Count(rs, "\tset "), ms(render), ms(load))
	return load, desc, nil
}

func (k *kernelDUT) unloadPolicy() error {
	nft := nftBinary()
	if nft == "" {
		return nil
	}
	wasLoaded := k.policy
	k.policy = false
	return k.l.dut.Do(func() error {
		out, err := exec.Command(nft, "delete", "table", "inet", acl.NftablesTable).CombinedOutput()
		if err != nil && wasLoaded {
			return fmt.Errorf("dut: nft delete table: %v: %s", err, firstLines(string(out), 3))
		}
		return nil
	})
}

// loadPolicy compiles pw and publishes it in the tables; start turns the
// policy stage on for the policy cases.
func (a *afxdpDUT) loadPolicy(pw *policyWorld) (time.Duration, string, error) {
	t0 := time.Now()
	c, err := acl.Compile(pw.state, pw.opts)
	if err != nil {
		return 0, "", err
	}
	compile := time.Since(t0)
	if err := a.tables.SetPolicy(c); err != nil {
		return 0, "", err
	}
	load := time.Since(t0)
	if err := pw.verifyCompiled(c); err != nil {
		return 0, "", err
	}
	st := c.Stats()
	return load, fmt.Sprintf("acl.Compile %.0f ms (%d rules) + SetPolicy", ms(compile), st.Rules), nil
}

func (a *afxdpDUT) unloadPolicy() error { return nil }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "; ")
}

// Functional check of a policy case, per implementation, before measuring.
const (
	checkRate     = 20000 // pps
	checkDuration = 150 * time.Millisecond
	// checkMinDelivered is the share of an allowed flow's frames that
	// must arrive.
	checkMinDelivered = 0.9
)

// checkPolicy sends the case's allowed flows, then its denied flows, at a
// low rate through impl: the allowed ones must arrive (at least
// checkMinDelivered of them), none of the denied ones may.
func (r *runner) checkPolicy(ctx context.Context, cs caseSpec, impl string, fs *flowSet) (string, error) {
	allowed, denied := fs.split()
	if len(allowed.templates) == 0 || len(denied.templates) == 0 {
		return "", fmt.Errorf("functional check: %d allowed and %d denied flows", len(allowed.templates), len(denied.templates))
	}
	ra, da, err := r.runPhase(ctx, cs, impl, phase{flows: allowed, warmup: 50 * time.Millisecond, duration: checkDuration, rate: checkRate})
	if err != nil {
		return "", fmt.Errorf("functional check (allowed flows): %w", err)
	}
	rd, dd, err := r.runPhase(ctx, cs, impl, phase{flows: denied, warmup: 50 * time.Millisecond, duration: checkDuration, rate: checkRate})
	if err != nil {
		return "", fmt.Errorf("functional check (denied flows): %w", err)
	}
	desc := fmt.Sprintf("allowed flows: sent %d delivered %d; denied flows: sent %d delivered %d (dut: %s)",
		ra.sent, ra.recv, rd.deniedSent, rd.leaked, dd.detail)
	switch {
	case ra.sent == 0 || float64(ra.recv) < checkMinDelivered*float64(ra.sent):
		return desc, fmt.Errorf("functional check failed: the allowed flows delivered %d of %d frames (want at least %.0f%%; dut: %s)",
			ra.recv, ra.sent, 100*checkMinDelivered, da.detail)
	case rd.deniedSent == 0:
		return desc, fmt.Errorf("functional check failed: no denied frame was sent")
	case rd.leaked > 0 || rd.recv > 0:
		return desc, fmt.Errorf("functional check failed: %d of %d frames of denied flows reached the sink", rd.leaked+rd.recv, rd.deniedSent)
	}
	return desc, nil
}
