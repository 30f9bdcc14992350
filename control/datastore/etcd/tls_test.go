package etcd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
)

// writeCert writes a certificate signed by parent (self-signed when nil)
// and its key as PEM files in dir; it returns their paths and the cert.
func writeCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (certFile, keyFile string, cert *x509.Certificate, key *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert, key
}

// TestTLS: an external cluster reached over TLS with a client certificate.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	caFile, _, ca, caKey := writeCert(t, dir, "ca", &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tabby test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	srvCert, srvKey, _, _ := writeCert(t, dir, "server", &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "etcd"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	cliCert, cliKey, _, _ := writeCert(t, dir, "client", &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "tabby-agent"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)

	srv := etcdtest.StartServer(t, etcd.EmbeddedConfig{TLS: &etcd.EmbeddedTLS{CertFile: srvCert, KeyFile: srvKey, CAFile: caFile}})
	ep := srv.Endpoints()
	if !strings.HasPrefix(ep[0], "https://") {
		t.Fatalf("endpoints %v", ep)
	}
	ctx := context.Background()

	d, err := etcd.New(etcd.Config{Endpoints: ep, CertFile: cliCert, KeyFile: cliKey, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Create(ctx, node("over-tls", nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(ctx, nodeKey("over-tls")); err != nil {
		t.Fatal(err)
	}

	// Without a client certificate the server refuses, promptly.
	noCert, err := etcd.New(etcd.Config{Endpoints: ep, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := noCert.Get(gctx, nodeKey("over-tls")); err == nil {
		t.Fatal("read without a client certificate")
	}

	for _, cfg := range []etcd.Config{
		{Endpoints: ep, CertFile: cliCert},
		{Endpoints: ep, CertFile: cliCert, KeyFile: filepath.Join(dir, "missing.pem")},
		{Endpoints: ep, CAFile: filepath.Join(dir, "missing.pem")},
		{},
	} {
		if d, err := etcd.New(cfg); err == nil {
			d.Close()
			t.Errorf("config %+v accepted", cfg)
		}
	}
}
