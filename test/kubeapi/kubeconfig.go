package kubeapi

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeconfigFor returns a kubeconfig reaching the apiserver as rc does
// (server, TLS settings, credentials), with one context, "kubeapi".
func KubeconfigFor(rc *rest.Config) *clientcmdapi.Config {
	cluster := clientcmdapi.NewCluster()
	cluster.Server = rc.Host
	if rc.APIPath != "" && rc.APIPath != "/api" {
		cluster.Server += rc.APIPath
	}
	cluster.InsecureSkipTLSVerify = rc.TLSClientConfig.Insecure
	cluster.TLSServerName = rc.TLSClientConfig.ServerName
	cluster.CertificateAuthority = rc.TLSClientConfig.CAFile
	cluster.CertificateAuthorityData = rc.TLSClientConfig.CAData
	user := clientcmdapi.NewAuthInfo()
	user.Token, user.TokenFile = rc.BearerToken, rc.BearerTokenFile
	user.Username, user.Password = rc.Username, rc.Password
	user.ClientCertificate, user.ClientCertificateData = rc.TLSClientConfig.CertFile, rc.TLSClientConfig.CertData
	user.ClientKey, user.ClientKeyData = rc.TLSClientConfig.KeyFile, rc.TLSClientConfig.KeyData
	ctx := clientcmdapi.NewContext()
	ctx.Cluster, ctx.AuthInfo = "kubeapi", "kubeapi"
	c := clientcmdapi.NewConfig()
	c.Clusters["kubeapi"] = cluster
	c.AuthInfos["kubeapi"] = user
	c.Contexts["kubeapi"] = ctx
	c.CurrentContext = "kubeapi"
	return c
}

// WriteKubeconfig writes the kubeconfig of rc (KubeconfigFor) to path,
// mode 0600.
func WriteKubeconfig(rc *rest.Config, path string) error {
	if err := clientcmd.WriteToFile(*KubeconfigFor(rc), path); err != nil {
		return fmt.Errorf("kubeapi: write kubeconfig: %w", err)
	}
	return os.Chmod(path, 0o600)
}

// Kubeconfig writes a kubeconfig of the shared server (as a cluster
// admin) into tb's temporary directory and returns its path.
func Kubeconfig(tb testing.TB) string {
	tb.Helper()
	return KubeconfigOf(tb, Shared(tb).Config)
}

// KubeconfigOf writes the kubeconfig of rc (say, a copy of the shared
// server's Config whose Host is a datastoretest.Proxy) into tb's temporary directory
// and returns its path.
func KubeconfigOf(tb testing.TB, rc *rest.Config) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "kubeconfig")
	if err := WriteKubeconfig(rc, path); err != nil {
		tb.Fatal(err)
	}
	return path
}
