package kubeapi

import (
	"bufio"
	"bytes"
	"os"

	"golang.org/x/sys/unix"
)

// filterStderr drops the lines of file descriptor 2 that drop matches
// until the returned function is called, and passes the others through.
//
// The apiserver's etcd clients log through a zap logger that the
// apiserver package creates on stderr at init, out of reach of any
// option; while the server starts, a client it closes early retries a
// read a hundred times, each a JSON warning. They say nothing about the
// tests, so Start hides them.
func filterStderr(drop func(line []byte) bool) (restore func()) {
	saved, err := unix.Dup(2)
	if err != nil {
		return func() {}
	}
	r, w, err := os.Pipe()
	if err != nil {
		unix.Close(saved)
		return func() {}
	}
	if err := unix.Dup3(int(w.Fd()), 2, 0); err != nil {
		r.Close()
		w.Close()
		unix.Close(saved)
		return func() {}
	}
	w.Close() // fd 2 is now the pipe's only write end
	out := os.NewFile(uintptr(saved), "stderr")
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			if line := sc.Bytes(); !drop(line) {
				out.Write(append(bytes.Clone(line), '\n'))
			}
		}
	}()
	return func() {
		// Putting the saved descriptor back closes the pipe's write end;
		// the reader drains what is left and stops.
		unix.Dup3(saved, 2, 0)
		<-done
		r.Close()
		out.Close()
	}
}

// etcdClientRetry matches the etcd client's retry warnings.
func etcdClientRetry(line []byte) bool {
	return bytes.Contains(line, []byte(`"logger":"etcd-client"`)) && bytes.Contains(line, []byte("retrying of unary invoker failed"))
}
