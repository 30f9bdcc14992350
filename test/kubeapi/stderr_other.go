//go:build !linux

package kubeapi

func filterStderr(func([]byte) bool) func() { return func() {} }

func etcdClientRetry([]byte) bool { return false }
