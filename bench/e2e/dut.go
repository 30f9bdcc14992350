package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/engine"
	"github.com/tabbynet/tabby/encap"
)

// dutImpl is one implementation of the device under test. start configures
// the dut for a case and starts forwarding; stop stops it and reports what
// the dut itself counted.
type dutImpl interface {
	start(ctx context.Context, cs caseSpec) error
	stop() (dutReport, error)
}

// dutReport is what the dut counted over one run.
type dutReport struct {
	// drops are frames the dut reported dropping.
	drops uint64
	// detail describes the drops and modes, for the progress line.
	detail string
}

// kernelDUT is the kernel's forwarding path: routes, neighbours and the
// VXLAN device are programmed once (see lab.setupKernelDataplane); a run
// only turns IPv4 forwarding on.
type kernelDUT struct {
	l        *lab
	softnet0 uint64
	vx0      [2]uint64
	// policy is set while a policy case's nftables table is loaded.
	policy bool
}

func (k *kernelDUT) start(_ context.Context, _ caseSpec) error {
	k.softnet0 = softnetDrops()
	k.vx0[0], k.vx0[1] = linkDrops(k.l.dut, vxlanIf)
	return k.l.dut.Sysctl("net.ipv4.ip_forward", "1")
}

func (k *kernelDUT) stop() (dutReport, error) {
	err := k.l.dut.Sysctl("net.ipv4.ip_forward", "0")
	softnet := softnetDrops() - k.softnet0
	vxRx, vxTx := linkDrops(k.l.dut, vxlanIf)
	vxRx, vxTx = vxRx-k.vx0[0], vxTx-k.vx0[1]
	r := dutReport{drops: softnet + vxRx + vxTx}
	r.detail = fmt.Sprintf("incl. warm-up: backlog drops %d (machine-wide), %s drops rx %d tx %d", softnet, vxlanIf, vxRx, vxTx)
	return r, err
}

// Next-hop ids of the afxdp dut's tables.
const (
	nhForward   = 0 // BGP prefixes: to the sink, unencapsulated
	nhVXLAN     = 1 // remote pods over VXLAN to the sink
	nhIPIP      = 2 // remote pods over IP-in-IP to the sink
	nhSinkPods  = 3 // local pods behind the sink
	nhGenPods   = 4 // local pods behind gen
	nhFirstFree = 5
)

// afxdpDUT is Tabby's dataplane: datapath/engine on the dut's two veths,
// with tables holding the same routes as the kernel's FIB.
type afxdpDUT struct {
	l      *lab
	tables *datapath.Tables
	log    *slog.Logger
	eng    *engine.Engine
	cs     caseSpec
}

// newAFXDPDUT builds the tables: next hops from the topology's MACs, every
// route of the BGP table (loadTime measures inserting those), and the pod
// routes.
func newAFXDPDUT(l *lab, bgp []netip.Prefix, log *slog.Logger) (*afxdpDUT, time.Duration, error) {
	tables, err := datapath.NewTables(datapath.NodeConfig{TunnelIPv4: dutOut, HostPort: datapath.NoPort,
		DecapIPIP: true, DecapVXLAN: true})
	if err != nil {
		return nil, 0, err
	}
	tcfg := encap.TunnelConfig{LocalMAC: l.dutOutMAC, NextHopMAC: l.sinkMAC, Src: dutOut.As4(), Dst: sinkIP.As4(),
		UnderlayMTU: linkMTU, VTEPMAC: dutVTEPMAC, RemoteVTEPMAC: sinkVTEPMAC}
	tun, err := encap.NewTunnel(tcfg)
	if err != nil {
		return nil, 0, err
	}
	toSink := datapath.NextHop{Kind: datapath.NextHopRemote, Port: 1, SrcMAC: l.dutOutMAC, DstMAC: l.sinkMAC}
	vx := toSink
	vx.Encap, vx.Tunnel = datapath.EncapVXLAN, tun
	ipip := toSink
	ipip.Encap, ipip.Tunnel = datapath.EncapIPIP, tun
	nhs := map[uint32]datapath.NextHop{
		nhForward:  toSink,
		nhVXLAN:    vx,
		nhIPIP:     ipip,
		nhSinkPods: {Kind: datapath.NextHopLocal, Port: 1, SrcMAC: l.dutOutMAC, DstMAC: l.sinkMAC},
		nhGenPods:  {Kind: datapath.NextHopLocal, Port: 0, SrcMAC: l.dutInMAC, DstMAC: l.genMAC},
	}
	for id := uint32(0); id < nhFirstFree; id++ {
		if err := tables.SetNextHop(id, nhs[id]); err != nil {
			return nil, 0, err
		}
	}
	t0 := time.Now()
	for _, p := range bgp {
		if err := tables.AddRoute(p, nhForward); err != nil {
			return nil, 0, err
		}
	}
	load := time.Since(t0)
	if err := tables.AddRoute(sinkPods, nhSinkPods); err != nil {
		return nil, 0, err
	}
	if err := tables.AddRoute(genPods, nhGenPods); err != nil {
		return nil, 0, err
	}
	for _, b := range remoteBlocks() {
		if err := tables.AddRoute(b, nhVXLAN); err != nil {
			return nil, 0, err
		}
	}
	return &afxdpDUT{l: l, tables: tables, log: log}, load, nil
}

// nodeAddress is the dut's node address for a case: the address tunnel
// traffic comes to (decap: the gen side; encap: the uplink to the sink).
func nodeAddress(cs caseSpec) netip.Addr {
	if cs.family == FamilyVXLANDecap {
		return dutInIP
	}
	return dutOut
}

func (a *afxdpDUT) start(ctx context.Context, cs caseSpec) error {
	if err := a.l.dut.Sysctl("net.ipv4.ip_forward", "0"); err != nil {
		return err
	}
	node := nodeAddress(cs)
	// The policy stage runs in the policy cases only (their policy was
	// published by loadPolicy); the other cases measure routing alone.
	if err := a.tables.SetNode(datapath.NodeConfig{TunnelIPv4: node, HostPort: datapath.NoPort,
		DecapIPIP: true, DecapVXLAN: true, EnforcePolicy: cs.isPolicy()}); err != nil {
		return err
	}
	nh := uint32(nhVXLAN)
	if cs.family == FamilyIPIPEncap {
		nh = nhIPIP
	}
	for _, b := range remoteBlocks() {
		if err := a.tables.AddRoute(b, nh); err != nil {
			return err
		}
	}
	pods := []netip.Prefix{podPool}
	if cs.family == FamilyForward {
		// A router for Internet prefixes: the dataplane owns every IPv4
		// destination but the host's own addresses.
		pods = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	}
	eng, err := engine.Start(ctx, engine.Config{
		Interfaces:    []engine.Interface{{Name: dutInIf}, {Name: dutOutIf}},
		Tables:        a.tables,
		PortKind:      engine.PortAFXDP,
		PollMode:      a.l.pollMode,
		PodCIDRs:      pods,
		NodeAddress:   node,
		HostAddresses: []netip.Addr{dutInIP, dutOut},
		Netns:         a.l.dut.Handle(),
		WorkerCPUs:    []int{a.l.workerCPU},
		WorkerNice:    a.l.nice,
		RingSize:      a.l.ring,
		BatchSize:     a.l.batch,
		Logger:        a.log,
	})
	if err != nil {
		return err
	}
	a.eng, a.cs = eng, cs
	return nil
}

func (a *afxdpDUT) stop() (dutReport, error) {
	if a.eng == nil {
		return dutReport{}, nil
	}
	err := a.eng.Close()
	c := a.eng.Counters()
	st := a.eng.Stats()
	a.eng = nil
	r := dutReport{drops: c.Dropped()}
	var parts []string
	for _, reason := range datapath.DropReasons() {
		if v := c.Drops[reason]; v > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", reason, v))
		}
	}
	for _, p := range st.Ports {
		k := p.XDP.KernelRxDropped + p.XDP.KernelRxRingFull
		r.drops += k
		if k > 0 {
			parts = append(parts, fmt.Sprintf("%s socket rx dropped %d (ring full %d)", p.Interface, k, p.XDP.KernelRxRingFull))
		}
	}
	var modes []string
	for _, i := range st.Interfaces {
		modes = append(modes, fmt.Sprintf("%s xdp %s", i.Name, i.XDPMode))
	}
	for _, p := range st.Ports {
		modes = append(modes, fmt.Sprintf("%s %s tx budget %d", p.Interface, p.SocketMode, p.TxBudget))
	}
	drops := "no drops"
	if len(parts) > 0 {
		drops = "drops: " + strings.Join(parts, ", ")
	}
	r.detail = fmt.Sprintf("engine counters incl. warm-up: rx %d tx %d, %s; %s", c.RxPackets, c.TxPackets, drops, strings.Join(modes, ", "))
	return r, err
}
