package cni

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tabbynet/tabby/control/agent"
)

// Plugin-specific CNI error codes (the spec leaves 100 and up to plugins).
const (
	// ErrIPAMExhausted: no free address in the pools the pod may use.
	ErrIPAMExhausted uint = 100
	// ErrAgentRejected: the agent refused the request as invalid.
	ErrAgentRejected uint = 101
)

// agentError turns an error of the agent client into a CNI error whose
// message says what to do.
func agentError(op, socket string, err error) *types.Error {
	var ae *agent.APIError
	if errors.As(err, &ae) {
		switch ae.Code {
		case "not_ready":
			return types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("%s: tabby agent is not ready yet (still syncing with the datastore); retry", op), ae.Error())
		case "unavailable":
			return types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("%s: tabby agent cannot reach its datastore; retry, and check the agent's log", op), ae.Error())
		case "exhausted":
			return types.NewError(ErrIPAMExhausted,
				fmt.Sprintf("%s: no free address in the IP pools this pod may use: add an IPPool or free addresses", op),
				ae.ErrorResponse.Error)
		case "invalid":
			return types.NewError(ErrAgentRejected, fmt.Sprintf("%s: tabby agent rejected the request: %s", op,
				ae.ErrorResponse.Error), "")
		}
		return types.NewError(types.ErrInternal, fmt.Sprintf("%s: tabby agent failed: %s", op, ae.ErrorResponse.Error),
			"see the agent's log")
	}
	if agent.IsNotRunning(err) || isConnError(err) {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s: tabby agent not reachable at %s: is `tabby agent` running on this node?", op, socket),
			err.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s: tabby agent at %s did not answer in time; retry", op, socket), err.Error())
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("%s: %v", op, err), "")
}

func isConnError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// internal wraps a local failure (netlink, sysctl) as CNI error 999.
func internal(format string, args ...any) *types.Error {
	return types.NewError(types.ErrInternal, fmt.Sprintf(format, args...), "")
}
