package e2e

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/acl"
	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

func TestHistogramQuantiles(t *testing.T) {
	h := newHistogram()
	rng := rand.New(rand.NewPCG(1, 2))
	var vals []int64
	for range 100000 {
		// Log-uniform from 100 ns to 10 ms.
		v := int64(math.Exp(math.Log(100) + rng.Float64()*(math.Log(1e7)-math.Log(100))))
		vals = append(vals, v)
		h.record(v)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := float64(vals[int(math.Ceil(q*float64(len(vals))))-1])
		got := h.quantile(q)
		if math.Abs(got-want)/want > 0.01 {
			t.Errorf("q%.3f = %.0f, want %.0f ±1%%", q, got, want)
		}
	}
	if h.quantile(0) != float64(vals[0]) || h.quantile(1) != float64(vals[len(vals)-1]) {
		t.Errorf("min/max %v %v, want %v %v", h.quantile(0), h.quantile(1), vals[0], vals[len(vals)-1])
	}
	if h.count() != uint64(len(vals)) {
		t.Errorf("count %d", h.count())
	}
	h.reset()
	if h.count() != 0 || h.quantile(0.5) != 0 {
		t.Error("reset histogram not empty")
	}
}

func TestHistogramBucketsContinuous(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<20; v++ {
		i := histIndex(v)
		if i != prev && i != prev+1 {
			t.Fatalf("index jumps from %d to %d at %d", prev, i, v)
		}
		if got := histValue(i); math.Abs(got-float64(v)) > float64(v)/128+1 {
			t.Fatalf("value %d lands in bucket %d of midpoint %v", v, i, got)
		}
		prev = i
	}
	if histIndex(math.MaxInt64) >= histBuckets {
		t.Fatal("huge value out of range")
	}
	if allocs := testing.AllocsPerRun(100, func() { newHistogramForAlloc.record(12345) }); allocs != 0 {
		t.Fatalf("record allocates %v", allocs)
	}
}

var newHistogramForAlloc = newHistogram()

// TestFlowsRoundTrip builds every case's frames, stamps a marker, applies
// what the dut does (encap for the encap cases, decap for the decap case),
// and reads the marker back as the sink does.
func TestFlowsRoundTrip(t *testing.T) {
	m := macs{gen: header.MAC{2, 0, 0, 0, 0, 1}, dutIn: header.MAC{2, 0, 0, 0, 0, 2}}
	bgp := []netip.Prefix{netip.MustParsePrefix("1.2.3.0/24"), netip.MustParsePrefix("8.8.0.0/16")}
	tun, err := encap.NewTunnel(encap.TunnelConfig{Src: dutOut.As4(), Dst: sinkIP.As4(), UnderlayMTU: linkMTU})
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range Families {
		for _, size := range []int{64, 128, 1500, 1514} {
			cs := caseSpec{family: fam, size: size}
			t.Run(cs.name(), func(t *testing.T) {
				fs, err := buildFlows(cs, 64, m, bgp, 7)
				if err != nil {
					t.Fatal(err)
				}
				seen := map[[4]byte]bool{}
				for i, tpl := range fs.templates {
					if len(tpl) != fs.frameLen {
						t.Fatalf("template %d is %d bytes, want %d", i, len(tpl), fs.frameLen)
					}
					buf := make([]byte, 256+len(tpl))
					off := 128
					copy(buf[off:], tpl)
					magic := uint16(markerMagic)
					if fs.denied != nil && fs.denied[i] {
						magic = markerMagicDenied
					}
					putMarker(buf[off+fs.markOff:], magic, 9, uint64(i), int64(1000+i))
					frame := buf[off : off+len(tpl)]
					// The dut's view: decap first, then the pod frame.
					if fam == FamilyVXLANDecap {
						o, n, v := encap.VXLANDecap(buf, off, len(tpl), 4096)
						if !v.IsOK() {
							t.Fatalf("decap: %v", v)
						}
						off, frame = o, buf[o:o+n]
					}
					if len(frame) != size {
						t.Fatalf("pod frame %d bytes, want %d", len(frame), size)
					}
					ip := header.IPv4(frame[header.EthernetLen:])
					if !ip.HeaderChecksumOK() || int(ip.TotalLen()) != size-header.EthernetLen {
						t.Fatalf("bad inner IPv4 header %x", frame[:34])
					}
					seen[ip.Dst()] = true
					switch fam {
					case FamilyForward:
						if !bgp[0].Contains(ip.DstAddr()) && !bgp[1].Contains(ip.DstAddr()) {
							t.Fatalf("destination %v outside the loaded prefixes", ip.DstAddr())
						}
					case FamilyVXLANEncap, FamilyIPIPEncap:
						if !remotePods.Contains(ip.DstAddr()) || !genPods.Contains(ip.SrcAddr()) {
							t.Fatalf("%v -> %v: not local pod to remote pod", ip.SrcAddr(), ip.DstAddr())
						}
					case FamilyVXLANDecap:
						if !sinkPods.Contains(ip.DstAddr()) || !genNodePods.Contains(ip.SrcAddr()) {
							t.Fatalf("%v -> %v: not remote pod to local pod", ip.SrcAddr(), ip.DstAddr())
						}
					case FamilyPolicy1k, FamilyPolicy10k:
						from := policyClients
						if fs.denied[i] {
							from = policyIntruders
						}
						if !slices.Contains(policyServers, ip.DstAddr()) || !slices.Contains(from, ip.SrcAddr()) ||
							!sinkPods.Contains(ip.DstAddr()) || !genPods.Contains(ip.SrcAddr()) {
							t.Fatalf("%v -> %v (denied %v): not client (or intruder) to server", ip.SrcAddr(), ip.DstAddr(), fs.denied[i])
						}
					}
					var n int
					switch fam {
					case FamilyVXLANEncap:
						off, n = encap.VXLANEncap(buf, off, len(frame), tun, uint32(i))
						frame = buf[off : off+n]
					case FamilyIPIPEncap:
						off, n = encap.IPIPEncap(buf, off, len(frame), tun)
						frame = buf[off : off+n]
					}
					if len(frame) != fs.wireLen {
						t.Fatalf("frame at the sink %d bytes, want %d", len(frame), fs.wireLen)
					}
					ph, seq, ts, denied, ok := readMarker(frame)
					if !ok || ph != 9 || seq != uint64(i) || ts != int64(1000+i) || denied != (fs.denied != nil && fs.denied[i]) {
						t.Fatalf("marker %v %v %v %v %v", ph, seq, ts, denied, ok)
					}
				}
				want := 32
				if policyRules(fam) > 0 {
					want = 24 // 64 servers
					nd := 0
					for _, d := range fs.denied {
						if d {
							nd++
						}
					}
					if nd != 64/policyDenyEvery {
						t.Errorf("%d denied flows of 64, want %d", nd, 64/policyDenyEvery)
					}
					a, d := fs.split()
					if len(a.templates) != 64-nd || len(d.templates) != nd || a.denied != nil || len(d.denied) != nd || !d.denied[0] {
						t.Errorf("split: %d allowed, %d denied (%v)", len(a.templates), len(d.templates), d.denied)
					}
				} else if fs.denied != nil {
					t.Error("denied flows outside a policy case")
				}
				if len(seen) < want {
					t.Errorf("only %d distinct destinations in 64 flows", len(seen))
				}
			})
		}
	}
}

func TestReadMarkerRejects(t *testing.T) {
	m := header.MAC{2, 0, 0, 0, 0, 1}
	f := udpFrame(m, m, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 1, 64)
	if _, _, _, _, ok := readMarker(f); ok {
		t.Error("frame without a marker accepted")
	}
	putMarker(f[plainHdrLen:], markerMagic, 1, 2, 3)
	for i := range len(f) {
		if _, _, _, _, ok := readMarker(f[:i]); ok && i < plainHdrLen+markerLen {
			t.Fatalf("truncated frame (%d bytes) accepted", i)
		}
	}
	arp := make([]byte, 60)
	arp[12], arp[13] = 0x08, 0x06
	if _, _, _, _, ok := readMarker(arp); ok {
		t.Error("ARP accepted")
	}
	if allocs := testing.AllocsPerRun(100, func() { readMarker(f) }); allocs != 0 {
		t.Errorf("readMarker allocates %v", allocs)
	}
	if _, _, _, denied, ok := readMarker(f); !ok || denied {
		t.Errorf("allowed frame: denied %v ok %v", denied, ok)
	}
	putMarker(f[plainHdrLen:], markerMagicDenied, 1, 2, 3)
	if ph, seq, ts, denied, ok := readMarker(f); !ok || !denied || ph != 1 || seq != 2 || ts != 3 {
		t.Errorf("denied frame: %v %v %v %v %v", ph, seq, ts, denied, ok)
	}
	putMarker(f[plainHdrLen:], 0x1234, 1, 2, 3)
	if _, _, _, _, ok := readMarker(f); ok {
		t.Error("unknown magic accepted")
	}
}

// TestPolicyWorld checks the policy cases' world in the policy model: the
// clients' flows are allowed by the rule 95% deep (by the compiled
// classifiers and by the first-match reference), the intruders' denied at
// the end of the tier, and the nftables rendering has that rule at that
// depth of the servers' ingress chain.
func TestPolicyWorld(t *testing.T) {
	for _, n := range []int{1000, 10000} {
		pw, err := buildPolicyWorld(n)
		if err != nil {
			t.Fatal(err)
		}
		if pw.allowIndex != n-n/20 {
			t.Errorf("%d rules: allowing rule at %d", n, pw.allowIndex)
		}
		rules := 0
		for _, p := range pw.state.Policies {
			rules += len(p.Ingress) + len(p.Egress)
		}
		if rules != n {
			t.Errorf("%d rules wanted, world has %d", n, rules)
		}
		c, err := acl.Compile(pw.state, pw.opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := pw.verifyCompiled(c); err != nil {
			t.Fatal(err)
		}
		ref, err := acl.NewReference(pw.state, pw.opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, src := range slices.Concat(policyClients, policyIntruders) {
			for _, dst := range []netip.Addr{policyServers[0], policyServers[len(policyServers)-1]} {
				pk := probePacket(src)
				d := dst.As4()
				pk.Dst4 = be32(d)
				v, _, in := ref.Evaluate(&pk)
				client := slices.Contains(policyClients, src)
				if client && (v != acl.Allowed || in.Kind != acl.MatchRule || in.Policy != pw.allowPolicy || in.Index != pw.allowRule) {
					t.Fatalf("%d rules: client %v -> %v: %v %+v", n, src, dst, v, in)
				}
				if !client && (v != acl.Denied || in.Kind != acl.MatchEndOfTier) {
					t.Fatalf("%d rules: intruder %v -> %v: %v %+v", n, src, dst, v, in)
				}
				if cv := c.Check(&pk).Verdict; cv != v {
					t.Fatalf("%d rules: %v -> %v: compiled %v, reference %v", n, src, dst, cv, v)
				}
			}
		}
		if n > 1000 {
			continue
		}
		rs, err := acl.RenderNftables(pw.state, pw.opts)
		if err != nil {
			t.Fatal(err)
		}
		// The servers' ingress chain: the allowing rule (UDP to port 9
		// from a set) is its (allowIndex+1)-th line.
		in := ""
		for _, line := range strings.Split(rs, "\n") {
			if strings.HasPrefix(line, "\tmap in4 {") {
				in = "found"
			} else if in == "found" && strings.Contains(line, policyServers[0].String()+" : jump ") {
				f := strings.Fields(line[strings.Index(line, policyServers[0].String()+" : jump "):])
				in = strings.TrimRight(f[3], ",}")
			}
		}
		i := strings.Index(rs, "\tchain "+in+"_t0 {\n")
		if in == "" || in == "found" || i < 0 {
			t.Fatalf("servers' ingress chain not found (%q)", in)
		}
		body := strings.Split(rs[i:], "\n")[1:]
		if len(body) <= pw.allowIndex || !strings.Contains(body[pw.allowIndex], "meta l4proto 17 ip saddr @") ||
			!strings.HasSuffix(body[pw.allowIndex], "th dport { 9 } counter return") {
			t.Fatalf("line %d of chain %s_t0: %q", pw.allowIndex, in, body[min(pw.allowIndex, len(body)-1)])
		}
	}
}

func TestUsableRoutes(t *testing.T) {
	in := []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("1.0.0.0/24"),
		netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("8.0.0.0/6"),
		netip.MustParsePrefix("224.0.0.0/4"), netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("9.9.9.0/24"),
	}
	got := usableRoutes(in, 0)
	want := []netip.Prefix{netip.MustParsePrefix("1.0.0.0/24"), netip.MustParsePrefix("9.9.9.0/24")}
	if !slices.Equal(got, want) {
		t.Errorf("usableRoutes = %v, want %v", got, want)
	}
	if got := usableRoutes(in, 1); len(got) != 1 {
		t.Errorf("limit 1: %v", got)
	}
}

func TestRemoteBlocks(t *testing.T) {
	b := remoteBlocks()
	if len(b) != 64 || b[0] != netip.MustParsePrefix("10.244.64.0/26") || b[63] != netip.MustParsePrefix("10.244.79.192/26") {
		t.Fatalf("blocks %v ... %v (%d)", b[0], b[len(b)-1], len(b))
	}
}

func TestRouteMessage(t *testing.T) {
	b := appendRouteMsg(nil, 7, netip.MustParsePrefix("1.2.3.0/24"), [4]byte{10, 10, 2, 2}, 5)
	if len(b) != routeMsgLen {
		t.Fatalf("message %d bytes, want %d", len(b), routeMsgLen)
	}
	if b[16] != 2 /* AF_INET */ || b[17] != 24 || !bytes.Contains(b, []byte{1, 2, 3, 0}) || !bytes.Contains(b, []byte{10, 10, 2, 2}) {
		t.Fatalf("message %x", b)
	}
}

func TestParseCPUStat(t *testing.T) {
	a, err := parseCPUStat([]byte("cpu  100 0 50 800 10 0 5 0 0 0\ncpu0 50 0 25 400 5 0 3 0 0 0\ncpu1 50 0 25 400 5 0 2 0 0 0\nintr 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := parseCPUStat([]byte("cpu  200 0 100 875 10 0 5 0 0 0\ncpu0 100 0 50 400 5 0 3 0 0 0\ncpu1 100 0 50 475 5 0 2 0 0 0\n"))
	d := a.to(b)
	if d.busySec != 1.5 || len(d.perCPU) != 2 || d.perCPU[0] != 1 || d.perCPU[1] != 0.5 || math.Abs(d.cores-4.0/3) > 1e-9 {
		t.Fatalf("delta %+v", d)
	}
	if _, err := parseCPUStat([]byte("intr 1\n")); err == nil {
		t.Error("no cpu line accepted")
	}
}

func TestOtherCPUsMask(t *testing.T) {
	m := otherCPUsMask()
	if m == "" || strings.Contains(m, "g") {
		t.Skipf("mask %q (single CPU machine?)", m)
	}
}

func sampleResults() []Result {
	var rs []Result
	add := func(c, impl, m string, v float64) { rs = append(rs, Result{Case: c, Impl: impl, Metric: m, Value: v}) }
	add(CaseRouteLoad, ImplKernel, MetricLoadTime, 3)
	add("forward-64", ImplAFXDP, MetricPPS, 500e3)
	add("forward-64", ImplAFXDP, MetricGenPPS, 900e3)
	add("forward-64", ImplAFXDP, MetricLoss, 44)
	add("forward-64", ImplAFXDP, MetricLatP99, 30)
	add("forward-64", ImplKernel, MetricPPS, 300e3)
	add("forward-64", ImplKernel, MetricGenPPS, 300e3)
	add("forward-64", ImplKernel, MetricLoss, 0.1)
	add("forward-64", ImplKernel, MetricLatP99, 40)
	add("vxlan-decap-64", ImplKernel, MetricPPS, 300e3)
	add("vxlan-decap-64", ImplKernel, MetricLoss, 0.1)
	add("vxlan-decap-64", ImplAFXDP, MetricPPS, 310e3)
	add("vxlan-decap-64", ImplAFXDP, MetricLoss, 0.2)
	return rs
}

func TestSummarize(t *testing.T) {
	lines := Summarize(sampleResults())
	if len(lines) != 2 {
		t.Fatalf("lines %q", lines)
	}
	if !strings.Contains(lines[0], "afxdp/kernel pps 1.67x") || !strings.Contains(lines[0], "goal afxdp >= 1.3x kernel pps with p99 no worse: met") ||
		!strings.Contains(lines[0], "dut-bound") || !strings.Contains(lines[0], "kernel 0.300 Mpps (generator 0.300, loss 0.1%: generator-bound") {
		t.Errorf("forward line: %s", lines[0])
	}
	if !strings.Contains(lines[1], "generator-bound for both") || strings.Contains(lines[1], "goal") {
		t.Errorf("decap line: %s", lines[1])
	}
	for _, c := range []struct {
		loss, sink float64
		want       Bound
	}{{0.5, 0, BoundGenerator}, {10, 1, BoundDUT}, {10, 8, BoundSink}} {
		if got := Classify(c.loss, c.sink); got != c.want {
			t.Errorf("Classify(%v, %v) = %v, want %v", c.loss, c.sink, got, c.want)
		}
	}
}

func TestWriteSVG(t *testing.T) {
	var b bytes.Buffer
	if err := WriteSVG(&b, sampleResults(), "test <chart>"); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&b)
	rects := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("invalid SVG: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	// Background, 2 legend boxes, 4 pps bars, 2 latency bars.
	if rects != 1+2+4+2 {
		t.Errorf("%d rects", rects)
	}
}

// TestPolicySummaryAndChart: a policy case gets its policy line in the
// summary and its bars in the chart like the other cases.
func TestPolicySummaryAndChart(t *testing.T) {
	rs := sampleResults()
	add := func(impl, m string, v float64) {
		rs = append(rs, Result{Case: "policy-1000-64", Impl: impl, Metric: m, Value: v})
	}
	add(ImplAFXDP, MetricPPS, 200e3)
	add(ImplAFXDP, MetricLatP99, 20)
	add(ImplAFXDP, MetricPolicyLoad, 16)
	add(ImplAFXDP, MetricDeniedSent, 5)
	add(ImplAFXDP, MetricDeniedLeak, 0)
	add(ImplKernel, MetricPPS, 50e3)
	add(ImplKernel, MetricLatP99, 40)
	add(ImplKernel, MetricPolicyLoad, 130)
	add(ImplKernel, MetricDeniedSent, 5)
	add(ImplKernel, MetricDeniedLeak, 0)
	lines := Summarize(rs)
	if len(lines) != 3 || !strings.HasPrefix(lines[2], "policy-1000-64: ") || !strings.Contains(lines[2], "afxdp/kernel pps 4.00x") ||
		!strings.Contains(lines[2], "kernel loaded the policy in 130 ms, 5.0% of its frames were of denied flows, 0.00% of those leaked") ||
		strings.Contains(lines[0], "loaded the policy") {
		t.Errorf("summary %q", lines)
	}
	var b bytes.Buffer
	if err := WriteSVG(&b, rs, "policy"); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	if short(0.0044) != "0.0044" || short(0.4) != "0.4" || short(0) != "0.00" || short(2.5) != "2.50" {
		t.Errorf("bar labels %q %q %q %q", short(0.0044), short(0.4), short(0), short(2.5))
	}
	if strings.Count(svg, "<title>policy-1000-64 ") != 4 || !strings.Contains(svg, ">policy-1000-64</text>") {
		t.Errorf("policy case missing from the chart:\n%s", svg)
	}
}

func TestConfig(t *testing.T) {
	exp, err := ExpectedResults(Quick())
	if err != nil {
		t.Fatal(err)
	}
	// 3 families × 2 impls + ipip × afxdp, 12 metrics each; policy-1000-64
	// × 2 impls (kernel only with nft), 15 metrics each.
	policyImpls := 2
	if nftBinary() == "" {
		policyImpls = 1
	}
	if len(exp) != 7*len(caseMetrics)+policyImpls*(len(caseMetrics)+len(policyMetrics)) {
		t.Errorf("%d expected results", len(exp))
	}
	if !slices.Contains(exp, [3]string{"policy-1000-64", ImplAFXDP, MetricPolicyLoad}) ||
		slices.ContainsFunc(exp, func(k [3]string) bool { return strings.HasPrefix(k[0], FamilyPolicy10k) }) {
		t.Error("quick run: policy-1000-64 wanted, policy-10000 not")
	}
	names := func(c Config) string {
		c, err := c.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, cs := range c.cases() {
			out = append(out, cs.name())
		}
		return strings.Join(out, " ")
	}
	if got, want := names(Config{}), "forward-64 vxlan-encap-64 vxlan-decap-64 ipip-encap-64 policy-1000-64 policy-10000-64 "+
		"forward-1500 vxlan-encap-1500 vxlan-decap-1500 ipip-encap-1500"; got != want {
		t.Errorf("default cases %q, want %q", got, want)
	}
	if got, want := names(Config{Families: []string{FamilyPolicy10k, FamilyForward}, Sizes: []int{128}, PolicySizes: []int{64, 128}}),
		"forward-128 policy-10000-128 policy-10000-64"; got != want {
		t.Errorf("cases %q, want %q", got, want)
	}
	for _, bad := range []Config{{Sizes: []int{40}}, {PolicySizes: []int{2000}}, {Families: []string{"nope"}}, {Impls: []string{"dpdk"}},
		{Routes: -1}, {Families: []string{FamilyPolicy1k}, Flows: 10}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("config %+v accepted", bad)
		}
	}
}
