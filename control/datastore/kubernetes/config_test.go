package kubernetes

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: one
  cluster: {server: "https://one.example:6443"}
- name: two
  cluster: {server: "https://two.example:6443"}
users:
- name: u
  user: {token: "t"}
contexts:
- name: ctx-one
  context: {cluster: one, user: u}
- name: ctx-two
  context: {cluster: two, user: u}
current-context: ctx-one
`

func TestNewConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		host string
		qps  float32
	}{
		{"current context", Config{Kubeconfig: path}, "https://one.example:6443", 50},
		{"named context", Config{Kubeconfig: path, Context: "ctx-two", QPS: 7, Burst: 9}, "https://two.example:6443", 7},
		{"rest config", Config{RESTConfig: &rest.Config{Host: "https://three.example"}}, "https://three.example", 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			rc := d.RESTConfig()
			if rc.Host != tt.host || rc.QPS != tt.qps || rc.UserAgent != "tabby" {
				t.Fatalf("config host %s qps %v agent %q", rc.Host, rc.QPS, rc.UserAgent)
			}
		})
	}
	if _, err := New(Config{Kubeconfig: path, Context: "nope"}); err == nil {
		t.Fatal("unknown context accepted")
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	t.Setenv("HOME", t.TempDir())
	if _, err := New(Config{}); err == nil {
		t.Fatal("no kubeconfig and not in a cluster, but New succeeded")
	}
}
