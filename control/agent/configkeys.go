package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

// configKey is one configuration key: its name in the file and in an
// AgentConfiguration's spec, its environment variable TABBY_<ENV> and its
// flag --<flag>.
type configKey struct {
	name string
	env  string
	// bootstrap keys say how to reach the datastore; the datastore
	// cannot set them.
	bootstrap bool
	list      bool
	usage     string
	set       func(c *Config, v string) error
}

// EnvPrefix starts every environment variable the agent reads.
const EnvPrefix = "TABBY_"

func (k *configKey) flag() string {
	var b strings.Builder
	n := k.name
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c >= 'A' && c <= 'Z' {
			prevLower := i > 0 && !(n[i-1] >= 'A' && n[i-1] <= 'Z')
			endOfAcronym := i > 0 && !prevLower && i+1 < len(n) && n[i+1] >= 'a' && n[i+1] <= 'z'
			if prevLower || endOfAcronym {
				b.WriteByte('-')
			}
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// powerOfTwo returns a setter for an integer key that must be a power of two
// in lo..hi, stored where field points.
func powerOfTwo(lo, hi int, field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi || n&(n-1) != 0 {
			return fmt.Errorf("must be a power of two in %d..%d", lo, hi)
		}
		*field(c) = n
		return nil
	}
}

func oneOf(v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	if len(allowed) == 2 {
		return fmt.Errorf("must be %s or %s", allowed[0], allowed[1])
	}
	return fmt.Errorf("must be one of %s", strings.Join(allowed, ", "))
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0":
		return false, nil
	}
	return false, errors.New("must be true or false")
}

func parseListen(v string) (string, error) {
	if v == "" || v == "off" || v == "none" {
		return "", nil
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		return "", errors.New("must be host:port, or off")
	}
	return v, nil
}

func parseEncap(v string) (resources.EncapMode, error) {
	m := resources.EncapMode(v)
	switch m {
	case resources.EncapNever, resources.EncapAlways, resources.EncapCrossSubnet:
		return m, nil
	}
	return "", errors.New("must be one of Never, Always, CrossSubnet")
}

func parsePoolCIDR(v string, v6 bool) (netip.Prefix, error) {
	if v == "" || v == "none" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(v)
	switch {
	case err != nil:
		return p, errors.New("is not a CIDR")
	case p.Masked() != p:
		return p, fmt.Errorf("has host bits set (the network is %s)", p.Masked())
	case p.Addr().Is6() != v6:
		if v6 {
			return p, errors.New("is not an IPv6 CIDR")
		}
		return p, errors.New("is not an IPv4 CIDR")
	}
	return p, nil
}

func parseBlockSize(v string, v6 bool) (int, error) {
	n, err := strconv.Atoi(v)
	lo, hi := resources.MinBlockSize4, 32
	if v6 {
		lo, hi = resources.MinBlockSize6, 128
	}
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("must be an integer in %d..%d", lo, hi)
	}
	return n, nil
}

// configKeys lists every key, in the order they are resolved and printed.
var configKeys = []configKey{
	{name: "nodeName", env: "NODENAME", bootstrap: true, usage: "this node's name (default: the host name)",
		set: func(c *Config, v string) error {
			if !resources.ValidDNSSubdomain(v) {
				return errors.New("is not a valid node name (a DNS-1123 subdomain)")
			}
			c.NodeName = v
			return nil
		}},
	{name: "datastoreType", env: "DATASTORE", bootstrap: true, usage: "datastore: etcd or kubernetes",
		set: func(c *Config, v string) error {
			c.Datastore.Type = v
			return oneOf(v, "etcd", "kubernetes")
		}},
	{name: "etcdEndpoints", env: "ETCD_ENDPOINTS", bootstrap: true, list: true,
		usage: "etcd client URLs, comma-separated (none: an embedded etcd)",
		set: func(c *Config, v string) error {
			c.Datastore.EtcdEndpoints = nil
			for _, e := range splitList(v) {
				if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
					return fmt.Errorf("endpoint %q must start with http:// or https://", e)
				}
				c.Datastore.EtcdEndpoints = append(c.Datastore.EtcdEndpoints, e)
			}
			return nil
		}},
	{name: "etcdCertFile", env: "ETCD_CERT_FILE", bootstrap: true, usage: "etcd client certificate",
		set: func(c *Config, v string) error { c.Datastore.EtcdCertFile = v; return nil }},
	{name: "etcdKeyFile", env: "ETCD_KEY_FILE", bootstrap: true, usage: "etcd client key",
		set: func(c *Config, v string) error { c.Datastore.EtcdKeyFile = v; return nil }},
	{name: "etcdCAFile", env: "ETCD_CA_FILE", bootstrap: true, usage: "CA bundle verifying etcd",
		set: func(c *Config, v string) error { c.Datastore.EtcdCAFile = v; return nil }},
	{name: "etcdPrefix", env: "ETCD_PREFIX", bootstrap: true, usage: "etcd key prefix (default /tabby/v1/)",
		set: func(c *Config, v string) error {
			if !strings.HasPrefix(v, "/") {
				return errors.New("must start with /")
			}
			c.Datastore.EtcdPrefix = v
			return nil
		}},
	{name: "kubeconfig", env: "KUBECONFIG", bootstrap: true, usage: "kubeconfig file (kubernetes datastore)",
		set: func(c *Config, v string) error { c.Datastore.Kubeconfig = v; return nil }},
	{name: "stateDir", env: "STATE_DIR", bootstrap: true, usage: "state directory (embedded etcd data)",
		set: func(c *Config, v string) error {
			if !strings.HasPrefix(v, "/") {
				return errors.New("must be an absolute path")
			}
			c.StateDir = v
			return nil
		}},
	{name: "netns", env: "NETNS", bootstrap: true,
		usage: "network namespace of the dataplane: a name in /run/netns or a path (default: the agent's)",
		set: func(c *Config, v string) error {
			if strings.Contains(v, "/") && !strings.HasPrefix(v, "/") {
				return errors.New("must be a namespace name or an absolute path")
			}
			c.Netns = v
			return nil
		}},
	{name: "dataplane", env: "DATAPLANE", usage: "dataplane: afxdp or kernel",
		set: func(c *Config, v string) error {
			c.Dataplane = v
			return oneOf(v, "afxdp", "kernel")
		}},
	{name: "interfaces", env: "INTERFACES", list: true, usage: "engine interfaces, comma-separated, uplink first",
		set: func(c *Config, v string) error {
			c.Interfaces = splitList(v)
			for _, n := range c.Interfaces {
				if len(n) > 15 || strings.ContainsAny(n, "/: ") {
					return fmt.Errorf("%q is not an interface name", n)
				}
			}
			return nil
		}},
	{name: "xdpMode", env: "XDP_MODE", usage: "XDP attach mode: auto, native or generic",
		set: func(c *Config, v string) error {
			for _, m := range []afxdp.XDPMode{afxdp.XDPAuto, afxdp.XDPDriver, afxdp.XDPGeneric} {
				if m.String() == v {
					c.XDPMode = m
					return nil
				}
			}
			return oneOf(v, "auto", "native", "generic")
		}},
	{name: "pollMode", env: "POLL_MODE", usage: "worker poll mode: adaptive, busy or interrupt",
		set: func(c *Config, v string) error {
			m, err := afxdp.ParsePollMode(v)
			if err != nil {
				return oneOf(v, "adaptive", "busy", "interrupt")
			}
			c.PollMode = m
			return nil
		}},
	{name: "maxPods", env: "MAX_PODS", usage: "local pods the afxdp dataplane serves at once (110; sizes its memory)",
		set: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 4096 {
				return errors.New("must be an integer in 1..4096")
			}
			c.MaxPods = n
			return nil
		}},
	{name: "podRingSize", env: "POD_RING_SIZE",
		usage: "ring size of a pod's AF_XDP socket, a power of two in 64..4096 (256; memory: 2x+64 frames of 4 KiB per pod)",
		set:   powerOfTwo(64, 4096, func(c *Config) *int { return &c.PodRingSize })},
	{name: "burstRingSize", env: "BURST_RING_SIZE",
		usage: "RX/fill ring size of the afxdp sockets, a power of two in 64..16384 (4096): frames a busy socket may borrow",
		set:   powerOfTwo(64, 16384, func(c *Config) *int { return &c.BurstRingSize })},
	{name: "podChecksumOffload", env: "POD_CHECKSUM_OFFLOAD",
		usage: "pods' TX checksum offload: auto (off with afxdp), on or off (off on kernel nodes next to afxdp nodes over veths)",
		set: func(c *Config, v string) error {
			if err := oneOf(v, "auto", "on", "off"); err != nil {
				return err
			}
			c.PodChecksumOffload = v
			return nil
		}},
	{name: "nodeAddress", env: "IP", usage: "node address with prefix length (default: autodetect)",
		set: func(c *Config, v string) error {
			if v == "" || v == "autodetect" {
				c.NodeAddress = netip.Prefix{}
				return nil
			}
			p, err := netip.ParsePrefix(v)
			if err != nil {
				a, aerr := netip.ParseAddr(v)
				if aerr != nil {
					return errors.New("must be an address with prefix length (192.0.2.10/24), or autodetect")
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			if !p.Addr().Is4() {
				return errors.New("must be an IPv4 address")
			}
			c.NodeAddress = p
			return nil
		}},
	{name: "ipv4PoolCIDR", env: "IPV4POOL_CIDR", usage: "default IPv4 pool created when no pool exists",
		set: func(c *Config, v string) (err error) { c.IPv4Pool.CIDR, err = parsePoolCIDR(v, false); return }},
	{name: "ipv4PoolBlockSize", env: "IPV4POOL_BLOCK_SIZE", usage: "block size of the default IPv4 pool (26)",
		set: func(c *Config, v string) (err error) { c.IPv4Pool.BlockSize, err = parseBlockSize(v, false); return }},
	{name: "ipv4PoolIPIP", env: "IPV4POOL_IPIP", usage: "ipipMode of the default IPv4 pool",
		set: func(c *Config, v string) (err error) { c.IPv4Pool.IPIPMode, err = parseEncap(v); return }},
	{name: "ipv4PoolVXLAN", env: "IPV4POOL_VXLAN", usage: "vxlanMode of the default IPv4 pool",
		set: func(c *Config, v string) (err error) { c.IPv4Pool.VXLANMode, err = parseEncap(v); return }},
	{name: "ipv4PoolNATOutgoing", env: "IPV4POOL_NAT_OUTGOING", usage: "natOutgoing of the default IPv4 pool",
		set: func(c *Config, v string) (err error) { c.IPv4Pool.NATOutgoing, err = parseBool(v); return }},
	{name: "ipv6PoolCIDR", env: "IPV6POOL_CIDR", usage: "default IPv6 pool created when no pool exists",
		set: func(c *Config, v string) (err error) { c.IPv6Pool.CIDR, err = parsePoolCIDR(v, true); return }},
	{name: "ipv6PoolBlockSize", env: "IPV6POOL_BLOCK_SIZE", usage: "block size of the default IPv6 pool (122)",
		set: func(c *Config, v string) (err error) { c.IPv6Pool.BlockSize, err = parseBlockSize(v, true); return }},
	{name: "healthListen", env: "HEALTH_LISTEN", usage: "address of /healthz, /readyz, /v1/status (off: none)",
		set: func(c *Config, v string) (err error) { c.HealthListen, err = parseListen(v); return }},
	{name: "metricsListen", env: "METRICS_LISTEN", usage: "address of /metrics (off: none)",
		set: func(c *Config, v string) (err error) { c.MetricsListen, err = parseListen(v); return }},
	{name: "cniSocket", env: "CNI_SOCKET", usage: "unix socket of the CNI endpoint API",
		set: func(c *Config, v string) error {
			if !strings.HasPrefix(v, "/") {
				return errors.New("must be an absolute path")
			}
			c.CNISocket = v
			return nil
		}},
	{name: "logLevel", env: "LOG_LEVEL", usage: "log level: debug, info, warn or error",
		set: func(c *Config, v string) error {
			if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
				return oneOf(v, "debug", "info", "warn", "error")
			}
			return nil
		}},
	{name: "logFormat", env: "LOG_FORMAT", usage: "log format: text or json",
		set: func(c *Config, v string) error {
			c.LogFormat = v
			return oneOf(v, "text", "json")
		}},
	{name: "bgpEnabled", env: "BGP", usage: "run the BGP speaker (true or false)",
		set: func(c *Config, v string) (err error) { c.BGPEnabled, err = parseBool(v); return }},
	{name: "debounce", env: "DEBOUNCE", usage: "reconciler debounce interval (50ms)",
		set: durationKey(func(c *Config) *time.Duration { return &c.Debounce }, 0, 10*time.Second, false)},
	{name: "ipamGCInterval", env: "IPAM_GC_INTERVAL",
		usage: "how often leaked IPAM addresses of this node are released (10m; 0s: never)",
		set:   durationKey(func(c *Config) *time.Duration { return &c.IPAMGCInterval }, time.Second, 0, true)},
	{name: "ipamGCGracePeriod", env: "IPAM_GC_GRACE_PERIOD",
		usage: "IPAM garbage collection spares allocations younger than this (15m)",
		set:   durationKey(func(c *Config) *time.Duration { return &c.IPAMGCGracePeriod }, 0, 0, false)},
}

// durationKey returns the setter of a duration key: at least lo, at most
// hi (0: no bound); with zeroOff, 0s is also accepted (it turns the
// feature off).
func durationKey(field func(c *Config) *time.Duration, lo, hi time.Duration, zeroOff bool) func(c *Config, v string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < lo && !(zeroOff && d == 0) || hi > 0 && d > hi || d < 0 {
			switch {
			case hi > 0:
				return fmt.Errorf("must be a duration in %s..%s", lo, hi)
			case zeroOff:
				return fmt.Errorf("must be 0s (off) or a duration of at least %s", lo)
			}
			return fmt.Errorf("must be a duration of at least %s", lo)
		}
		*field(c) = d
		return nil
	}
}

func lookupKey(name string) *configKey {
	for i := range configKeys {
		if configKeys[i].name == name {
			return &configKeys[i]
		}
	}
	return nil
}

// ConfigKey describes a configuration key for documentation and flags.
type ConfigKey struct {
	Name, Env, Flag, Usage string
	// Bootstrap keys cannot be set from the datastore.
	Bootstrap bool
}

// ConfigKeys lists every configuration key.
func ConfigKeys() []ConfigKey {
	out := make([]ConfigKey, len(configKeys))
	for i, k := range configKeys {
		out[i] = ConfigKey{Name: k.name, Env: EnvPrefix + k.env, Flag: k.flag(), Usage: k.usage, Bootstrap: k.bootstrap}
	}
	return out
}

// FlagName returns the flag of a key (by name), or "".
func FlagName(key string) string {
	if k := lookupKey(key); k != nil {
		return k.flag()
	}
	return ""
}
