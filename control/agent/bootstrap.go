package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/ipam"
	"github.com/tabbynet/tabby/control/resources"
)

// connect opens the datastore and the object store.
func (a *Agent) connect(ctx context.Context, c *Config) error {
	defer func() {
		if a.opts.Cluster != nil {
			a.cluster = a.opts.Cluster
		}
		if a.cluster != nil {
			a.epFile = &endpointFile{path: filepath.Join(c.StateDir, endpointsFileName)}
		}
	}()
	switch c.Datastore.Type {
	case "kubernetes":
		kds, err := kubernetes.New(kubernetes.Config{Kubeconfig: c.Datastore.Kubeconfig,
			ProbeInterval: a.opts.ProbeInterval, BackoffMax: 2 * time.Second, Logger: a.log.With("component", "kubernetes")})
		if err != nil {
			return err
		}
		// The agent kinds are custom resources too, except
		// WorkloadEndpoint: the cluster's pods are the endpoints, with
		// this node's registrations in the endpoints file.
		a.ds, a.cluster = kds, kds.Cluster()
		a.objs = NewKubernetesObjects(kds)
		a.store = &Store{DS: kds, Objects: a.objs}
		return nil
	case "etcd":
	default:
		return fmt.Errorf("datastore %q: unknown type", c.Datastore.Type)
	}
	endpoints := c.Datastore.EtcdEndpoints
	if len(endpoints) == 0 {
		dir := filepath.Join(c.StateDir, "etcd")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("embedded etcd: %w", err)
		}
		e, err := etcd.StartEmbedded(ctx, etcd.EmbeddedConfig{Dir: dir, Name: c.NodeName})
		if err != nil {
			return err
		}
		a.embedded = e
		endpoints = e.Endpoints()
		if err := WriteEmbeddedEndpoints(c.StateDir, endpoints); err != nil {
			return err
		}
		a.log.Info("embedded etcd started", "endpoints", endpoints, "dir", dir)
	}
	ds, err := etcd.New(etcd.Config{Endpoints: endpoints, CertFile: c.Datastore.EtcdCertFile,
		KeyFile: c.Datastore.EtcdKeyFile, CAFile: c.Datastore.EtcdCAFile, Prefix: c.Datastore.EtcdPrefix,
		ProbeInterval: a.opts.ProbeInterval, BackoffMax: 2 * time.Second, Logger: a.log.With("component", "etcd")})
	if err != nil {
		return err
	}
	a.ds = ds
	a.objs = NewEtcdObjects(ds)
	a.store = &Store{DS: a.ds, Objects: a.objs}
	return nil
}

// EmbeddedEndpointsFile is where an agent with an embedded etcd writes the
// etcd's client URLs (one per line), under its state directory; the CLI
// reads it when no endpoints are configured.
const EmbeddedEndpointsFile = "etcd-endpoints"

// WriteEmbeddedEndpoints records an embedded etcd's endpoints.
func WriteEmbeddedEndpoints(stateDir string, endpoints []string) error {
	p := filepath.Join(stateDir, EmbeddedEndpointsFile)
	if err := os.WriteFile(p+".tmp", []byte(strings.Join(endpoints, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return os.Rename(p+".tmp", p)
}

// ReadEmbeddedEndpoints returns the endpoints an agent recorded.
func ReadEmbeddedEndpoints(stateDir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, EmbeddedEndpointsFile))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

// retry runs f until it succeeds or ctx ends, with back-off.
func (a *Agent) retry(ctx context.Context, what string, f func(ctx context.Context) error) error {
	wait := 200 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(rctx)
		cancel()
		if err == nil {
			return nil
		}
		a.log.Warn(what+" failed; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// readAgentConfigs reads the "default" and "node.<name>" configurations.
func (a *Agent) readAgentConfigs(ctx context.Context, node string) (global, nodeCfg *AgentConfiguration, err error) {
	if a.objs == nil {
		return nil, nil, nil // no AgentConfigurations in this datastore
	}
	get := func(ctx context.Context, name string) (*AgentConfiguration, error) {
		obj, err := a.objs.Get(ctx, resources.Key{Kind: KindAgentConfiguration, Name: name})
		if datastore.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return obj.(*AgentConfiguration), nil
	}
	err = a.retry(ctx, "read agent configuration", func(ctx context.Context) error {
		var err error
		if global, err = get(ctx, "default"); err != nil {
			return err
		}
		nodeCfg, err = get(ctx, NodeConfigName(node))
		return err
	})
	return global, nodeCfg, err
}

// addresses returns the node address (configured or the first global
// IPv4 address of the first interface) and the host's addresses on the
// engine interfaces.
func (a *Agent) addresses() (netip.Prefix, []netip.Addr, error) {
	addrs, err := interfaceAddrs(a.opts.Netns, a.cfg.Interfaces)
	if err != nil {
		return netip.Prefix{}, nil, err
	}
	node := a.cfg.NodeAddress
	if !node.IsValid() {
		for _, p := range addrs {
			if p.Addr().Is4() {
				node = p
				break
			}
		}
	}
	if !node.IsValid() {
		return node, nil, errors.New("no node address: set TABBY_IP or give the first interface an IPv4 address")
	}
	host := []netip.Addr{node.Addr()}
	for _, p := range addrs {
		if p.Addr() != node.Addr() {
			host = append(host, p.Addr())
		}
	}
	return node, host, nil
}

// ensurePools creates the configured default pools when no pool exists and
// returns the pools.
func (a *Agent) ensurePools(ctx context.Context) ([]*resources.IPPool, error) {
	var pools []*resources.IPPool
	err := a.retry(ctx, "list pools", func(ctx context.Context) error {
		var err error
		pools, _, err = datastore.ListOf[*resources.IPPool](ctx, a.ds)
		return err
	})
	if err != nil || len(pools) > 0 {
		return pools, err
	}
	for _, b := range []struct {
		name string
		p    PoolBootstrap
	}{{"default-ipv4-ippool", a.cfg.IPv4Pool}, {"default-ipv6-ippool", a.cfg.IPv6Pool}} {
		if !b.p.CIDR.IsValid() {
			continue
		}
		pool := &resources.IPPool{ObjectMeta: resources.ObjectMeta{Name: b.name}, Spec: resources.IPPoolSpec{
			CIDR: b.p.CIDR.String(), BlockSize: b.p.BlockSize, IPIPMode: b.p.IPIPMode, VXLANMode: b.p.VXLANMode,
			NATOutgoing: b.p.NATOutgoing}}
		err := a.retry(ctx, "create default pool", func(ctx context.Context) error {
			_, err := datastore.Create(ctx, a.ds, pool)
			if datastore.IsAlreadyExists(err) {
				return nil
			}
			if errors.Is(err, resources.ErrInvalid) {
				return backoffStop{err}
			}
			return err
		})
		var stop backoffStop
		if errors.As(err, &stop) {
			return nil, fmt.Errorf("default pool %s: %w", b.name, stop.err)
		}
		if err != nil {
			return nil, err
		}
		a.log.Info("created default pool", "pool", b.name, "cidr", pool.Spec.CIDR)
		pools = append(pools, pool)
	}
	return pools, nil
}

// backoffStop ends a retry loop early: the error will not go away.
type backoffStop struct{ err error }

func (b backoffStop) Error() string { return b.err.Error() }

// vxlanHandle is the IPAM handle of a node's VXLAN tunnel address.
func vxlanHandle(node string) string { return "vxlan-tunnel-addr-" + node }

// vtepMAC derives a stable, locally administered MAC from the node name.
func vtepMAC(node string) net.HardwareAddr {
	h := uint32(2166136261)
	for i := 0; i < len(node); i++ {
		h = (h ^ uint32(node[i])) * 16777619
	}
	return net.HardwareAddr{0x66, 0x74, byte(h >> 24), byte(h >> 16), byte(h >> 8), byte(h)}
}

// registerNode creates or updates this node's Node: its address (and BGP
// address when BGP runs) and, when a pool uses VXLAN, its VTEP address
// (from IPAM) and MAC. Labels and other fields are kept.
func (a *Agent) registerNode(ctx context.Context, addr netip.Prefix, pools []*resources.IPPool) error {
	var vxlanPools []string
	for _, p := range pools {
		if pf := p.Prefix(); p.Spec.VXLANMode.Enabled() && pf.IsValid() && pf.Addr().Is4() && !p.Spec.Disabled {
			vxlanPools = append(vxlanPools, p.Name)
		}
	}
	var vtep netip.Addr
	if len(vxlanPools) > 0 {
		err := a.retry(ctx, "assign VXLAN tunnel address", func(ctx context.Context) error {
			h := vxlanHandle(a.cfg.NodeName)
			have, err := a.ipam.IPsByHandle(ctx, h)
			if err != nil {
				return err
			}
			for _, ip := range have {
				if ip.Is4() {
					vtep = ip
					return nil
				}
			}
			as, err := a.ipam.AutoAssign(ctx, ipam.AssignArgs{Handle: h, Num4: 1, Pools4: vxlanPools,
				Attrs: map[string]string{"type": "vxlanTunnelAddress"}})
			if err != nil {
				return err
			}
			vtep = as.IPv4[0]
			return nil
		})
		if err != nil {
			return err
		}
	}
	return a.retry(ctx, "register node", func(ctx context.Context) error {
		n, err := datastore.Get[*resources.Node](ctx, a.ds, a.cfg.NodeName)
		create := datastore.IsNotFound(err)
		switch {
		case create:
			n = &resources.Node{ObjectMeta: resources.ObjectMeta{Name: a.cfg.NodeName}}
		case err != nil:
			return err
		}
		n.Spec.Addresses = []resources.NodeAddress{{Address: addr.String(), Type: "CalicoNodeIP"}}
		if a.cfg.BGPEnabled {
			if n.Spec.BGP == nil {
				n.Spec.BGP = &resources.NodeBGPSpec{}
			}
			n.Spec.BGP.IPv4Address = addr.String()
		}
		if vtep.IsValid() {
			a.vtep = vtep
			n.Spec.IPv4VXLANTunnelAddr = vtep.String()
			n.Spec.VXLANTunnelMACAddr = vtepMAC(a.cfg.NodeName).String()
		}
		if create {
			_, err = datastore.Create(ctx, a.ds, n)
		} else {
			_, err = datastore.Update(ctx, a.ds, n)
		}
		return err
	})
}
