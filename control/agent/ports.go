package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afxdp"
	"github.com/tabbynet/tabby/datapath/engine"
	"github.com/tabbynet/tabby/datapath/header"
)

// enginePort is one engine interface: a configured one (Config.Interfaces)
// or a local pod's host-side veth attached at runtime.
type enginePort struct {
	id      datapath.PortID
	mac     header.MAC
	ifindex int
	mtu     int
	// pod is true for a pod's veth the agent attached (and detaches when
	// its endpoint goes); configured interfaces stay as they are.
	pod bool
}

// portTable is the afxdp dataplane's engine ports by interface name. The
// reconciler goroutine changes it (attaching and detaching pods' veths)
// and reads it while programming routes (TablesRoutes, netlinkNeighbors);
// the lock lets other goroutines (status, tests) read it too.
type portTable struct {
	mu     sync.RWMutex
	byName map[string]enginePort
}

func newPortTable() *portTable { return &portTable{byName: map[string]enginePort{}} }

// get returns the port of interface name.
func (t *portTable) get(name string) (enginePort, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	p, ok := t.byName[name]
	return p, ok
}

// byIndex returns the port of the interface with index ifindex.
func (t *portTable) byIndex(ifindex int) (enginePort, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, p := range t.byName {
		if p.ifindex == ifindex {
			return p, true
		}
	}
	return enginePort{}, false
}

func (t *portTable) set(name string, p enginePort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byName[name] = p
}

func (t *portTable) remove(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byName, name)
}

// podPorts returns the names of the pods' veths attached, sorted.
func (t *portTable) podPorts() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []string
	for n, p := range t.byName {
		if p.pod {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// counts returns how many configured and pod interfaces there are.
func (t *portTable) counts() (configured, pods int) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, p := range t.byName {
		if p.pod {
			pods++
		} else {
			configured++
		}
	}
	return configured, pods
}

// portAttach says how a pod's interface was attached.
type portAttach struct {
	port                    datapath.PortID
	xdpMode, socketMode     string
	xdpReason, socketReason string
	took                    time.Duration
}

// portManager is implemented by dataplanes that serve pods' interfaces as
// ports of their own (afxdp): the reconciler attaches a local endpoint's
// interface before programming its route and detaches it after the route
// is gone.
type portManager interface {
	// syncPorts attaches the interfaces in want that are no port yet (and
	// re-attaches a port whose interface was replaced by one of the same
	// name); it reports what it attached and what failed, by interface.
	syncPorts(ctx context.Context, want map[string]bool) (map[string]portAttach, map[string]error)
	// podPorts lists the pods' interfaces attached.
	podPorts() []string
	// detachPort detaches a pod's interface and says how it was attached.
	detachPort(name string) (portAttach, error)
	// portCounts returns how many configured and pod interfaces are ports.
	portCounts() (configured, pods int)
	// endpointRouted reports why the addresses are not routed to the
	// interface's port (nil: they are).
	endpointRouted(iface string, addrs []netip.Addr) error
}

func (d *afxdpDataplane) podPorts() []string { return d.ports.podPorts() }

func (d *afxdpDataplane) portCounts() (int, int) { return d.ports.counts() }

func (d *afxdpDataplane) syncPorts(ctx context.Context, want map[string]bool) (map[string]portAttach, map[string]error) {
	if len(want) == 0 {
		return nil, nil
	}
	errs := map[string]error{}
	links := map[string]netlink.Link{}
	ls, err := d.nl.LinkList()
	if err != nil {
		for name := range want {
			errs[name] = fmt.Errorf("list interfaces: %w", err)
		}
		return nil, errs
	}
	for _, l := range ls {
		links[l.Attrs().Name] = l
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	done := map[string]portAttach{}
	for _, name := range names {
		link, present := links[name]
		have, attached := d.ports.get(name)
		switch {
		case attached && (!present || link.Attrs().Index == have.ifindex):
			continue // attached (or gone with its pod: detached when the endpoint goes)
		case attached && !have.pod:
			errs[name] = fmt.Errorf("interface %s is a configured engine interface that was replaced (ifindex %d, now %d): restart the agent",
				name, have.ifindex, link.Attrs().Index)
			continue
		case attached:
			// The pod's veth was replaced by one of the same name (a
			// repeated CNI ADD): the old socket is bound to a device that
			// no longer exists.
			d.log.Info("pod interface replaced; attaching the new one", "if", name, "old_ifindex", have.ifindex,
				"ifindex", link.Attrs().Index)
			if _, err := d.detachPort(name); err != nil {
				d.log.Warn("detach replaced pod interface", "if", name, "err", err)
			}
		case !present:
			errs[name] = fmt.Errorf("interface %s does not exist in the dataplane's network namespace %s: the CNI plugin creates it in the namespace it runs in, which must be the agent's netns setting",
				name, d.netnsName)
			continue
		}
		a, err := d.attachPort(ctx, name, link)
		if err != nil {
			errs[name] = err
			continue
		}
		done[name] = a
	}
	return done, errs
}

// attachPort makes a pod's veth an engine port.
func (d *afxdpDataplane) attachPort(ctx context.Context, name string, link netlink.Link) (portAttach, error) {
	t0 := time.Now()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id, err := d.eng.AddInterface(actx, engine.Interface{Name: name, XDPMode: d.xdpMode, RingSize: d.podRing,
		Workload: true})
	if errors.Is(err, engine.ErrFrameMemoryFull) {
		_, pods := d.ports.counts()
		return portAttach{}, fmt.Errorf("%w (this node serves %d pods, maxPods is %d: raise maxPods, TABBY_MAX_PODS)",
			err, pods, d.maxPods)
	}
	if err != nil {
		return portAttach{}, err
	}
	p := enginePort{id: id, ifindex: link.Attrs().Index, mtu: link.Attrs().MTU, pod: true}
	copy(p.mac[:], link.Attrs().HardwareAddr)
	d.ports.set(name, p)
	a := d.describe(name)
	a.port, a.took = id, time.Since(t0)
	return a, nil
}

// describe returns how an engine interface is attached.
func (d *afxdpDataplane) describe(name string) portAttach {
	var a portAttach
	if is, ok := d.eng.Interface(name); ok {
		a.port = is.Port
		a.xdpMode, a.xdpReason = is.XDPMode.String(), is.XDPModeReason
		if is.SocketMode != afxdp.ModeAuto {
			a.socketMode, a.socketReason = is.SocketMode.String(), is.SocketModeReason
		}
	}
	return a
}

func (d *afxdpDataplane) endpointRouted(iface string, addrs []netip.Addr) error {
	p, ok := d.ports.get(iface)
	if !ok {
		return fmt.Errorf("interface %s is no engine port", iface)
	}
	snap := d.tables.Load()
	for _, a := range addrs {
		var id uint32
		var found bool
		if a.Is4() {
			b := a.As4()
			id, found = snap.Routes4.Lookup(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
		} else {
			id, found = snap.Routes6.Lookup(a.As16())
		}
		if !found || int(id) >= len(snap.NextHops) {
			return fmt.Errorf("no route to %s in the dataplane", a)
		}
		if nh := snap.NextHops[id]; nh.Kind != datapath.NextHopLocal || nh.Port != p.id {
			return fmt.Errorf("%s is routed to a %s next hop on port %d, not to %s (port %d)", a, nh.Kind, nh.Port, iface, p.id)
		}
	}
	return nil
}

// detachPort removes a pod's veth from the engine; the port is forgotten
// even when the engine reports an error (its state is gone either way).
func (d *afxdpDataplane) detachPort(name string) (portAttach, error) {
	t0 := time.Now()
	a := d.describe(name)
	d.ports.remove(name)
	err := d.eng.RemoveInterface(name)
	a.took = time.Since(t0)
	return a, err
}

// localInterfaces returns the host-side interfaces of this node's
// workload endpoints.
func (r *reconciler) localInterfaces() map[string]bool {
	want := map[string]bool{}
	for _, w := range r.weps {
		if w.Spec.Node == r.node && w.Spec.InterfaceName != "" && len(w.Addrs()) > 0 {
			want[w.Spec.InterfaceName] = true
		}
	}
	return want
}

// attachPorts gives the dataplane the local endpoints' interfaces before
// their routes are programmed. Failures are kept per interface (the
// endpoint API reports them, the next round retries them) and logged when
// they change.
func (r *reconciler) attachPorts(ctx context.Context, pm portManager, want map[string]bool) {
	done, errs := pm.syncPorts(ctx, want)
	for name, a := range done {
		r.log.Info("pod interface attached", "if", name, "port", a.port, "xdp_mode", a.xdpMode, "xdp_reason", a.xdpReason,
			"socket_mode", a.socketMode, "socket_reason", a.socketReason, "took", a.took.Round(time.Microsecond))
		r.metrics.portOps.WithLabelValues("attach", "ok", a.xdpMode, a.socketMode).Inc()
		delete(r.portErrs, name)
	}
	for name, err := range errs {
		if msg := err.Error(); r.portErrs[name] != msg {
			r.log.Error("attach pod interface", "if", name, "err", err)
			r.metrics.portOps.WithLabelValues("attach", "error", "", "").Inc()
			r.portErrs[name] = msg
		}
	}
	for name := range r.portErrs {
		if !want[name] {
			delete(r.portErrs, name)
		}
	}
}

// detachPorts detaches the pods' interfaces no local endpoint has any
// more, after their routes were removed.
func (r *reconciler) detachPorts(pm portManager, want map[string]bool) {
	for _, name := range pm.podPorts() {
		if want[name] {
			continue
		}
		a, err := pm.detachPort(name)
		if err != nil {
			r.log.Error("detach pod interface", "if", name, "port", a.port, "xdp_mode", a.xdpMode,
				"socket_mode", a.socketMode, "err", err)
			r.metrics.portOps.WithLabelValues("detach", "error", a.xdpMode, a.socketMode).Inc()
			continue
		}
		r.log.Info("pod interface detached", "if", name, "port", a.port, "xdp_mode", a.xdpMode,
			"socket_mode", a.socketMode, "took", a.took.Round(time.Microsecond))
		r.metrics.portOps.WithLabelValues("detach", "ok", a.xdpMode, a.socketMode).Inc()
	}
	c, p := pm.portCounts()
	r.metrics.ports.WithLabelValues("config").Set(float64(c))
	r.metrics.ports.WithLabelValues("pod").Set(float64(p))
}
