package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
)

// ResolveBootstrap resolves only the keys that say how to reach the
// datastore (what the CLI needs), with the same precedence and errors as
// ResolveConfig; other keys are ignored.
func ResolveBootstrap(layers ...*ConfigLayer) (Config, error) {
	boot := make([]*ConfigLayer, 0, len(layers))
	for _, l := range layers {
		if l == nil {
			continue
		}
		b := &ConfigLayer{Source: l.Source, Name: l.Name, Values: map[string]string{}}
		for k, v := range l.Values {
			if key := lookupKey(k); key != nil && key.bootstrap {
				b.Values[k] = v
			}
		}
		boot = append(boot, b)
	}
	c, err := ResolveConfig(append(boot, &ConfigLayer{Source: "default", Name: "bootstrap",
		Values: map[string]string{"dataplane": "kernel"}})...)
	if err != nil {
		// Only the datastore checks of check() can fail here.
		return c, err
	}
	return c, nil
}

// OpenStore connects to the datastore c names: the Kubernetes cluster of
// c.Datastore.Kubeconfig (the agent kinds as custom resources, see
// KubernetesObjects), etcd by its endpoints, or else the embedded etcd of
// an agent whose state directory is c.StateDir. Close the returned
// datastore when done.
func OpenStore(c Config) (*Store, func() error, error) {
	switch c.Datastore.Type {
	case "kubernetes":
		kds, err := kubernetes.New(kubernetes.Config{Kubeconfig: c.Datastore.Kubeconfig})
		if err != nil {
			return nil, nil, err
		}
		return &Store{DS: kds, Objects: NewKubernetesObjects(kds)}, kds.Close, nil
	case "etcd":
	default:
		return nil, nil, fmt.Errorf("datastore %q: unknown type", c.Datastore.Type)
	}
	endpoints := c.Datastore.EtcdEndpoints
	if len(endpoints) == 0 {
		var err error
		endpoints, err = ReadEmbeddedEndpoints(c.StateDir)
		if err != nil || len(endpoints) == 0 {
			return nil, nil, fmt.Errorf("no etcd endpoints: set %sETCD_ENDPOINTS, or run `tabby agent` with an embedded etcd (state dir %s)",
				EnvPrefix, c.StateDir)
		}
	}
	ds, err := etcd.New(etcd.Config{Endpoints: endpoints, CertFile: c.Datastore.EtcdCertFile,
		KeyFile: c.Datastore.EtcdKeyFile, CAFile: c.Datastore.EtcdCAFile, Prefix: c.Datastore.EtcdPrefix,
		DialTimeout: 5 * time.Second, RequestTimeout: 10 * time.Second})
	if err != nil {
		return nil, nil, err
	}
	return &Store{DS: ds, Objects: NewEtcdObjects(ds)}, ds.Close, nil
}

// Client talks to an agent's HTTP API: over its unix socket
// ("/run/tabby/agent.sock" or "unix:///run/tabby/agent.sock") or over TCP
// ("http://127.0.0.1:9099", the health listener, which serves /v1/status
// but not the endpoint API).
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client of the agent at addr.
func NewClient(addr string) *Client {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return &Client{base: strings.TrimRight(addr, "/"), hc: &http.Client{Timeout: 30 * time.Second}}
	}
	path := strings.TrimPrefix(addr, "unix://")
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{base: "http://agent", hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// APIError is an error reply of the agent.
type APIError struct {
	Status int
	ErrorResponse
}

func (e *APIError) Error() string {
	return fmt.Sprintf("agent: %s (%s, HTTP %d)", e.ErrorResponse.Error, e.Code, e.Status)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("agent: read reply: %w", err)
	}
	if resp.StatusCode >= 300 {
		ae := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(b, &ae.ErrorResponse) != nil || ae.ErrorResponse.Error == "" {
			ae.ErrorResponse = ErrorResponse{Error: strings.TrimSpace(string(b)), Code: "internal"}
		}
		return ae
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("agent: decode reply: %w", err)
		}
	}
	return nil
}

// AddEndpoint calls POST /v1/endpoints.
func (c *Client) AddEndpoint(ctx context.Context, req EndpointRequest) (EndpointResponse, error) {
	var out EndpointResponse
	err := c.do(ctx, http.MethodPost, "/v1/endpoints", req, &out)
	return out, err
}

// DeleteEndpoint calls DELETE /v1/endpoints/{containerID}.
func (c *Client) DeleteEndpoint(ctx context.Context, containerID string) (DeleteResponse, error) {
	var out DeleteResponse
	err := c.do(ctx, http.MethodDelete, "/v1/endpoints/"+url.PathEscape(containerID), nil, &out)
	return out, err
}

// Endpoints calls GET /v1/endpoints.
func (c *Client) Endpoints(ctx context.Context) ([]EndpointResponse, error) {
	var out []EndpointResponse
	err := c.do(ctx, http.MethodGet, "/v1/endpoints", nil, &out)
	return out, err
}

// Status calls GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &out)
	return out, err
}

// IsNotRunning reports whether err says no agent listens (no socket).
func IsNotRunning(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)
}
