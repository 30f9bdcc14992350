package cni

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/tabbynet/tabby/control/agent"
)

// HostVethPrefix starts the name of every host-side veth.
const HostVethPrefix = "tab"

// HostVethName is the host side of a container's veth: "tab" and the
// first 12 hex digits of the SHA-1 of the container ID (15 characters,
// the kernel's limit).
func HostVethName(containerID string) string {
	h := sha1.Sum([]byte(containerID))
	return HostVethPrefix + hex.EncodeToString(h[:])[:12]
}

// Plugin implements the CNI commands. Stderr receives the log (the CNI
// runtime collects it); each command builds its logger from the
// configuration's log_level and log_file_path.
type Plugin struct {
	Stderr io.Writer
}

// Funcs returns the plugin's commands for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

// logger returns the command's logger and a function closing its file.
func (p *Plugin) logger(conf *NetConf, args *skel.CmdArgs, cmd string) (*slog.Logger, func()) {
	level, _ := conf.Level()
	var w io.Writer = p.Stderr
	if w == nil {
		w = os.Stderr
	}
	closeFn := func() {}
	if conf.LogFilePath != "" {
		f, err := os.OpenFile(conf.LogFilePath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			w = io.MultiWriter(w, f)
			closeFn = func() { f.Close() }
		}
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("plugin", "tabby", "cmd", cmd)
	if args != nil {
		log = log.With("container", args.ContainerID)
	}
	return log, closeFn
}

func (p *Plugin) client(conf *NetConf) *agent.Client { return agent.NewClient(conf.AgentSocket) }

// Add creates the pod's veth, asks the agent for addresses and registers
// the endpoint (the reply comes after the policy including it is
// published), then configures addresses and routes. A failure undoes
// everything: no veth stays, no address stays allocated.
func (p *Plugin) Add(args *skel.CmdArgs) (err error) {
	start := time.Now()
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := p.logger(conf, args, "ADD")
	defer closeLog()
	defer func() {
		if err != nil {
			log.Error("add failed", "err", err, "took", time.Since(start))
		}
	}()
	k8s := K8sArgs{}
	if err := types.LoadArgs(args.Args, &k8s); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: %v", err), "")
	}
	if args.IfName == "" || len(args.IfName) > 15 || strings.ContainsAny(args.IfName, "/ :") {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_IFNAME %q is not a valid interface name", args.IfName), "")
	}
	netns, err := openNetns(args.Netns)
	if err != nil {
		return err
	}
	defer netns.Close()

	var prev *current.Result
	if conf.PrevResult != nil {
		if prev, err = current.NewResultFromResult(conf.PrevResult); err != nil {
			return types.NewError(types.ErrDecodingFailure, "cannot convert prevResult", err.Error())
		}
		for _, ifc := range prev.Interfaces {
			if ifc.Name == args.IfName && ifc.Sandbox != "" {
				return types.NewError(types.ErrInvalidNetworkConfig,
					fmt.Sprintf("interface %s in the container was set up by an earlier plugin of the chain; tabby creates CNI_IFNAME itself: put tabby first, or after plugins that do not create %s",
						args.IfName, args.IfName), "")
			}
		}
	}

	hostName := HostVethName(args.ContainerID)
	hostIf, contIf, err := createVeth(netns, args.IfName, hostName, conf.MTU)
	if err != nil {
		return err
	}
	log.Debug("veth created", "host", hostName, "container_mac", contIf.HardwareAddr.String())
	undoVeth := func() {
		if derr := deleteLink(hostName); derr != nil {
			log.Warn("delete veth after failed add", "veth", hostName, "err", derr)
		}
	}

	v4, v6 := conf.Families()
	ns := string(k8s.K8S_POD_NAMESPACE)
	if ns == "" {
		ns = conf.Kubernetes.PodNamespaceDefault
	}
	req := agent.EndpointRequest{ContainerID: args.ContainerID, Namespace: ns, Pod: string(k8s.K8S_POD_NAME),
		Endpoint: args.IfName, InterfaceName: hostName, MAC: contIf.HardwareAddr.String(), IPv4: v4, IPv6: v6,
		Pools4: conf.TabbyIPAM.IPv4Pools, Pools6: conf.TabbyIPAM.IPv6Pools}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	cli := p.client(conf)
	resp, err := cli.AddEndpoint(ctx, req)
	if err != nil {
		undoVeth()
		return agentError("assign addresses and register endpoint", conf.AgentSocket, err)
	}
	addrs, err := parseIPs(resp.IPs)
	if err != nil {
		err = internal("agent replied with bad addresses %v: %v", resp.IPs, err)
	} else {
		err = configure(netns, args.IfName, hostName, contIf.HardwareAddr, addrs, resp.DisableTxChecksumOffload)
	}
	if err != nil {
		undoVeth()
		rctx, rcancel := context.WithTimeout(context.Background(), conf.Timeout())
		defer rcancel()
		if _, derr := cli.DeleteEndpoint(rctx, args.ContainerID); derr != nil {
			log.Warn("release after failed add", "err", derr)
		}
		return err
	}

	result := buildResult(conf, prev, args, hostIf, contIf, addrs)
	log.Info("added", "pod", resp.Namespace+"/"+resp.Pod, "veth", hostName, "ips", resp.IPs,
		"policy_generation", resp.PolicyGeneration, "took", time.Since(start))
	return types.PrintResult(result, conf.CNIVersion)
}

// buildResult merges the previous plugin's result (kept first) with the
// interfaces, addresses and routes this plugin created.
func buildResult(conf *NetConf, prev *current.Result, args *skel.CmdArgs, hostIf, contIf net.Interface,
	addrs []netip.Prefix) *current.Result {
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: conf.DNS}
	if prev != nil {
		r.Interfaces = append(r.Interfaces, prev.Interfaces...)
		r.IPs = append(r.IPs, prev.IPs...)
		r.Routes = append(r.Routes, prev.Routes...)
		if prev.DNS.Nameservers != nil || prev.DNS.Domain != "" || prev.DNS.Search != nil {
			r.DNS = prev.DNS
		}
	}
	r.Interfaces = append(r.Interfaces,
		&current.Interface{Name: hostIf.Name, Mac: hostIf.HardwareAddr.String()},
		&current.Interface{Name: contIf.Name, Mac: contIf.HardwareAddr.String(), Mtu: conf.MTU, Sandbox: args.Netns})
	idx := len(r.Interfaces) - 1
	has4, has6 := false, false
	for _, a := range addrs {
		gw := gateway4
		if a.Addr().Is6() {
			gw, has6 = gateway6, true
		} else {
			has4 = true
		}
		r.IPs = append(r.IPs, &current.IPConfig{Interface: current.Int(idx),
			Address: net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())},
			Gateway: gw.AsSlice()})
	}
	if has4 {
		r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			GW: gateway4.AsSlice()})
	}
	if has6 {
		r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
			GW: gateway6.AsSlice()})
	}
	return r
}

func parseIPs(ss []string) ([]netip.Prefix, error) {
	if len(ss) == 0 {
		return nil, errors.New("no address")
	}
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
	}
	return out, nil
}

// openNetns opens the container's namespace; a missing one is CNI error 3
// (the container does not exist), something else than a namespace 4.
func openNetns(path string) (ns.NetNS, error) {
	if path == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty: ADD needs the container's network namespace", "")
	}
	err := ns.IsNSorErr(path)
	if err == nil {
		var n ns.NetNS
		if n, err = ns.GetNS(path); err == nil {
			return n, nil
		}
	}
	var notExist ns.NSPathNotExistErr
	if errors.As(err, &notExist) {
		return nil, types.NewError(types.ErrUnknownContainer,
			fmt.Sprintf("network namespace %s does not exist: the container is gone or CNI_NETNS is wrong", path), err.Error())
	}
	return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %s is not a network namespace", path),
		err.Error())
}

// Del removes the pod's veth (if any: a missing namespace or interface is
// not an error), then the agent's endpoint and addresses (idempotent).
func (p *Plugin) Del(args *skel.CmdArgs) (err error) {
	start := time.Now()
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := p.logger(conf, args, "DEL")
	defer closeLog()
	hostName := HostVethName(args.ContainerID)
	if args.Netns != "" {
		err := ns.WithNetNSPath(args.Netns, func(ns.NetNS) error { return deleteLink(args.IfName) })
		var notExist ns.NSPathNotExistErr
		if err != nil && !errors.As(err, &notExist) {
			log.Warn("delete container interface", "err", err)
		}
	}
	if err := deleteLink(hostName); err != nil {
		return internal("delete host veth %s: %v", hostName, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	resp, err := p.client(conf).DeleteEndpoint(ctx, args.ContainerID)
	if err != nil {
		e := agentError("release addresses and unregister endpoint", conf.AgentSocket, err)
		log.Error("del failed", "err", e)
		return e
	}
	log.Info("deleted", "released", resp.Released, "endpoints", resp.Endpoints, "took", time.Since(start))
	return nil
}

// Check verifies what ADD set up against the cached result: the
// container interface (veth, MTU, up, addresses, routes), the host veth
// (its peer, proxy ARP, a host route per address) and the agent's
// endpoint.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := p.logger(conf, args, "CHECK")
	defer closeLog()
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult (the cached ADD result)", "")
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "cannot convert prevResult", err.Error())
	}
	netns, err := openNetns(args.Netns)
	if err != nil {
		return err
	}
	defer netns.Close()
	hostName := HostVethName(args.ContainerID)
	contIdx, hostFound := -1, false
	for i, ifc := range res.Interfaces {
		if ifc.Name == args.IfName && ifc.Sandbox == args.Netns {
			contIdx = i
		}
		if ifc.Name == hostName && ifc.Sandbox == "" {
			hostFound = true
		}
	}
	if contIdx < 0 || !hostFound {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("prevResult names no interface %s in %s and %s on the host: not tabby's result", args.IfName,
				args.Netns, hostName), "")
	}
	var addrs []netip.Prefix
	for _, ipc := range res.IPs {
		if ipc.Interface != nil && *ipc.Interface == contIdx {
			a, _ := netip.AddrFromSlice(ipc.Address.IP)
			a = a.Unmap()
			addrs = append(addrs, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	if err := checkSetup(netns, args.IfName, hostName, conf.MTU, addrs); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	eps, err := p.client(conf).Endpoints(ctx)
	if err != nil {
		return agentError("list endpoints", conf.AgentSocket, err)
	}
	for _, ep := range eps {
		if ep.ContainerID == args.ContainerID {
			log.Debug("check passed")
			return nil
		}
	}
	return internal("container %s has no endpoint in the tabby agent: policy does not apply to it; delete and re-add the pod",
		args.ContainerID)
}

// GC removes the agent's endpoints (and their addresses and host veths)
// of containers that are not among the runtime's valid attachments.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := p.logger(conf, nil, "GC")
	defer closeLog()
	valid := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[a.ContainerID] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	cli := p.client(conf)
	eps, err := cli.Endpoints(ctx)
	if err != nil {
		return agentError("list endpoints", conf.AgentSocket, err)
	}
	for _, ep := range eps {
		if valid[ep.ContainerID] || ep.ContainerID == "" {
			continue
		}
		if err := deleteLink(HostVethName(ep.ContainerID)); err != nil {
			log.Warn("gc: delete veth", "container", ep.ContainerID, "err", err)
		}
		if _, err := cli.DeleteEndpoint(ctx, ep.ContainerID); err != nil {
			return agentError("gc: release "+ep.ContainerID, conf.AgentSocket, err)
		}
		log.Info("gc: released", "container", ep.ContainerID, "ips", ep.IPs)
	}
	return nil
}

// Status reports whether the agent can serve ADD: reachable and ready
// (CNI error 50 otherwise).
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	st, err := p.client(conf).Status(ctx)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable,
			fmt.Sprintf("tabby agent not reachable at %s: is `tabby agent` running on this node?", conf.AgentSocket),
			err.Error())
	}
	if !st.Ready {
		return types.NewError(types.ErrPluginNotAvailable, "tabby agent is not ready: "+strings.Join(st.NotReady, "; "), "")
	}
	return nil
}
