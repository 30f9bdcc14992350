package agent

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/control/resources"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustLayer(t *testing.T) func(*ConfigLayer, error) *ConfigLayer {
	return func(l *ConfigLayer, err error) *ConfigLayer {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
}

func agentConfig(name string, spec AgentConfigurationSpec) *AgentConfiguration {
	return &AgentConfiguration{ObjectMeta: resources.ObjectMeta{Name: name}, Spec: spec}
}

func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, `
nodeName: n1
dataplane: kernel
logLevel: warn
interfaces: [eth1, eth2]
ipv4PoolCIDR: 10.65.0.0/16
pollMode: busy
`)
	tru := true
	nodeDS := agentConfig("node.n1", AgentConfigurationSpec{LogLevel: "error", PollMode: "interrupt",
		XDPMode: "generic", Debounce: "200ms"})
	globalDS := agentConfig("default", AgentConfigurationSpec{XDPMode: "native", BGPEnabled: &tru,
		Debounce: "1s", IPv4PoolBlockSize: 28})
	tests := []struct {
		name    string
		env     []string
		flags   map[string]string
		file    string
		node    *AgentConfiguration
		global  *AgentConfiguration
		check   func(t *testing.T, c Config)
		sources map[string]string
	}{
		{
			name: "defaults",
			env:  []string{"TABBY_NODENAME=n1", "TABBY_INTERFACES=eth0"},
			check: func(t *testing.T, c Config) {
				if c.Dataplane != "afxdp" || c.LogLevel != slog.LevelInfo || c.CNISocket != DefaultCNISocket ||
					c.Datastore.Type != "etcd" || c.HealthListen != DefaultHealthListen || c.Debounce != DefaultDebounce {
					t.Errorf("defaults: %+v", c)
				}
			},
			sources: map[string]string{"nodeName": "env", "interfaces": "env", "dataplane": ""},
		},
		{
			name:  "env beats flag beats file",
			env:   []string{"TABBY_DATAPLANE=afxdp", "TABBY_LOG_LEVEL=debug"},
			flags: map[string]string{"log-level": "info", "interfaces": "veth9", "poll-mode": "adaptive"},
			file:  file,
			check: func(t *testing.T, c Config) {
				if c.Dataplane != "afxdp" || c.LogLevel != slog.LevelDebug {
					t.Errorf("env lost: dataplane %s level %s", c.Dataplane, c.LogLevel)
				}
				if len(c.Interfaces) != 1 || c.Interfaces[0] != "veth9" || c.PollMode != afxdp.PollAdaptive {
					t.Errorf("flags lost to the file: %v %v", c.Interfaces, c.PollMode)
				}
				if c.NodeName != "n1" || c.IPv4Pool.CIDR.String() != "10.65.0.0/16" {
					t.Errorf("file keys lost: %s %v", c.NodeName, c.IPv4Pool.CIDR)
				}
			},
			sources: map[string]string{"dataplane": "env", "logLevel": "env", "interfaces": "flag", "pollMode": "flag",
				"nodeName": "file"},
		},
		{
			name:   "file beats datastore, node beats global",
			file:   file,
			node:   nodeDS,
			global: globalDS,
			check: func(t *testing.T, c Config) {
				if c.LogLevel != slog.LevelWarn || c.PollMode != afxdp.PollBusy {
					t.Errorf("file lost to the datastore: %s %v", c.LogLevel, c.PollMode)
				}
				if c.XDPMode != afxdp.XDPGeneric || c.Debounce.String() != "200ms" {
					t.Errorf("node configuration lost to global: %v %v", c.XDPMode, c.Debounce)
				}
				if !c.BGPEnabled || c.IPv4Pool.BlockSize != 28 {
					t.Errorf("global configuration lost: bgp %v block size %d", c.BGPEnabled, c.IPv4Pool.BlockSize)
				}
			},
			sources: map[string]string{"logLevel": "file", "xdpMode": "datastore", "bgpEnabled": "datastore"},
		},
		{
			name:   "env beats datastore",
			env:    []string{"TABBY_NODENAME=n1", "TABBY_INTERFACES=eth0", "TABBY_XDP_MODE=auto", "TABBY_BGP=false"},
			node:   nodeDS,
			global: globalDS,
			check: func(t *testing.T, c Config) {
				if c.XDPMode != afxdp.XDPAuto || c.BGPEnabled {
					t.Errorf("env lost to the datastore: %v %v", c.XDPMode, c.BGPEnabled)
				}
			},
			sources: map[string]string{"xdpMode": "env", "bgpEnabled": "env", "pollMode": "datastore"},
		},
		{
			name:  "lists from env and flags",
			env:   []string{"TABBY_NODENAME=n1", "TABBY_ETCD_ENDPOINTS=http://a:2379, https://b:2379"},
			flags: map[string]string{"interfaces": "eth0,eth1"},
			check: func(t *testing.T, c Config) {
				if strings.Join(c.Datastore.EtcdEndpoints, " ") != "http://a:2379 https://b:2379" ||
					strings.Join(c.Interfaces, " ") != "eth0 eth1" {
					t.Errorf("lists: %v %v", c.Datastore.EtcdEndpoints, c.Interfaces)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _ := EnvLayer(tc.env)
			var layers []*ConfigLayer
			layers = append(layers, env)
			if tc.flags != nil {
				layers = append(layers, mustLayer(t)(FlagLayer(tc.flags)))
			}
			if tc.file != "" {
				layers = append(layers, mustLayer(t)(FileLayer(tc.file)))
			}
			layers = append(layers, mustLayer(t)(DatastoreLayer(tc.node)), mustLayer(t)(DatastoreLayer(tc.global)))
			c, err := ResolveConfig(layers...)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
			for k, want := range tc.sources {
				if got := c.Sources[k]; got != want {
					t.Errorf("source of %s: %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	base := []string{"TABBY_NODENAME=n1", "TABBY_INTERFACES=eth0"}
	tests := []struct {
		name  string
		env   []string
		flags map[string]string
		file  string
		node  *AgentConfiguration
		want  []string // substrings of the error
	}{
		{name: "env dataplane", env: []string{"TABBY_DATAPLANE=foo"},
			want: []string{`TABBY_DATAPLANE="foo": must be afxdp or kernel`}},
		{name: "flag dataplane", flags: map[string]string{"dataplane": "foo"},
			want: []string{`--dataplane="foo": must be afxdp or kernel`}},
		{name: "file dataplane", file: "dataplane: foo\n",
			want: []string{`agent.yaml: dataplane="foo": must be afxdp or kernel`}},
		{name: "datastore dataplane", node: agentConfig("node.n1", AgentConfigurationSpec{Dataplane: "foo"}),
			want: []string{`AgentConfiguration "node.n1": spec.dataplane="foo": must be afxdp or kernel`}},
		{name: "two errors reported", env: []string{"TABBY_LOG_LEVEL=loud", "TABBY_BGP=maybe"},
			want: []string{`TABBY_LOG_LEVEL="loud": must be one of debug, info, warn, error`,
				`TABBY_BGP="maybe": must be true or false`}},
		{name: "etcd endpoint scheme", env: []string{"TABBY_ETCD_ENDPOINTS=127.0.0.1:2379"},
			want: []string{`TABBY_ETCD_ENDPOINTS="127.0.0.1:2379": endpoint "127.0.0.1:2379" must start with http:// or https://`}},
		{name: "pool cidr host bits", env: []string{"TABBY_IPV4POOL_CIDR=10.65.0.1/16"},
			want: []string{`TABBY_IPV4POOL_CIDR="10.65.0.1/16": has host bits set (the network is 10.65.0.0/16)`}},
		{name: "pool family", flags: map[string]string{"ipv6-pool-cidr": "10.0.0.0/8"},
			want: []string{`--ipv6-pool-cidr="10.0.0.0/8": is not an IPv6 CIDR`}},
		{name: "block size vs pool", env: []string{"TABBY_IPV4POOL_CIDR=10.65.0.0/24", "TABBY_IPV4POOL_BLOCK_SIZE=20"},
			want: []string{`TABBY_IPV4POOL_BLOCK_SIZE="20": block size 20 is shorter than the pool's prefix length (TABBY_IPV4POOL_CIDR="10.65.0.0/24")`}},
		{name: "ipip and vxlan", file: "ipv4PoolIPIP: Always\nipv4PoolVXLAN: CrossSubnet\n",
			want: []string{`IP-in-IP and VXLAN cannot both be enabled`}},
		{name: "afxdp needs interfaces", env: []string{"TABBY_INTERFACES="},
			want: []string{`the afxdp dataplane needs at least one interface`}},
		{name: "listen address", env: []string{"TABBY_HEALTH_LISTEN=9099"},
			want: []string{`TABBY_HEALTH_LISTEN="9099": must be host:port, or off`}},
		{name: "debounce", flags: map[string]string{"debounce": "forever"},
			want: []string{`--debounce="forever": must be a duration in 0s..10s`}},
		{name: "ipam gc interval", env: []string{"TABBY_IPAM_GC_INTERVAL=10ms"},
			want: []string{`TABBY_IPAM_GC_INTERVAL="10ms": must be 0s (off) or a duration of at least 1s`}},
		{name: "ipam gc grace", flags: map[string]string{"ipam-gc-grace-period": "-1m"},
			want: []string{`--ipam-gc-grace-period="-1m": must be a duration of at least 0s`}},
		{name: "node name", env: []string{"TABBY_NODENAME=Node_1"},
			want: []string{`TABBY_NODENAME="Node_1": is not a valid node name`}},
		{name: "tls pair", env: []string{"TABBY_ETCD_CERT_FILE=/c.pem"},
			want: []string{`a client certificate needs both files`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _ := EnvLayer(append(append([]string(nil), base...), tc.env...))
			layers := []*ConfigLayer{env}
			if tc.flags != nil {
				layers = append(layers, mustLayer(t)(FlagLayer(tc.flags)))
			}
			if tc.file != "" {
				layers = append(layers, mustLayer(t)(FileLayer(writeFile(t, tc.file))))
			}
			layers = append(layers, mustLayer(t)(DatastoreLayer(tc.node)))
			_, err := ResolveConfig(layers...)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigSourcesRejected(t *testing.T) {
	if _, err := FileLayer(writeFile(t, "dataplan: afxdp\n")); err == nil || !strings.Contains(err.Error(), `unknown key "dataplan"`) {
		t.Errorf("unknown file key: %v", err)
	}
	if _, err := FileLayer(writeFile(t, "dataplane: [a, b]\n")); err == nil || !strings.Contains(err.Error(), "dataplane: must be a single value") {
		t.Errorf("list for a scalar: %v", err)
	}
	if _, err := FlagLayer(map[string]string{"no-such": "x"}); err == nil {
		t.Error("unknown flag accepted")
	}
	_, unknown := EnvLayer([]string{"TABBY_DATAPLAN=afxdp", "TABBY_DATAPLANE=kernel", "PATH=/bin"})
	if len(unknown) != 1 || unknown[0] != "TABBY_DATAPLAN" {
		t.Errorf("unknown env: %v", unknown)
	}
	// The datastore cannot say how to reach the datastore.
	ac := agentConfig("default", AgentConfigurationSpec{})
	if err := ac.Validate(); err != nil {
		t.Errorf("empty configuration: %v", err)
	}
}

func TestAgentConfigurationValidate(t *testing.T) {
	tests := []struct {
		name string
		obj  *AgentConfiguration
		want string
	}{
		{"ok", agentConfig("node.n1", AgentConfigurationSpec{Dataplane: "kernel", Interfaces: []string{"eth0"}}), ""},
		{"bad name", agentConfig("global", AgentConfigurationSpec{}),
			`AgentConfiguration "global": metadata.name: "global" must be "default" or "node.<node name>"`},
		{"bad value", agentConfig("default", AgentConfigurationSpec{PollMode: "sometimes"}),
			`AgentConfiguration "default": spec.pollMode: "sometimes": must be one of adaptive, busy, interrupt`},
		{"bad block size", agentConfig("default", AgentConfigurationSpec{IPv4PoolBlockSize: 40}),
			`spec.ipv4PoolBlockSize: "40": must be an integer in 20..32`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.obj.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, resources.ErrInvalid) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestFlagNames(t *testing.T) {
	want := map[string]string{"etcdCAFile": "etcd-ca-file", "ipv4PoolCIDR": "ipv4-pool-cidr", "nodeName": "node-name",
		"ipv4PoolNATOutgoing": "ipv4-pool-nat-outgoing", "xdpMode": "xdp-mode", "ipv4PoolIPIP": "ipv4-pool-ipip"}
	for k, f := range want {
		if got := FlagName(k); got != f {
			t.Errorf("flag of %s: %q, want %q", k, got, f)
		}
	}
}
