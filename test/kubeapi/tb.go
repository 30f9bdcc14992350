package kubeapi

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// mainTB is the ktesting.TB the apiserver is started with: a server
// shared by a whole test binary outlives every *testing.T. It logs to out,
// runs its cleanups when the server is closed, and exits the process on
// a fatal error.
type mainTB struct {
	out io.Writer

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	tmp      string
}

func (t *mainTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

// cleanup runs the cleanups, last registered first.
func (t *mainTB) cleanup() {
	t.mu.Lock()
	fs := t.cleanups
	t.cleanups = nil
	tmp := t.tmp
	t.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
	if tmp != "" {
		os.RemoveAll(tmp)
	}
}

func (t *mainTB) Error(args ...any) {
	t.Log(args...)
	t.Fail()
}

func (t *mainTB) Errorf(format string, args ...any) {
	t.Logf(format, args...)
	t.Fail()
}

func (t *mainTB) Fail() {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}

func (t *mainTB) FailNow() {
	fmt.Fprintln(os.Stderr, "kubeapi: the kube-apiserver failed")
	os.Exit(1)
}

func (t *mainTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *mainTB) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"kubeapi:"}, args...)...)
	t.FailNow()
}

func (t *mainTB) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kubeapi: "+format+"\n", args...)
	t.FailNow()
}

func (t *mainTB) Helper() {}

func (t *mainTB) Log(args ...any) { fmt.Fprintln(t.out, args...) }

func (t *mainTB) Logf(format string, args ...any) { fmt.Fprintf(t.out, format+"\n", args...) }

func (t *mainTB) Name() string { return "kubeapi" }

func (t *mainTB) Setenv(key, value string) { os.Setenv(key, value) }

func (t *mainTB) Skip(args ...any) { t.Log(args...) }

func (t *mainTB) SkipNow() {}

func (t *mainTB) Skipf(format string, args ...any) { t.Logf(format, args...) }

func (t *mainTB) Skipped() bool { return false }

func (t *mainTB) TempDir() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tmp == "" {
		dir, err := os.MkdirTemp("", "kubeapi")
		if err != nil {
			panic(err)
		}
		t.tmp = dir
	}
	return t.tmp
}
