package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

// Config is the agent's effective configuration, merged from its sources
// (see ResolveConfig).
type Config struct {
	// NodeName is this node's name (default: the host name).
	NodeName string
	// Datastore is how the agent reaches the datastore.
	Datastore DatastoreConfig
	// StateDir holds the agent's state: the embedded etcd's data and the
	// file naming its endpoints (default /var/lib/tabby).
	StateDir string
	// Dataplane is "afxdp" (the userspace engine) or "kernel".
	Dataplane string
	// Interfaces are the engine's ports (the uplink first); required with
	// the afxdp dataplane.
	Interfaces []string
	// Netns is the network namespace of the dataplane (a name under
	// /run/netns or a path; empty: the agent's own). The agent's sockets
	// (endpoint API, health, etcd, BGP) stay in the agent's namespace.
	Netns string
	// XDPMode is how the steering program attaches (afxdp).
	XDPMode afxdp.XDPMode
	// PollMode is how the engine's worker waits for traffic (afxdp).
	PollMode afxdp.PollMode
	// MaxPods is how many local pods the afxdp dataplane serves at once:
	// the engine's frame memory is sized for that many pods' veths
	// (1.25 MiB each); a pod beyond it fails its CNI ADD (default 110,
	// kubelet's default).
	MaxPods int
	// PodRingSize is the size of each ring of a pod's AF_XDP socket, a
	// power of two in 64..4096 (default 256). A pod costs 2×PodRingSize+64
	// frames of 4 KiB of pinned memory: 2.25 MiB at 256, 8.25 MiB at 1024.
	// Larger rings absorb the bursts of a fast TCP sender: measured in the
	// lab (one TCP stream between pods on a node, before burst lending)
	// 2.4 Gbit/s at 128, 3.4 at 256, 4.5 at 1024; with burst lending
	// (BurstRingSize) 4.2–4.5 at 256.
	PodRingSize int
	// BurstRingSize is the RX and fill ring size of the afxdp dataplane's
	// sockets (engine.Config.BurstRingSize), a power of two in 64..16384
	// (default 4096): a socket lends podRingSize (pods) or its interface's
	// ring size of frames at rest and borrows up to BurstRingSize from the
	// shared frame memory while bursts outpace its worker. Rings cost 24
	// bytes per entry per socket; the frames are not reserved.
	BurstRingSize int
	// PodChecksumOffload is whether pods keep TX checksum offload on
	// their eth0: "auto" (default: off with the afxdp dataplane, which
	// needs complete checksums, on with the kernel's), "on" or "off". Turn
	// it off on kernel nodes whose pods talk to afxdp nodes over veth or
	// virtio links (labs, nested VMs): there the partial checksums of
	// offloaded packets reach the afxdp node uncompleted and its pods drop
	// them. With NICs between the nodes the NIC completes them.
	PodChecksumOffload string
	// NodeAddress is the node's underlay address with its prefix length;
	// invalid means autodetect (the first global IPv4 address of the first
	// interface).
	NodeAddress netip.Prefix
	// IPv4Pool and IPv6Pool are created when no IPPool exists (like
	// Calico's CALICO_IPV4POOL_CIDR); an invalid CIDR creates none.
	IPv4Pool, IPv6Pool PoolBootstrap
	// HealthListen serves /healthz, /readyz and /v1/status ("" disables).
	HealthListen string
	// MetricsListen serves /metrics ("" disables; equal to HealthListen:
	// one server).
	MetricsListen string
	// CNISocket is the unix socket of the endpoint API for the CNI plugin.
	CNISocket string
	// LogLevel and LogFormat ("text" or "json") configure the logger.
	LogLevel  slog.Level
	LogFormat string
	// BGPEnabled runs the BGP speaker.
	BGPEnabled bool
	// Debounce is how long the reconciler gathers changes before it
	// recomputes and publishes.
	Debounce time.Duration
	// IPAMGCInterval is how often the agent releases this node's leaked
	// addresses (0: never); IPAMGCGracePeriod spares allocations younger
	// than it (see gc.go).
	IPAMGCInterval    time.Duration
	IPAMGCGracePeriod time.Duration

	// Sources says where each key set in a source came from (key → "env",
	// "flag", "file" or "datastore"); keys left at their defaults are
	// absent.
	Sources map[string]string
}

// DatastoreConfig is how the agent and the CLI reach the datastore.
type DatastoreConfig struct {
	// Type is "etcd" or "kubernetes".
	Type string
	// EtcdEndpoints are the etcd cluster's client URLs; none (with Type
	// etcd) starts an embedded single-member etcd in the agent.
	EtcdEndpoints []string
	// EtcdCertFile, EtcdKeyFile and EtcdCAFile switch the client to TLS.
	EtcdCertFile, EtcdKeyFile, EtcdCAFile string
	// EtcdPrefix is the key prefix (default /tabby/v1/).
	EtcdPrefix string
	// Kubeconfig is the kubeconfig file (kubernetes; empty: in-cluster).
	Kubeconfig string
}

// PoolBootstrap describes a default IPPool.
type PoolBootstrap struct {
	CIDR        netip.Prefix
	BlockSize   int
	IPIPMode    resources.EncapMode
	VXLANMode   resources.EncapMode
	NATOutgoing bool
}

// Defaults of Config.
const (
	DefaultStateDir          = "/var/lib/tabby"
	DefaultCNISocket         = "/run/tabby/agent.sock"
	DefaultHealthListen      = "127.0.0.1:9099"
	DefaultMetricsListen     = ":9091"
	DefaultDebounce          = 50 * time.Millisecond
	DefaultIPAMGCInterval    = 10 * time.Minute
	DefaultIPAMGCGracePeriod = 15 * time.Minute
	DefaultMaxPods           = 110
	DefaultPodRingSize       = 256
)

// DefaultConfig returns the configuration with every default applied.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:           strings.ToLower(host),
		Datastore:          DatastoreConfig{Type: "etcd"},
		StateDir:           DefaultStateDir,
		Dataplane:          "afxdp",
		XDPMode:            afxdp.XDPAuto,
		PollMode:           afxdp.PollAdaptive,
		HealthListen:       DefaultHealthListen,
		MetricsListen:      DefaultMetricsListen,
		CNISocket:          DefaultCNISocket,
		LogLevel:           slog.LevelInfo,
		LogFormat:          "text",
		Debounce:           DefaultDebounce,
		IPAMGCInterval:     DefaultIPAMGCInterval,
		IPAMGCGracePeriod:  DefaultIPAMGCGracePeriod,
		MaxPods:            DefaultMaxPods,
		PodChecksumOffload: "auto",
		Sources:            map[string]string{},
	}
}

// ConfigLayer is the keys one source sets, as strings (lists
// comma-separated).
type ConfigLayer struct {
	// Source is "env", "flag", "file" or "datastore".
	Source string
	// Name names the source in errors: the file's path, the
	// AgentConfiguration's key.
	Name   string
	Values map[string]string
}

// describe names key in this layer: TABBY_DATAPLANE, --dataplane,
// agent.yaml: dataplane, AgentConfiguration "default": spec.dataplane.
func (l *ConfigLayer) describe(k *configKey) string {
	switch l.Source {
	case "env":
		return EnvPrefix + k.env
	case "flag":
		return "--" + k.flag()
	case "file":
		return l.Name + ": " + k.name
	}
	return l.Name + ": spec." + k.name
}

// EnvLayer reads the TABBY_* variables of environ (os.Environ's form). It
// returns the names of TABBY_* variables that are no key, for a warning.
func EnvLayer(environ []string) (*ConfigLayer, []string) {
	l := &ConfigLayer{Source: "env", Name: "environment", Values: map[string]string{}}
	byEnv := map[string]*configKey{}
	for i := range configKeys {
		byEnv[EnvPrefix+configKeys[i].env] = &configKeys[i]
	}
	var unknown []string
	for _, kv := range environ {
		name, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		k := byEnv[name]
		if k == nil {
			unknown = append(unknown, name)
			continue
		}
		l.Values[k.name] = v
	}
	sort.Strings(unknown)
	return l, unknown
}

// FlagLayer is the flags set on the command line: flag name (without
// dashes) → value.
func FlagLayer(flags map[string]string) (*ConfigLayer, error) {
	l := &ConfigLayer{Source: "flag", Name: "command line", Values: map[string]string{}}
	byFlag := map[string]*configKey{}
	for i := range configKeys {
		byFlag[configKeys[i].flag()] = &configKeys[i]
	}
	for f, v := range flags {
		k := byFlag[f]
		if k == nil {
			return nil, fmt.Errorf("--%s: unknown configuration flag", f)
		}
		l.Values[k.name] = v
	}
	return l, nil
}

// FileLayer reads a YAML (or JSON) configuration file: a map of keys to
// values (lists as YAML sequences or comma-separated strings).
func FileLayer(path string) (*ConfigLayer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	js, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l := &ConfigLayer{Source: "file", Name: path, Values: map[string]string{}}
	if len(bytes.TrimSpace(js)) == 0 || string(bytes.TrimSpace(js)) == "null" {
		return l, nil
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, fmt.Errorf("%s: not a map of configuration keys: %w", path, err)
	}
	if err := l.setAll(m, false); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// setAll stores generic values; noBootstrap rejects bootstrap keys.
func (l *ConfigLayer) setAll(m map[string]any, noBootstrap bool) error {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		k := lookupKey(name)
		if k == nil {
			return fmt.Errorf("unknown key %q", name)
		}
		if noBootstrap && k.bootstrap {
			return fmt.Errorf("key %q cannot be set from the datastore", name)
		}
		v, err := stringValue(m[name], k.list)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		l.Values[name] = v
	}
	return nil
}

func stringValue(v any, list bool) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case []any:
		if !list {
			return "", errors.New("must be a single value, not a list")
		}
		parts := make([]string, len(x))
		for i, e := range x {
			s, err := stringValue(e, false)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("unsupported value %v", v)
}

// DatastoreLayer is an AgentConfiguration's spec as a layer (nil for a nil
// configuration).
func DatastoreLayer(ac *AgentConfiguration) (*ConfigLayer, error) {
	if ac == nil {
		return nil, nil
	}
	l := &ConfigLayer{Source: "datastore", Name: KeyOfObject(ac).String(), Values: map[string]string{}}
	js, err := json.Marshal(ac.Spec)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, err
	}
	if err := l.setAll(m, true); err != nil {
		return nil, fmt.Errorf("%s: %w", l.Name, err)
	}
	return l, nil
}

// ResolveConfig merges layers, highest precedence first (env, flags, file,
// node AgentConfiguration, default AgentConfiguration; nil layers are
// skipped), over DefaultConfig and validates the result. Each key takes the
// value of the first layer that sets it. Errors name the source and key:
// TABBY_DATAPLANE="foo": must be afxdp or kernel.
func ResolveConfig(layers ...*ConfigLayer) (Config, error) {
	c, err := parseLayers(layers...)
	if err != nil {
		return c, err
	}
	return c, c.check(layers)
}

// parseLayers merges and parses the layers without the checks between
// keys (which a lower layer, such as the datastore, may still satisfy).
func parseLayers(layers ...*ConfigLayer) (Config, error) {
	c := DefaultConfig()
	var errs []error
	for i := range configKeys {
		k := &configKeys[i]
		for _, l := range layers {
			if l == nil {
				continue
			}
			v, ok := l.Values[k.name]
			if !ok {
				continue
			}
			if err := k.set(&c, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", l.describe(k), v, err))
			}
			c.Sources[k.name] = l.Source
			break
		}
	}
	return c, errors.Join(errs...)
}

// check validates relations between keys.
func (c *Config) check(layers []*ConfigLayer) error {
	where := func(name string) string {
		k := lookupKey(name)
		for _, l := range layers {
			if l == nil {
				continue
			}
			if v, ok := l.Values[name]; ok {
				return fmt.Sprintf("%s=%q", l.describe(k), v)
			}
		}
		return name + " (default)"
	}
	var errs []error
	if c.Dataplane == "afxdp" && len(c.Interfaces) == 0 {
		errs = append(errs, fmt.Errorf("%s: the afxdp dataplane needs at least one interface (%s)", where("dataplane"),
			EnvPrefix+"INTERFACES"))
	}
	if c.NodeName == "" {
		errs = append(errs, fmt.Errorf("nodeName: no host name to default to; set %sNODENAME", EnvPrefix))
	}
	for _, p := range []struct {
		pool *PoolBootstrap
		cidr string
		bs   string
	}{{&c.IPv4Pool, "ipv4PoolCIDR", "ipv4PoolBlockSize"}, {&c.IPv6Pool, "ipv6PoolCIDR", "ipv6PoolBlockSize"}} {
		if p.pool.CIDR.IsValid() && p.pool.BlockSize != 0 && p.pool.BlockSize < p.pool.CIDR.Bits() {
			errs = append(errs, fmt.Errorf("%s: block size %d is shorter than the pool's prefix length (%s)",
				where(p.bs), p.pool.BlockSize, where(p.cidr)))
		}
	}
	if c.IPv4Pool.IPIPMode.Enabled() && c.IPv4Pool.VXLANMode.Enabled() {
		errs = append(errs, fmt.Errorf("%s and %s: IP-in-IP and VXLAN cannot both be enabled", where("ipv4PoolIPIP"),
			where("ipv4PoolVXLAN")))
	}
	if c.Datastore.Type == "kubernetes" && len(c.Datastore.EtcdEndpoints) > 0 {
		errs = append(errs, fmt.Errorf("%s: etcd endpoints are set but the datastore is kubernetes", where("etcdEndpoints")))
	}
	if (c.Datastore.EtcdCertFile == "") != (c.Datastore.EtcdKeyFile == "") {
		errs = append(errs, fmt.Errorf("%s and %s: a client certificate needs both files", where("etcdCertFile"),
			where("etcdKeyFile")))
	}
	return errors.Join(errs...)
}
