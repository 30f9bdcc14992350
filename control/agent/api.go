package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/ipam"
	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/datapath"
)

// EndpointRequest is the body of POST /v1/endpoints.
type EndpointRequest struct {
	// ContainerID is the CNI container ID: the IPAM handle, and what
	// DELETE names. Required.
	ContainerID string `json:"containerID"`
	// Namespace and Pod name the pod (Kubernetes); Namespace defaults to
	// "default".
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	// Endpoint is the interface name inside the container (default eth0),
	// InterfaceName the host side of the veth, MAC the container
	// interface's MAC.
	Endpoint      string `json:"endpoint,omitempty"`
	InterfaceName string `json:"interfaceName,omitempty"`
	MAC           string `json:"mac,omitempty"`
	// Labels are the pod's labels (what policy selectors match).
	//
	// A repeated ADD (same containerID, so the same endpoint) keeps what
	// an orchestrator owns on the stored WorkloadEndpoint unless the
	// request carries it: the labels unless Labels is non-empty, the
	// named ports unless Ports is non-empty, the service account unless
	// ServiceAccount is set, and always the annotations. The CNI plugin
	// sends none of them, and runtimes retry ADD, so a retry must not
	// wipe the labels an orchestrator wrote onto the endpoint (etcd
	// datastore). A first ADD, or an ADD of another container under the
	// same endpoint name, stores the request as it is.
	Labels map[string]string `json:"labels,omitempty"`
	// Ports are named container ports (see Labels for a repeated ADD).
	Ports []resources.EndpointPort `json:"ports,omitempty"`
	// ServiceAccount is the pod's service account (see Labels for a
	// repeated ADD).
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// IPv4 and IPv6 are how many addresses of each family to assign
	// (both zero: one IPv4 address). Pools4 and Pools6 restrict the
	// pools.
	IPv4   int      `json:"ipv4,omitempty"`
	IPv6   int      `json:"ipv6,omitempty"`
	Pools4 []string `json:"pools4,omitempty"`
	Pools6 []string `json:"pools6,omitempty"`
}

// EndpointResponse is the reply to POST /v1/endpoints and one element of
// GET /v1/endpoints.
type EndpointResponse struct {
	Name        string `json:"name"`
	Namespace   string `json:"namespace"`
	Node        string `json:"node"`
	ContainerID string `json:"containerID"`
	Pod         string `json:"pod,omitempty"`
	// IPs are the addresses with their host prefix (10.65.0.5/32).
	IPs []string `json:"ips"`
	// Gateway4 and Gateway6 are the pod's default gateways (Calico's
	// link-local model: answered by proxy ARP / NDP on the host veth).
	Gateway4 string `json:"gateway4,omitempty"`
	Gateway6 string `json:"gateway6,omitempty"`
	// InterfaceName and MAC as registered.
	InterfaceName string            `json:"interfaceName,omitempty"`
	MAC           string            `json:"mac,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	// PolicyGeneration is the generation of the compiled policy that
	// includes the endpoint (published before the reply).
	PolicyGeneration uint64 `json:"policyGeneration"`
	// DisableTxChecksumOffload asks the CNI plugin to turn TX checksum
	// offload off on the pod's interface (afxdp dataplane): AF_XDP hands
	// the engine the raw frame without the kernel's checksum-offload
	// state, so a TCP or UDP checksum left for the "hardware" to finish
	// would reach the receiver unfinished and be dropped.
	DisableTxChecksumOffload bool `json:"disableTxChecksumOffload,omitempty"`
}

// DeleteResponse is the reply to DELETE /v1/endpoints/{containerID}.
type DeleteResponse struct {
	ContainerID string `json:"containerID"`
	// Released are the addresses released (empty when there were none:
	// DELETE is idempotent).
	Released []string `json:"released"`
	// Endpoints are the names of the endpoints removed.
	Endpoints []string `json:"endpoints"`
}

// ErrorResponse is the body of every error reply.
type ErrorResponse struct {
	Error string `json:"error"`
	// Code is "invalid" (400), "not_ready" (503, retry), "exhausted"
	// (503, no free address), "unavailable" (503, datastore unreachable,
	// retry), "dataplane" (500, the pod's interface could not be attached
	// to or routed in the afxdp dataplane; the error says why) or
	// "internal" (500). A CNI plugin maps not_ready and unavailable to CNI
	// error 11 (try again later).
	Code string `json:"code"`
}

// Link-local gateways of pods (Calico's).
const (
	Gateway4 = "169.254.1.1"
	Gateway6 = "fe80::1"
)

type apiError struct {
	status int
	code   string
	err    error
}

func (e *apiError) Error() string { return e.err.Error() }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, "invalid", fmt.Errorf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (a *Agent) writeError(w http.ResponseWriter, err error) int {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, errNotReady):
		ae = &apiError{http.StatusServiceUnavailable, "not_ready", err}
	case errors.Is(err, ipam.ErrExhausted), errors.Is(err, ipam.ErrNoPools):
		ae = &apiError{http.StatusServiceUnavailable, "exhausted", err}
	case errors.Is(err, resources.ErrInvalid):
		ae = &apiError{http.StatusBadRequest, "invalid", err}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		ae = &apiError{http.StatusServiceUnavailable, "unavailable", err}
	default:
		ae = &apiError{http.StatusInternalServerError, "internal", err}
	}
	writeJSON(w, ae.status, ErrorResponse{Error: ae.err.Error(), Code: ae.code})
	return ae.status
}

// cniHandler serves the endpoint API.
func (a *Agent) cniHandler() http.Handler {
	mux := http.NewServeMux()
	count := func(method string, h func(w http.ResponseWriter, r *http.Request) int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			code := h(w, r)
			a.metrics.cniRequests.WithLabelValues(method, strconv.Itoa(code)).Inc()
		}
	}
	mux.HandleFunc("POST /v1/endpoints", count("POST", a.handleAdd))
	mux.HandleFunc("DELETE /v1/endpoints/{containerID}", count("DELETE", a.handleDelete))
	mux.HandleFunc("GET /v1/endpoints", count("GET", a.handleList))
	mux.HandleFunc("GET /v1/status", a.handleStatus)
	mux.HandleFunc("GET /healthz", a.handleHealthz)
	mux.HandleFunc("GET /readyz", a.handleReadyz)
	return mux
}

func (a *Agent) handleAdd(w http.ResponseWriter, r *http.Request) int {
	var req EndpointRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return a.writeError(w, badRequest("decode request: %v", err))
	}
	resp, err := a.AddEndpoint(r.Context(), req)
	if err != nil {
		return a.writeError(w, err)
	}
	writeJSON(w, http.StatusOK, resp)
	return http.StatusOK
}

func (a *Agent) handleDelete(w http.ResponseWriter, r *http.Request) int {
	resp, err := a.DeleteEndpoint(r.Context(), r.PathValue("containerID"))
	if err != nil {
		return a.writeError(w, err)
	}
	writeJSON(w, http.StatusOK, resp)
	return http.StatusOK
}

func (a *Agent) handleList(w http.ResponseWriter, r *http.Request) int {
	st := a.rec.status.Load()
	out := []EndpointResponse{}
	for _, wep := range st.Endpoints.List {
		out = append(out, endpointResponse(wep, 0))
	}
	writeJSON(w, http.StatusOK, out)
	return http.StatusOK
}

func endpointResponse(w *WorkloadEndpoint, gen uint64) EndpointResponse {
	resp := EndpointResponse{Name: w.Name, Namespace: w.Namespace, Node: w.Spec.Node, ContainerID: w.Spec.ContainerID,
		Pod: w.Spec.Pod, IPs: append([]string{}, w.Spec.IPNetworks...), InterfaceName: w.Spec.InterfaceName,
		MAC: w.Spec.MAC, Labels: w.Labels, PolicyGeneration: gen}
	for _, ip := range w.Addrs() {
		if ip.Is4() {
			resp.Gateway4 = Gateway4
		} else {
			resp.Gateway6 = Gateway6
		}
	}
	return resp
}

// AddEndpoint assigns addresses to a container (reusing those its handle
// already has: a repeated ADD is idempotent), registers its workload
// endpoint in the datastore and publishes the policy that includes it.
func (a *Agent) AddEndpoint(ctx context.Context, req EndpointRequest) (EndpointResponse, error) {
	if !a.rec.everSyncedAll.Load() {
		return EndpointResponse{}, errNotReady
	}
	if !resources.ValidHandle(req.ContainerID) {
		return EndpointResponse{}, badRequest("containerID %q is not valid (1..253 letters, digits, '-', '_', '.')", req.ContainerID)
	}
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	if req.IPv4 < 0 || req.IPv6 < 0 || req.IPv4 > 16 || req.IPv6 > 16 {
		return EndpointResponse{}, badRequest("ipv4 and ipv6 must be in 0..16")
	}
	if req.IPv4 == 0 && req.IPv6 == 0 {
		req.IPv4 = 1
	}
	name := WorkloadEndpointName(a.cfg.NodeName, req.Pod, req.Endpoint, req.ContainerID)
	if a.epFile != nil && req.Pod != "" {
		name = req.Pod // the pod stream's endpoint of the same pod
	}
	wep := &WorkloadEndpoint{
		ObjectMeta: resources.ObjectMeta{Namespace: req.Namespace, Labels: req.Labels, Name: name},
		Spec: WorkloadEndpointSpec{Node: a.cfg.NodeName, Pod: req.Pod, ContainerID: req.ContainerID,
			Endpoint: req.Endpoint, InterfaceName: req.InterfaceName, MAC: req.MAC, Ports: req.Ports,
			ServiceAccountName: req.ServiceAccount},
	}
	wep.Default()
	wep.Spec.IPNetworks = []string{"0.0.0.0/32"} // validated below with the real ones
	if err := wep.Validate(); err != nil {
		return EndpointResponse{}, &apiError{http.StatusBadRequest, "invalid", err}
	}
	handle := req.ContainerID
	addrs, err := a.ipam.IPsByHandle(ctx, handle)
	if err != nil {
		return EndpointResponse{}, err
	}
	assigned := false
	if len(addrs) == 0 {
		as, err := a.ipam.AutoAssign(ctx, ipam.AssignArgs{Handle: handle, Num4: req.IPv4, Num6: req.IPv6,
			Pools4: req.Pools4, Pools6: req.Pools6,
			Attrs: map[string]string{ipam.AttrPodNamespace: req.Namespace, ipam.AttrPodName: req.Pod}})
		if err != nil {
			return EndpointResponse{}, err
		}
		addrs, assigned = append(as.IPv4, as.IPv6...), true
	}
	wep.Spec.IPNetworks = nil
	for _, ip := range addrs {
		wep.Spec.IPNetworks = append(wep.Spec.IPNetworks, netip.PrefixFrom(ip, ip.BitLen()).String())
	}
	registered := false
	fail := func(err error) (EndpointResponse, error) {
		if registered && assigned {
			// Unregister what this call registered, then release.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if a.epFile != nil {
				a.epFile.update(func(m map[string]*WorkloadEndpoint) { delete(m, req.ContainerID) })
			} else if _, derr := a.objs.Delete(rctx, KeyOfObject(wep), ""); derr != nil && !datastore.IsNotFound(derr) {
				a.log.Warn("unregister after failed add", "endpoint", KeyOfObject(wep).String(), "err", derr)
			}
			a.rec.do(rctx, func(r *reconciler) error {
				r.applyWorkload(wep, true, true)
				return nil
			})
		}
		if assigned {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if rerr := a.ipam.ReleaseByHandle(rctx, handle); rerr != nil {
				a.log.Warn("release after failed add", "container", handle, "err", rerr)
			}
		}
		return EndpointResponse{}, err
	}
	if a.epFile != nil {
		err = a.epFile.update(func(m map[string]*WorkloadEndpoint) {
			if cur := m[req.ContainerID]; cur != nil && KeyOfObject(cur) == KeyOfObject(wep) {
				keepOrchestratorFields(wep, cur, req)
			}
			m[req.ContainerID] = wep
		})
	} else {
		var stored *WorkloadEndpoint
		if stored, err = a.registerEndpoint(ctx, wep, req); err == nil {
			wep = stored
		}
	}
	if err != nil {
		return fail(fmt.Errorf("register endpoint: %w", err))
	}
	registered = true
	var gen uint64
	err = a.rec.do(ctx, func(r *reconciler) error {
		r.applyWorkload(wep, false, true)
		if msg, bad := r.objErrs[KeyOfObject(wep)]; bad {
			return &apiError{http.StatusBadRequest, "invalid", errors.New(msg)}
		}
		if _, ok := r.dataplane.(portManager); ok {
			// A repeated ADD may bring a new veth of the same name (and
			// an unchanged endpoint): check the port against it.
			r.dirty.routes = true
		}
		r.flush(ctx)
		if r.dirty.policy {
			return errors.New("policy not published (see the agent's log)")
		}
		if err := r.endpointReachable(wep); err != nil {
			return err
		}
		gen = r.generation
		return nil
	})
	if err != nil {
		return fail(err)
	}
	a.log.Info("endpoint added", "endpoint", KeyOfObject(wep).String(), "container", handle, "ips", wep.Spec.IPNetworks,
		"interface", wep.Spec.InterfaceName, "policy_generation", gen)
	resp := endpointResponse(wep, gen)
	switch a.cfg.PodChecksumOffload {
	case "off":
		resp.DisableTxChecksumOffload = true
	case "on":
	default:
		_, resp.DisableTxChecksumOffload = a.dp.(portManager)
	}
	return resp, nil
}

// registerEndpoint stores wep in the object store: created, or replacing
// the stored endpoint of the same name. When the stored one belongs to the
// same container (a repeated ADD), what an orchestrator owns is kept (see
// EndpointRequest.Labels), compare-and-swap on the revision read, so that
// a concurrent relabel is not lost either.
func (a *Agent) registerEndpoint(ctx context.Context, wep *WorkloadEndpoint, req EndpointRequest) (*WorkloadEndpoint, error) {
	key := KeyOfObject(wep)
	for range 5 {
		w := *wep
		cur, err := a.store.Get(ctx, key)
		if datastore.IsNotFound(err) {
			out, err := a.store.Create(ctx, &w)
			if datastore.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				return nil, err
			}
			return out.(*WorkloadEndpoint), nil
		}
		if err != nil {
			return nil, err
		}
		if c, ok := cur.(*WorkloadEndpoint); ok && c.Spec.ContainerID == w.Spec.ContainerID && c.Spec.Node == w.Spec.Node {
			keepOrchestratorFields(&w, c, req)
		}
		m, cm := w.Meta(), cur.Meta()
		m.ResourceVersion, m.UID, m.CreationTimestamp = cm.ResourceVersion, cm.UID, cm.CreationTimestamp
		out, err := a.store.Update(ctx, &w)
		if datastore.IsConflict(err) || datastore.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return out.(*WorkloadEndpoint), nil
	}
	return nil, fmt.Errorf("%s: too many conflicting updates", key)
}

// keepOrchestratorFields copies into w, the endpoint a repeated ADD
// registers, what an orchestrator owns on the stored endpoint and req does
// not carry (see EndpointRequest.Labels).
func keepOrchestratorFields(w, stored *WorkloadEndpoint, req EndpointRequest) {
	if len(req.Labels) == 0 {
		w.Labels = stored.Labels
	}
	w.Annotations = stored.Annotations
	if len(req.Ports) == 0 {
		w.Spec.Ports = stored.Spec.Ports
	}
	if req.ServiceAccount == "" {
		w.Spec.ServiceAccountName = stored.Spec.ServiceAccountName
	}
}

// endpointReachable reports why a local endpoint is not reachable through
// a dataplane that serves pods' interfaces itself (afxdp): its interface
// failed to attach, or its addresses are not routed to it. Endpoints
// without an interface name are not the dataplane's to reach.
func (r *reconciler) endpointReachable(w *WorkloadEndpoint) error {
	pm, ok := r.dataplane.(portManager)
	iface := w.Spec.InterfaceName
	if !ok || iface == "" {
		return nil
	}
	if msg, bad := r.portErrs[iface]; bad {
		return &apiError{http.StatusInternalServerError, "dataplane",
			fmt.Errorf("attach the pod's interface %s to the afxdp dataplane: %s", iface, msg)}
	}
	if err := pm.endpointRouted(iface, w.Addrs()); err != nil {
		msg := err.Error()
		if r.routeErr != "" {
			msg += "; route programming failed: " + r.routeErr
		}
		return &apiError{http.StatusInternalServerError, "dataplane",
			fmt.Errorf("pod interface %s is not reachable through the afxdp dataplane: %s", iface, msg)}
	}
	return nil
}

// DeleteEndpoint releases a container's addresses and removes its
// endpoints. Deleting what does not exist succeeds.
func (a *Agent) DeleteEndpoint(ctx context.Context, containerID string) (DeleteResponse, error) {
	resp := DeleteResponse{ContainerID: containerID, Released: []string{}, Endpoints: []string{}}
	if !resources.ValidHandle(containerID) {
		return resp, badRequest("containerID %q is not valid", containerID)
	}
	// The endpoints go first, the addresses after: released earlier, an
	// address could be assigned to a new endpoint while the old one still
	// holds it in the policy. The datastore's list, not the reconciler's
	// view, is read: it may not have synced yet after a restart.
	var gone []*WorkloadEndpoint
	var objs []Object
	var err error
	if a.epFile != nil {
		err = a.epFile.update(func(m map[string]*WorkloadEndpoint) {
			if w := m[containerID]; w != nil {
				gone = append(gone, w)
				resp.Endpoints = append(resp.Endpoints, w.Namespace+"/"+w.Name)
				delete(m, containerID)
			}
		})
	} else {
		objs, err = a.objs.List(ctx, KindWorkloadEndpoint)
	}
	if err != nil {
		return resp, err
	}
	for _, o := range objs {
		w := o.(*WorkloadEndpoint)
		if w.Spec.Node != a.cfg.NodeName || w.Spec.ContainerID != containerID {
			continue
		}
		_, err := a.objs.Delete(ctx, KeyOfObject(w), w.ResourceVersion)
		if err != nil && !datastore.IsNotFound(err) {
			return resp, fmt.Errorf("delete endpoint %s: %w", KeyOfObject(w), err)
		}
		gone = append(gone, w)
		resp.Endpoints = append(resp.Endpoints, w.Namespace+"/"+w.Name)
	}
	sort.Strings(resp.Endpoints)
	if len(gone) > 0 {
		err = a.rec.do(ctx, func(r *reconciler) error {
			for _, w := range gone {
				r.applyWorkload(w, true, true)
			}
			return nil
		})
		if err != nil {
			return resp, err
		}
	}
	addrs, err := a.ipam.IPsByHandle(ctx, containerID)
	if err != nil {
		return resp, err
	}
	if err := a.ipam.ReleaseByHandle(ctx, containerID); err != nil {
		return resp, err
	}
	for _, ip := range addrs {
		resp.Released = append(resp.Released, ip.String())
	}
	a.log.Info("endpoint deleted", "container", containerID, "released", resp.Released, "endpoints", resp.Endpoints)
	return resp, nil
}

// Status returns the agent's status, with live dataplane counters and BGP
// sessions.
func (a *Agent) Status(ctx context.Context) Status {
	st := *a.rec.status.Load()
	st.Dataplane = a.cfg.Dataplane
	st.Datastore.Type = a.cfg.Datastore.Type
	st.NotReady = a.notReady(ctx)
	st.Ready = len(st.NotReady) == 0
	if c, ok := a.dp.counters(); ok {
		st.Counters = map[string]uint64{"rxPackets": c.RxPackets, "txPackets": c.TxPackets, "rxBytes": c.RxBytes,
			"txBytes": c.TxBytes, "toLocal": c.ToLocal, "toRemote": c.ToRemote, "toHost": c.ToHost,
			"dropped": c.Dropped()}
		st.Drops = map[string]uint64{}
		for _, r := range datapath.DropReasons() {
			if n := c.Drops[r]; n > 0 {
				st.Drops[r.String()] = n
			}
		}
	}
	if a.bgp != nil {
		if bs, err := a.bgp.Status(ctx); err == nil {
			st.BGP = bs
		}
	}
	return st
}

// notReady lists why the agent is not ready (nil: ready).
func (a *Agent) notReady(ctx context.Context) []string {
	var out []string
	st := a.rec.status.Load()
	if !st.Datastore.Synced {
		for _, k := range st.Datastore.Kinds {
			if !k.Synced {
				msg := "datastore: " + k.Kind + " not synced"
				if k.Error != "" {
					msg += ": " + k.Error
				}
				out = append(out, msg)
			}
		}
	}
	if st.Policy.Generation == 0 {
		out = append(out, "policy: not published yet")
	}
	if err := a.dp.err(); err != nil {
		out = append(out, "dataplane: "+err.Error())
	}
	if a.bgp != nil {
		bs, err := a.bgp.Status(ctx)
		switch {
		case err != nil:
			out = append(out, "bgp: "+err.Error())
		case st.BGPError != "":
			out = append(out, "bgp: "+st.BGPError)
		case !bs.Running:
			out = append(out, "bgp: speaker not running")
		}
	}
	if age := time.Since(time.Unix(0, a.rec.heartbeat.Load())); age > a.opts.StuckAfter {
		out = append(out, fmt.Sprintf("reconciler: stuck for %s", age.Round(time.Second)))
	}
	a.metrics.ready.Set(boolFloat(len(out) == 0))
	return out
}

func (a *Agent) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.Status(r.Context()))
}

// handleHealthz: the process is alive and the reconciler loop turns.
func (a *Agent) handleHealthz(w http.ResponseWriter, r *http.Request) {
	age := time.Since(time.Unix(0, a.rec.heartbeat.Load()))
	if age > a.opts.StuckAfter {
		http.Error(w, fmt.Sprintf("reconciler loop stuck for %s\n", age.Round(time.Second)), http.StatusServiceUnavailable)
		return
	}
	if err := a.dp.err(); err != nil {
		http.Error(w, "dataplane: "+err.Error()+"\n", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// handleReadyz: datastore synced, policy published, dataplane running,
// BGP running when enabled.
func (a *Agent) handleReadyz(w http.ResponseWriter, r *http.Request) {
	reasons := a.notReady(r.Context())
	if len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, s := range reasons {
			fmt.Fprintln(w, s)
		}
		return
	}
	fmt.Fprintln(w, "ok")
}

// startServers starts the endpoint API on the unix socket and the health
// and metrics servers.
func (a *Agent) startServers() error {
	if p := a.cfg.CNISocket; p != "" {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("cni socket: %w", err)
		}
		os.Remove(p) // a stale socket of a previous run
		ln, err := net.Listen("unix", p)
		if err != nil {
			return fmt.Errorf("cni socket: %w", err)
		}
		os.Chmod(p, 0o600)
		a.cniLn = ln
		a.cni = &http.Server{Handler: a.cniHandler(), ReadHeaderTimeout: 10 * time.Second}
		go a.cni.Serve(ln)
	}
	health := http.NewServeMux()
	health.HandleFunc("GET /healthz", a.handleHealthz)
	health.HandleFunc("GET /readyz", a.handleReadyz)
	health.HandleFunc("GET /v1/status", a.handleStatus)
	metrics := promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{})
	serve := func(name, addr string, h http.Handler) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s listener: %w", name, err)
		}
		s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		a.servers = append(a.servers, s)
		a.addrs[name] = ln.Addr().String()
		go s.Serve(ln)
		return nil
	}
	if a.cfg.HealthListen != "" {
		if a.cfg.MetricsListen == a.cfg.HealthListen {
			health.Handle("GET /metrics", metrics)
		}
		if err := serve("health", a.cfg.HealthListen, health); err != nil {
			return err
		}
		if a.cfg.MetricsListen == a.cfg.HealthListen {
			a.addrs["metrics"] = a.addrs["health"]
		}
	}
	if a.cfg.MetricsListen != "" && a.cfg.MetricsListen != a.cfg.HealthListen {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics)
		if err := serve("metrics", a.cfg.MetricsListen, mux); err != nil {
			return err
		}
	}
	return nil
}
