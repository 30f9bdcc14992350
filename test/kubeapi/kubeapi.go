// Package kubeapi starts a real kube-apiserver in-process for tests: the
// one of k8s.io/kubernetes/cmd/kube-apiserver/app/testing, over Tabby's
// embedded single-member etcd on 127.0.0.1, with Tabby's CRDs
// (deploy/crds) installed.
//
// One server serves a whole test binary (Main), as starting one takes
// seconds; tests keep apart by the names of what they create.
//
// The server finds its fixtures through the source path of the testing
// package, so test binaries must not be built with -trimpath.
package kubeapi

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	kubeapiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"

	"github.com/tabbynet/tabby/control/agent"
	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/kubernetes"
	"github.com/tabbynet/tabby/control/resources"
)

// Server is a running kube-apiserver and its etcd.
type Server struct {
	// Etcd is the apiserver's storage.
	Etcd *etcd.Embedded
	// Config reaches the apiserver as a cluster admin.
	Config *rest.Config
	// StoragePrefix is the apiserver's key prefix in Etcd.
	StoragePrefix string

	tb       *mainTB
	tearDown func()
}

// Options configure Start.
type Options struct {
	// Flags are extra kube-apiserver flags.
	Flags []string
	// CRDDir is where the CRD manifests are (default: deploy/crds of the
	// repository, found from the working directory).
	CRDDir string
	// Log receives the apiserver's log (default: discarded; set
	// TABBY_KUBEAPI_LOG=stderr or a file name to keep it).
	Log io.Writer
}

var logFlag = flag.String("kubeapi.log", os.Getenv("TABBY_KUBEAPI_LOG"), "where the kube-apiserver logs: stderr or a file (default: discarded)")

// Start starts etcd and a kube-apiserver and installs the CRDs. Close
// stops both.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
		switch *logFlag {
		case "":
		case "stderr":
			opts.Log = os.Stderr
		default:
			f, err := os.Create(*logFlag)
			if err != nil {
				return nil, err
			}
			opts.Log = f
		}
	}
	quietKlog(opts.Log)
	dir := opts.CRDDir
	if dir == "" {
		var err error
		if dir, err = findCRDDir(); err != nil {
			return nil, err
		}
	}
	if opts.Log == io.Discard {
		defer filterStderr(etcdClientRetry)()
	}
	start := time.Now()
	ectx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ed, err := etcd.StartEmbedded(ectx, etcd.EmbeddedConfig{})
	if err != nil {
		return nil, fmt.Errorf("kubeapi: start etcd: %w", err)
	}
	tb := &mainTB{out: opts.Log}
	prefix := fmt.Sprintf("/kubeapi-%d/registry", os.Getpid())
	storage := storagebackend.NewDefaultConfig(prefix, nil)
	storage.Transport.ServerList = ed.Endpoints()
	ts, err := kubeapiservertesting.StartTestServer(tb, nil, opts.Flags, storage)
	if err != nil {
		tb.cleanup()
		ed.Close()
		return nil, fmt.Errorf("kubeapi: start kube-apiserver: %w", err)
	}
	s := &Server{Etcd: ed, Config: ts.ClientConfig, StoragePrefix: prefix, tb: tb, tearDown: ts.TearDownFn}
	fmt.Fprintf(os.Stderr, "kubeapi: kube-apiserver %s up in %s\n", s.Config.Host, time.Since(start).Round(time.Millisecond))
	if err := s.installCRDs(ctx, dir); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close stops the apiserver and etcd.
func (s *Server) Close() {
	s.tearDown()
	s.tb.cleanup()
	s.Etcd.Close()
}

// CRDFiles returns the manifests of deploy/crds.
func CRDFiles(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("kubeapi: no CRD manifests in %s", dir)
	}
	sort.Strings(files)
	return files, nil
}

func (s *Server) installCRDs(ctx context.Context, dir string) error {
	files, err := CRDFiles(dir)
	if err != nil {
		return err
	}
	var manifests [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		manifests = append(manifests, b)
	}
	d, err := kubernetes.New(kubernetes.Config{RESTConfig: s.Config})
	if err != nil {
		return err
	}
	defer d.Close()
	start := time.Now()
	if err := d.InstallCRDs(ctx, manifests...); err != nil {
		return fmt.Errorf("kubeapi: install CRDs: %w", err)
	}
	fmt.Fprintf(os.Stderr, "kubeapi: %d CRDs established in %s\n", len(manifests), time.Since(start).Round(time.Millisecond))
	// The apiserver sets up a kind's storage on its first request, which
	// takes a while (about 2s); do it for every kind now, at once.
	start = time.Now()
	var wg sync.WaitGroup
	kinds, agentKinds := resources.Kinds(), agent.AgentKinds()
	errs := make([]error, len(kinds)+len(agentKinds))
	for i, info := range kinds {
		wg.Go(func() { _, errs[i] = d.ListKeys(ctx, info.Kind) })
	}
	// The agent's kinds (policies, tiers, configurations) too.
	for i, info := range agentKinds {
		wg.Go(func() { _, errs[len(kinds)+i] = d.Objects(info.Kind, info.Plural, info.Namespaced).List(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kubeapi: warm up: %w", err)
	}
	// The first write waits for the apiserver's admission plugins (2s).
	warm := &resources.Node{ObjectMeta: resources.ObjectMeta{Name: "kubeapi-warm-up"}}
	if _, err := d.Create(ctx, warm); err != nil {
		return fmt.Errorf("kubeapi: warm up: %w", err)
	}
	if _, err := d.Delete(ctx, resources.KeyOf(warm), ""); err != nil {
		return fmt.Errorf("kubeapi: warm up: %w", err)
	}
	fmt.Fprintf(os.Stderr, "kubeapi: storage of %d kinds and admission ready in %s\n", len(errs), time.Since(start).Round(time.Millisecond))
	return nil
}

// findCRDDir walks up from the working directory to the repository's
// deploy/crds.
func findCRDDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		c := filepath.Join(dir, "deploy", "crds")
		if fi, err := os.Stat(c); err == nil && fi.IsDir() {
			return c, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("kubeapi: no deploy/crds above the working directory")
		}
		dir = parent
	}
}

var (
	shared     *Server
	sharedOnce sync.Once
)

// Main runs a test binary's tests with one shared server:
//
//	func TestMain(m *testing.M) { kubeapi.Main(m) }
func Main(m *testing.M) {
	flag.Parse()
	srv, err := Start(context.Background(), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = srv
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

// Shared returns the server Main started, or starts one for the rest of
// the process.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	sharedOnce.Do(func() {
		if shared != nil {
			return
		}
		srv, err := Start(context.Background(), Options{})
		if err != nil {
			tb.Fatal(err)
		}
		shared = srv
	})
	if shared == nil {
		tb.Fatal("kubeapi: no server")
	}
	return shared
}

// Datastore returns a Kubernetes datastore on the shared server, closed in
// tb's cleanup; cfg.RESTConfig is filled in, and unless set QPS and Burst
// are those of the test server's own clients (1000 and 10000: the tests
// hammer one apiserver and are not about client-side throttling).
func Datastore(tb testing.TB, cfg kubernetes.Config) *kubernetes.Datastore {
	tb.Helper()
	if cfg.RESTConfig == nil {
		cfg.RESTConfig = Shared(tb).Config
	}
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = cfg.RESTConfig.QPS, cfg.RESTConfig.Burst
	}
	if cfg.Logger == nil && testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d, err := kubernetes.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// quietKlog sends klog's global output (components that do not log
// through their context) to w.
func quietKlog(w io.Writer) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(w)
}
