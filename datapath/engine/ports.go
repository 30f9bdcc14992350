package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afpacket"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

// ErrNotAttached is returned by RemoveInterface for an interface the
// engine does not serve.
var ErrNotAttached = errors.New("not attached")

// ErrFrameMemoryFull is wrapped by AddInterface's error when the workers'
// frame memory cannot back another port.
var ErrFrameMemoryFull = errors.New("frame memory full")

// txDrainTimeout bounds how long RemoveInterface waits for the TX
// completions of a socket it removes (the kernel normally completes
// copy-mode TX within microseconds).
var txDrainTimeout = time.Second

// AddInterface attaches an interface to the running engine and returns its
// PortID, for next hops to name. It resolves the interface in the engine's
// namespace, attaches the steering program (AF_XDP: native mode, falling
// back to generic mode with the reason kept, unless ifc.XDPMode says
// otherwise), opens one socket per worker on the worker's UMEM (its own
// fill and completion rings, XDP_SHARED_UMEM) or pool, hands the port to
// each running worker, which fills its fill ring between two batches, and
// only then registers the sockets in the interface's XSKMAP, so the kernel
// never redirects to a socket without receive buffers. The other ports'
// traffic flows throughout: no worker stops, and no frame they received is
// dropped.
//
// The PortID is the lowest free slot that no next hop of Config.Tables
// still names (Tables.PortInUse), else a new one. The sockets get
// Interface.RingSize or Config.RuntimeRingSize rings; AddInterface fails
// when the frame memory cannot back them (see Config.RuntimeInterfaces).
// On failure nothing stays attached. ctx bounds the wait for a busy queue
// (a socket on the interface closed a moment ago).
func (e *Engine) AddInterface(ctx context.Context, ifc Interface) (datapath.PortID, error) {
	if err := ifc.validate(); err != nil {
		return datapath.NoPort, err
	}
	e.opMu.Lock()
	defer e.opMu.Unlock()
	t0 := time.Now()
	e.mu.Lock()
	closed, old, port := e.closed, e.lookup(ifc.Name), e.freeSlot()
	reserved := e.reservedFrames()
	e.mu.Unlock()
	switch {
	case closed:
		return datapath.NoPort, fmt.Errorf("engine: interface %s: engine closed", ifc.Name)
	case old != nil:
		return datapath.NoPort, fmt.Errorf("engine: interface %s: already attached as port %d", ifc.Name, old.port)
	case port == datapath.NoPort:
		return datapath.NoPort, fmt.Errorf("engine: interface %s: no free port (%d in use)", ifc.Name, datapath.NoPort-1)
	}
	for _, w := range e.workers {
		if !w.ctl.Running() {
			return datapath.NoPort, fmt.Errorf("engine: interface %s: worker %d is not running: %v", ifc.Name, w.id, e.Err())
		}
	}
	afxdpPorts := e.cfg.PortKind == PortAFXDP
	if afxdpPorts {
		need, total := e.cfg.portFrames(e.cfg.ringSize(ifc, true)), e.cfg.umemFrames()
		if reserved+need > total {
			return datapath.NoPort, fmt.Errorf("engine: interface %s: %w: %d frames per worker, %d reserved by the attached ports, %d needed (rings of %d); raise Config.Frames or Config.RuntimeInterfaces, or lower Config.RuntimeRingSize",
				ifc.Name, ErrFrameMemoryFull, total, reserved, need, e.cfg.ringSize(ifc, true))
		}
	}

	var is *ifaceState
	socks := make([]*afxdp.Socket, len(e.workers))
	pports := make([]*afpacket.Port, len(e.workers))
	handed := make([]bool, len(e.workers))
	fail := func(err error) (datapath.PortID, error) {
		var errs []error
		for i, w := range e.workers {
			if s := socks[i]; s != nil {
				errs = append(errs, e.retireSocket(w, port, s, handed[i], true))
			}
			if p := pports[i]; p != nil {
				errs = append(errs, e.retirePacketPort(w, port, p, handed[i]))
			}
		}
		if is != nil && is.attachment != nil {
			errs = append(errs, is.attachment.Close())
		}
		if uerr := errors.Join(errs...); uerr != nil {
			e.log.Error("undo a failed interface attach", "if", ifc.Name, "err", uerr)
		}
		return datapath.NoPort, err
	}
	err := inNetns(e.cfg.Netns, func() error {
		var err error
		if is, err = e.resolve(ifc, port, true); err != nil {
			return err
		}
		if afxdpPorts {
			if err := e.attach(is, ifc.XDPMode); err != nil {
				return err
			}
		}
		for i, w := range e.workers {
			if afxdpPorts {
				if socks[i], err = e.newSocket(ctx, w.umem.OpenSocket, is.socketConfig(w.queue)); err != nil {
					return fmt.Errorf("engine: interface %s queue %d: %w", is.name, w.queue, err)
				}
			} else if pports[i], err = e.openPacketPort(w, is); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	// Hand the ports to the workers: each fills its socket's fill ring
	// between two batches.
	for i, w := range e.workers {
		var p datapath.Port
		var pl afxdp.Pollable
		if s := socks[i]; s != nil {
			p, pl = s, s
		} else {
			p, pl = pports[i], pports[i]
		}
		err := w.ctl.Do(func(ps *afxdp.PortSet) error {
			if err := w.dp.SetPort(port, p); err != nil {
				return err
			}
			ps.Add(pl)
			pl.Service()
			return nil
		})
		if err != nil {
			return fail(fmt.Errorf("engine: interface %s: worker %d: %w", ifc.Name, w.id, err))
		}
		handed[i] = true
	}
	// Now the kernel may redirect to the sockets.
	for i, s := range socks {
		if s == nil {
			continue
		}
		if err := is.attachment.Register(s); err != nil {
			return fail(fmt.Errorf("engine: interface %s queue %d: %w", ifc.Name, e.workers[i].queue, err))
		}
	}
	e.mu.Lock()
	for int(port) >= len(e.ifaces) {
		e.ifaces = append(e.ifaces, nil)
	}
	e.ifaces[port] = is
	for i, w := range e.workers {
		if socks[i] != nil {
			w.setSocket(port, socks[i])
		}
		if pports[i] != nil {
			w.setPacketPort(port, pports[i])
		}
	}
	e.mu.Unlock()
	attrs := []any{"if", is.name, "port", port, "ifindex", is.ifindex, "ports", e.cfg.PortKind, "took", time.Since(t0)}
	if is.attachment != nil {
		attrs = append(attrs, "xdp", is.attachment.Mode(), "xdp_reason", is.xdpReason, "socket", socks[0].Mode(),
			"socket_reason", socks[0].ModeReason(), "ring", is.ring)
	}
	e.log.Info("interface attached", attrs...)
	return port, nil
}

// RemoveInterface detaches an interface from the running engine: it
// unregisters its sockets from the steering program, has each worker
// forward what the socket had already received and take the port out of
// its port set between two batches, detaches the steering program (the
// interface is left as it was found), waits for the sockets' TX
// completions, closes them and returns every frame they held to the UMEM.
// An interface that vanished meanwhile (a pod's veth deleted with its
// namespace) is cleaned up the same way, without waiting for completions
// that cannot come.
//
// Callers remove the routes (next hops) to the port first: until then,
// frames routed to it are dropped as bad_next_hop, and its PortID is not
// given to another interface while a next hop still names it.
func (e *Engine) RemoveInterface(name string) error {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	t0 := time.Now()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("engine: interface %s: engine closed", name)
	}
	is := e.lookup(name)
	if is == nil {
		e.mu.Unlock()
		return fmt.Errorf("engine: interface %s: %w", name, ErrNotAttached)
	}
	port := is.port
	e.ifaces[port] = nil
	for len(e.ifaces) > 0 && e.ifaces[len(e.ifaces)-1] == nil {
		e.ifaces = e.ifaces[:len(e.ifaces)-1]
	}
	socks := make([]*afxdp.Socket, len(e.workers))
	pports := make([]*afpacket.Port, len(e.workers))
	for i, w := range e.workers {
		if socks[i] = w.socket(port); socks[i] != nil {
			w.sockets[port] = nil
		}
		if pports[i] = w.packetPort(port); pports[i] != nil {
			w.pports[port] = nil
		}
	}
	e.mu.Unlock()
	if e.cfg.Tables.PortInUse(port) {
		e.log.Warn("removing an interface next hops still name: its traffic is dropped until they are removed",
			"if", name, "port", port)
	}
	gone := !e.present(is)
	var errs []error
	for i, s := range socks {
		if s != nil && is.attachment != nil {
			is.attachment.Unregister(s)
		}
		if pports[i] != nil {
			errs = append(errs, e.retirePacketPort(e.workers[i], port, pports[i], true))
		}
	}
	if is.attachment != nil {
		// From here on the kernel gets every frame of the interface.
		errs = append(errs, is.attachment.Close())
	}
	for i, s := range socks {
		if s != nil {
			errs = append(errs, e.retireSocket(e.workers[i], port, s, true, gone))
		}
	}
	err := errors.Join(errs...)
	e.log.Info("interface detached", "if", name, "port", port, "vanished", gone, "took", time.Since(t0), "err", err)
	if err != nil {
		return fmt.Errorf("engine: interface %s: %w", name, err)
	}
	return nil
}

// retireSocket takes a socket out of a worker: if the worker has it
// (handed), the worker forwards what the socket already received, removes
// the port and pushes pending TX; then TX completions are awaited (unless
// the interface is gone), the socket is shut down outside the worker (the
// kernel's teardown waits for an RCU grace period) and forgotten by the
// worker, which gets its frames back.
func (e *Engine) retireSocket(w *worker, port datapath.PortID, s *afxdp.Socket, handed, gone bool) error {
	var errs []error
	if handed {
		errs = append(errs, w.exec(func(ps *afxdp.PortSet) error {
			for i := 0; i < 64 && w.dp.PollPort(port) > 0; i++ {
			}
			w.dp.RemovePort(port)
			if ps != nil {
				ps.Remove(s)
			}
			s.Service()
			return nil
		}))
		deadline := time.Now().Add(txDrainTimeout)
		for !gone {
			pending := 0
			errs = append(errs, w.exec(func(*afxdp.PortSet) error {
				s.Service()
				pending = s.TxOutstanding()
				return nil
			}))
			if pending == 0 {
				break
			}
			if time.Now().After(deadline) {
				e.log.Warn("TX completions missing at removal; reclaiming the frames", "ifindex", s.Ifindex(),
					"frames", pending)
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	last := s.Stats()
	errs = append(errs, s.Shutdown())
	errs = append(errs, w.exec(func(*afxdp.PortSet) error { return w.umem.Forget(s) }))
	e.mu.Lock()
	e.retired.Add(last)
	e.mu.Unlock()
	return errors.Join(errs...)
}

// retirePacketPort takes an AF_PACKET port out of a worker (forwarding
// what it already received) and closes it.
func (e *Engine) retirePacketPort(w *worker, port datapath.PortID, p *afpacket.Port, handed bool) error {
	var err error
	if handed {
		err = w.exec(func(ps *afxdp.PortSet) error {
			for i := 0; i < 64 && w.dp.PollPort(port) > 0; i++ {
			}
			w.dp.RemovePort(port)
			if ps != nil {
				ps.Remove(p)
			}
			return nil
		})
	}
	return errors.Join(err, p.Close())
}

// present reports whether the interface still exists in the engine's
// namespace (same name, same index).
func (e *Engine) present(is *ifaceState) bool {
	ok := false
	inNetns(e.cfg.Netns, func() error {
		ifi, err := net.InterfaceByIndex(is.ifindex)
		ok = err == nil && ifi.Name == is.name
		return nil
	})
	return ok
}

// lookup returns the attached interface name (nil: none); e.mu is held.
func (e *Engine) lookup(name string) *ifaceState {
	for _, is := range e.ifaces {
		if is != nil && is.name == name {
			return is
		}
	}
	return nil
}

// freeSlot returns the PortID for a new interface: the lowest slot that
// is free and that no next hop names (Tables.PortInUse), else NoPort; e.mu
// is held.
func (e *Engine) freeSlot() datapath.PortID {
	for i := 0; i < int(datapath.NoPort); i++ {
		if i < len(e.ifaces) && e.ifaces[i] != nil {
			continue
		}
		if !e.cfg.Tables.PortInUse(datapath.PortID(i)) {
			return datapath.PortID(i)
		}
	}
	return datapath.NoPort
}

// reservedFrames is what the attached AF_XDP ports need of one worker's
// UMEM (Config.portFrames each); e.mu is held.
func (e *Engine) reservedFrames() int {
	n := 0
	for _, is := range e.ifaces {
		if is != nil {
			n += e.cfg.portFrames(is.ring)
		}
	}
	return n
}

// Interface returns the statistics of the attached interface name.
func (e *Engine) Interface(name string) (InterfaceStats, bool) {
	for _, s := range e.Stats().Interfaces {
		if s.Name == name {
			return s, true
		}
	}
	return InterfaceStats{}, false
}

// SetPodCIDRs replaces the pod CIDRs the steering program redirects to the
// dataplane while the engine runs (an IPPool created or deleted after
// Start). Only AF_XDP engines steer at run time; an AF_PACKET engine's
// socket filters are fixed at Start and it returns an error saying so.
func (e *Engine) SetPodCIDRs(prefixes []netip.Prefix) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("engine: set pod CIDRs: engine closed")
	}
	if e.steering == nil {
		return errors.New("engine: set pod CIDRs: af_packet socket filters are fixed at start; restart the engine")
	}
	if err := e.steering.SetPodCIDRs(prefixes); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	e.cfg.PodCIDRs = append([]netip.Prefix(nil), prefixes...)
	return nil
}

// PodCIDRs returns the pod CIDRs the engine steers.
func (e *Engine) PodCIDRs() []netip.Prefix {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]netip.Prefix(nil), e.cfg.PodCIDRs...)
}

// ForgetFlows deletes every worker's tracked flows (the policy stage's
// conntrack) to or from any of addrs, and returns how many. The agent calls
// it when an endpoint is deleted, so that a pod reusing the address does
// not inherit the flows its predecessor was allowed.
func (e *Engine) ForgetFlows(addrs []netip.Addr) (int, error) {
	total := 0
	for _, w := range e.workers {
		err := w.exec(func(*afxdp.PortSet) error {
			if w.dp != nil {
				total += w.dp.ForgetFlows(addrs)
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("engine: forget flows: worker %d: %w", w.id, err)
		}
	}
	return total, nil
}
