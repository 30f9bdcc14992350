package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultAgentSocket is where `tabby agent` serves the endpoint API.
const DefaultAgentSocket = "/run/tabby/agent.sock"

// IPAMType is the only IPAM this plugin uses: the agent's, through its
// socket ("" in the configuration means the same).
const IPAMType = "tabby-ipam"

// NetConf is the plugin's network configuration (one element of a
// conflist's "plugins"), modelled on Calico's.
type NetConf struct {
	types.PluginConf

	// MTU of both ends of the veth (default 1500).
	MTU int `json:"mtu,omitempty"`
	// LogLevel is debug, info, warning or error (default info): what is
	// written to stderr and to LogFilePath.
	LogLevel string `json:"log_level,omitempty"`
	// LogFilePath, when set, receives the log too (appended).
	LogFilePath string `json:"log_file_path,omitempty"`
	// AgentSocket is the agent's unix socket (default DefaultAgentSocket).
	AgentSocket string `json:"agent_socket,omitempty"`
	// AgentTimeout bounds each call to the agent, in seconds (default 30).
	AgentTimeout int `json:"agent_timeout,omitempty"`
	// TabbyIPAM is the "ipam" section read with Tabby's fields.
	TabbyIPAM IPAMConf `json:"-"`
	// Kubernetes says how pods are named (CNI_ARGS K8S_POD_NAME and
	// K8S_POD_NAMESPACE are always read).
	Kubernetes KubernetesConf `json:"kubernetes,omitempty"`
	// RuntimeConfig is what the runtime passes for capabilities the
	// plugin ignores; kept so that decoding does not fail on it.
	RuntimeConfig map[string]any `json:"runtimeConfig,omitempty"`
}

// IPAMConf is the "ipam" section: {"type": "tabby-ipam", "assign_ipv4":
// "true", "assign_ipv6": "false", "ipv4_pools": [...], "ipv6_pools": [...]}.
type IPAMConf struct {
	Type string `json:"type"`
	// AssignIPv4 and AssignIPv6 are "true" or "false" (Calico's strings;
	// JSON booleans are accepted too). Default: IPv4 only.
	AssignIPv4 *flexBool `json:"assign_ipv4,omitempty"`
	AssignIPv6 *flexBool `json:"assign_ipv6,omitempty"`
	// IPv4Pools and IPv6Pools restrict the pools (IPPool names).
	IPv4Pools []string `json:"ipv4_pools,omitempty"`
	IPv6Pools []string `json:"ipv6_pools,omitempty"`
}

// KubernetesConf is the "kubernetes" section.
type KubernetesConf struct {
	// Kubeconfig is accepted for Calico compatibility; pod labels come
	// from the agent's view of the cluster, so it is not read.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// PodNamespaceDefault is the namespace when CNI_ARGS name none
	// (default "default").
	PodNamespaceDefault string `json:"pod_namespace_default,omitempty"`
}

// flexBool decodes "true"/"false" strings and JSON booleans.
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case bool:
		*b = flexBool(x)
	case string:
		switch strings.ToLower(x) {
		case "true":
			*b = true
		case "false":
			*b = false
		default:
			return fmt.Errorf("%q is not true or false", x)
		}
	default:
		return fmt.Errorf("%s is not true or false", data)
	}
	return nil
}

// K8sArgs are the CNI_ARGS the plugin reads.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

// ParseConfig decodes and validates stdin's configuration. Errors are
// *types.Error: 6 when the JSON does not parse, 7 when a field has the
// wrong type or value, 2 for an unsupported IPAM type.
func ParseConfig(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, decodeError("network configuration", err)
	}
	if len(stdin) > 0 {
		var raw struct {
			IPAM json.RawMessage `json:"ipam"`
		}
		_ = json.Unmarshal(stdin, &raw)
		if len(raw.IPAM) > 0 && string(raw.IPAM) != "null" {
			if err := json.Unmarshal(raw.IPAM, &conf.TabbyIPAM); err != nil {
				return nil, decodeError("ipam section", err)
			}
		}
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "cannot parse prevResult from the previous plugin",
				err.Error())
		}
	}
	if err := conf.validate(); err != nil {
		return nil, err
	}
	return conf, nil
}

func decodeError(what string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("invalid %s: field %q must be a %s, not a JSON %s", what, field, te.Type, te.Value), err.Error())
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("%s is not valid JSON (at byte %d)", what, se.Offset), err.Error())
	}
	if strings.Contains(err.Error(), "true or false") || strings.Contains(err.Error(), "assign_") {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid %s: %v", what, err), "")
	}
	return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("cannot decode %s: %v", what, err), "")
}

func (c *NetConf) validate() error {
	bad := func(format string, args ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, args...), "")
	}
	if c.MTU == 0 {
		c.MTU = 1500
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return bad("mtu %d out of range: must be 576..65535 (or omitted for 1500)", c.MTU)
	}
	if _, err := c.Level(); err != nil {
		return bad("%v", err)
	}
	if c.AgentSocket == "" {
		c.AgentSocket = DefaultAgentSocket
	}
	if c.AgentTimeout == 0 {
		c.AgentTimeout = 30
	}
	if c.AgentTimeout < 0 || c.AgentTimeout > 600 {
		return bad("agent_timeout %d out of range: seconds, 1..600", c.AgentTimeout)
	}
	switch c.TabbyIPAM.Type {
	case "", IPAMType, "tabby":
	default:
		return types.NewError(types.ErrUnsupportedField,
			fmt.Sprintf("unsupported field ipam.type=%q: tabby assigns addresses through its agent; use %q or omit ipam",
				c.TabbyIPAM.Type, IPAMType), "")
	}
	if c.TabbyIPAM.AssignIPv4 != nil && c.TabbyIPAM.AssignIPv6 != nil && !*c.TabbyIPAM.AssignIPv4 &&
		!*c.TabbyIPAM.AssignIPv6 {
		return bad("ipam: assign_ipv4 and assign_ipv6 are both false: nothing to assign")
	}
	if c.Kubernetes.PodNamespaceDefault == "" {
		c.Kubernetes.PodNamespaceDefault = "default"
	}
	return nil
}

// Families returns how many IPv4 and IPv6 addresses to ask for.
func (c *NetConf) Families() (v4, v6 int) {
	v4 = 1
	if c.TabbyIPAM.AssignIPv4 != nil && !*c.TabbyIPAM.AssignIPv4 {
		v4 = 0
	}
	if c.TabbyIPAM.AssignIPv6 != nil && *c.TabbyIPAM.AssignIPv6 {
		v6 = 1
	}
	return v4, v6
}

// Timeout is AgentTimeout as a duration.
func (c *NetConf) Timeout() time.Duration { return time.Duration(c.AgentTimeout) * time.Second }

// Level parses LogLevel.
func (c *NetConf) Level() (slog.Level, error) {
	switch strings.ToLower(c.LogLevel) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "none":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log_level %q: must be debug, info, warning or error", c.LogLevel)
}
