package engine

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datapath"
	"github.com/tabbynet/tabby/datapath/afxdp"
)

// workerGoroutines counts goroutines running an engine worker loop.
func workerGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), "datapath/engine.(*worker).run(")
}

// waitWorkerGoroutines waits until want worker goroutines exist and returns
// how many there are. A goroutine that closed its done channel still runs
// for a moment, so counts are polled.
func waitWorkerGoroutines(want int) int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := workerGoroutines()
		if n == want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(time.Millisecond)
	}
}

// fdSet is a snapshot of the process's open file descriptors: number →
// what it refers to (readlink of /proc/self/fd/N).
type fdSet map[string]string

// openFDs snapshots the process's open file descriptors. It collects
// garbage first so that files only a finalizer still holds are closed
// before the snapshot rather than during the code under test.
func openFDs(t *testing.T) fdSet {
	t.Helper()
	runtime.GC()
	fds, err := readFDs()
	if err != nil {
		t.Fatal(err)
	}
	return fds
}

func readFDs() (fdSet, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	fds := make(fdSet, len(ents))
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the ReadDir's own descriptor, closed by now
		}
		fds[e.Name()] = target
	}
	return fds, nil
}

// leakedFDs waits up to a second for every descriptor opened since before
// to be closed and returns those still open ("fd → target"). Descriptors
// closed meanwhile (by finalizers or other goroutines) are not leaks.
func leakedFDs(t *testing.T, before fdSet) []string {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		now, err := readFDs()
		if err != nil {
			t.Fatal(err)
		}
		var leaked []string
		for fd, target := range now {
			if before[fd] != target {
				leaked = append(leaked, fd+" → "+target)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCloseLeavesNothing (test 6): Close while traffic is flowing drains
// the worker (every frame received was transmitted or dropped, none held or
// in flight), detaches XDP, ends the worker goroutine, and is idempotent.
func TestCloseLeavesNothing(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind.String(), func(t *testing.T) {
			l := newLine(t)
			genRaw := l.raw(l.gen, "g0")
			cfg := l.config(kind)
			cfg.Netns, cfg.Logger = l.dut.Handle(), testLogger(t)
			e, err := Start(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			if kind == PortAFXDP && (!l.xdpAttached(l.dut, "d0") || !l.xdpAttached(l.dut, "d1")) {
				t.Fatal("no XDP program on the engine's interfaces")
			}
			if n := waitWorkerGoroutines(1); n != 1 {
				t.Fatalf("%d worker goroutines, want 1", n)
			}
			if kind == PortAFXDP {
				// At rest every socket lends its ring size's worth of
				// frames, not the burst ring's (elastic lending).
				want := 2 * e.cfg.RingSize
				deadline := time.Now().Add(2 * time.Second)
				for e.Frames().Fill != want && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if f := e.Frames(); f.Fill != want || e.cfg.BurstRingSize <= e.cfg.RingSize {
					t.Fatalf("at rest: frames %+v, want %d lent (rings %d, burst rings %d)", f, want,
						e.cfg.RingSize, e.cfg.BurstRingSize)
				}
			}

			// Traffic from gen until after Close.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				frames := make([][]byte, 64)
				for i := range frames {
					frames[i] = pkt{srcMAC: l.g0, dstMAC: l.d0, src: "10.244.1.10", dst: fmt.Sprintf("10.244.2.%d", i+1),
						payload: fmt.Sprintf("load-%02d", i)}.frame(t)
				}
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					genRaw.Send(frames[i%len(frames)])
				}
			}()
			waitCounters(t, e, "under load", func(c datapath.Counters) bool { return c.RxPackets > 2000 })
			if err := e.Close(); err != nil {
				t.Fatalf("close under load: %v", err)
			}
			close(stop)
			wg.Wait()

			select {
			case <-e.Done():
			default:
				t.Fatal("Done not closed after Close")
			}
			if n := waitWorkerGoroutines(0); n != 0 {
				t.Fatalf("%d worker goroutines after Close", n)
			}
			if err := e.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			st := e.Stats()
			f := st.Frames
			if st.Running || f.App != 0 || f.Tx != 0 || f.Free+f.Fill != f.Total || st.InvalidReleases != 0 {
				t.Fatalf("after Close: running %v, frames %+v, invalid releases %d", st.Running, f, st.InvalidReleases)
			}
			c := e.Counters()
			if c.RxPackets != c.TxPackets+c.Dropped() {
				t.Fatalf("frames unaccounted for: %s", fmtCounters(c))
			}
			t.Logf("forwarded %d frames under load, dropped %d; frames at close %+v, loop %+v", c.TxPackets, c.Dropped(),
				f, st.Workers[0].Loop)
			for _, ifname := range []string{"d0", "d1"} {
				if l.xdpAttached(l.dut, ifname) {
					t.Errorf("%s still has an XDP program after Close", ifname)
				}
			}

			// A new engine on the same interfaces starts at once (the kernel
			// frees the old sockets' queues asynchronously) and forwards.
			t0 := time.Now()
			e2, err := Start(context.Background(), cfg)
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			t.Logf("restarted in %v", time.Since(t0))
			sinkRaw := l.raw(l.sink, "s0")
			p := pkt{srcMAC: l.g0, dstMAC: l.d0, src: "10.244.1.10", dst: "10.244.2.1", payload: "after-restart"}
			if err := genRaw.Send(p.frame(t)); err != nil {
				t.Fatal(err)
			}
			checkInner(t, capture(t, sinkRaw, 1, hasPayload("after-restart"))[0], p, l.d1, l.s0, 63)
			if err := e2.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStartFailureLeavesNothing (test 6): a Start that fails names the
// interface and undoes what it did: no XDP program left on the interfaces
// it had already attached to, no goroutine, no file descriptor.
func TestStartFailureLeavesNothing(t *testing.T) {
	l := newLine(t)
	start := func(kind PortKind, ifs ...string) error {
		cfg := l.config(kind)
		cfg.Interfaces = nil
		for _, i := range ifs {
			cfg.Interfaces = append(cfg.Interfaces, Interface{Name: i})
		}
		cfg.Netns, cfg.Logger = l.dut.Handle(), testLogger(t)
		e, err := Start(context.Background(), cfg)
		if err == nil {
			e.Close()
			return fmt.Errorf("Start succeeded")
		}
		return err
	}
	clean := func(t *testing.T, fds fdSet) {
		t.Helper()
		for _, ifname := range []string{"d0", "d1"} {
			if l.xdpAttached(l.dut, ifname) {
				t.Errorf("%s has an XDP program after a failed Start", ifname)
			}
		}
		if n := waitWorkerGoroutines(0); n != 0 {
			t.Errorf("%d worker goroutines after a failed Start", n)
		}
		if leaked := leakedFDs(t, fds); len(leaked) > 0 {
			t.Errorf("file descriptors left open by a failed Start: %v", leaked)
		}
	}

	for _, kind := range kinds {
		t.Run("bad_name/"+kind.String(), func(t *testing.T) {
			fds := openFDs(t)
			err := start(kind, "d0", "nosuch0", "d1")
			if err == nil || !strings.Contains(err.Error(), "nosuch0") {
				t.Fatalf("Start with interface nosuch0: %v, want an error naming it", err)
			}
			t.Logf("error: %v", err)
			clean(t, fds)
		})
	}

	// Fails after attaching to d0: d1 already has an XDP program (another
	// engine's), which the steering refuses to replace.
	t.Run("xdp_busy", func(t *testing.T) {
		cfg := l.config(PortAFXDP)
		cfg.Interfaces = []Interface{{Name: "d1"}}
		cfg.Netns, cfg.Logger = l.dut.Handle(), testLogger(t)
		other, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		time.Sleep(10 * time.Millisecond)
		fds := openFDs(t)
		err = start(PortAFXDP, "d0", "d1")
		if err == nil || !strings.Contains(err.Error(), "d1") {
			t.Fatalf("Start on an interface with an XDP program: %v, want an error naming d1", err)
		}
		t.Logf("error: %v", err)
		if l.xdpAttached(l.dut, "d0") {
			t.Error("d0 has an XDP program after a failed Start")
		}
		if !l.xdpAttached(l.dut, "d1") {
			t.Error("the failed Start detached the other engine's program from d1")
		}
		if n := waitWorkerGoroutines(1); n != 1 {
			t.Errorf("%d worker goroutines, want the other engine's only", n)
		}
		if leaked := leakedFDs(t, fds); len(leaked) > 0 {
			t.Errorf("file descriptors left open by a failed Start: %v", leaked)
		}
		if err := other.Close(); err != nil {
			t.Fatal(err)
		}
		clean(t, openFDs(t))
	})

	// Fails after attaching to both interfaces and binding a socket on d0:
	// queue 0 of d1 already has an AF_XDP socket (no XDP program).
	t.Run("socket_busy", func(t *testing.T) {
		u, err := afxdp.NewUMEM(afxdp.UMEMConfig{Frames: 512})
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		// Closed sockets release their queue asynchronously: retry.
		deadline := time.Now().Add(3 * time.Second)
		for {
			err := l.dut.Do(func() error {
				_, err := u.NewSocket(afxdp.SocketConfig{Interface: "d1", RxSize: 256, TxSize: 256, FillSize: 256, CompletionSize: 256})
				return err
			})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		defer func(w time.Duration) { bindBusyWindow = w }(bindBusyWindow)
		bindBusyWindow = 100 * time.Millisecond
		fds := openFDs(t)
		err = start(PortAFXDP, "d0", "d1")
		if err == nil || !strings.Contains(err.Error(), "d1") {
			t.Fatalf("Start on a queue with a socket: %v, want an error naming d1", err)
		}
		t.Logf("error: %v", err)
		clean(t, fds)
	})
}
