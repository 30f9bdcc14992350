package nstest

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/datapath"
)

// Port is the receiving side of a packet I/O port under test: an AF_XDP
// socket or an AF_PACKET port.
type Port interface {
	Receive(frames []datapath.Frame) int
	Release(frames []datapath.Frame)
	FD() int
	Headroom() int
}

// Receive polls the ports until want frames matching keep (nil: any)
// arrived or the timeout passed, and returns copies of their packets; it
// releases every frame it receives. Each frame must start at least the
// port's headroom into its buffer, and exactly there if exactHeadroom.
func Receive[P Port](t testing.TB, ports []P, want int, timeout time.Duration, keep func([]byte) bool, exactHeadroom bool) [][]byte {
	t.Helper()
	var out [][]byte
	frames := make([]datapath.Frame, 64)
	deadline := time.Now().Add(timeout)
	for len(out) < want && time.Now().Before(deadline) {
		got := 0
		for _, p := range ports {
			n := p.Receive(frames)
			got += n
			for _, f := range frames[:n] {
				if h := p.Headroom(); f.Off < h || exactHeadroom && f.Off != h {
					t.Errorf("frame offset %d, headroom %d (exact: %v)", f.Off, h, exactHeadroom)
				}
				if keep == nil || keep(f.Packet()) {
					out = append(out, append([]byte(nil), f.Packet()...))
				}
			}
			p.Release(frames[:n])
		}
		if got == 0 {
			pfds := make([]unix.PollFd, len(ports))
			for i, p := range ports {
				pfds[i] = unix.PollFd{Fd: int32(p.FD()), Events: unix.POLLIN}
			}
			unix.Poll(pfds, 10)
		}
	}
	return out
}

// ExpectFrames receives frames matching keep on r until it has one for
// each of want, and fails the test unless they equal want, in order.
// describe (nil: none) adds to the message when a frame does not arrive.
func (r *Raw) ExpectFrames(t testing.TB, want [][]byte, timeout time.Duration, keep func([]byte) bool, describe func() string) {
	t.Helper()
	r.expect(t, len(want), timeout, keep, describe, func(i int, b []byte) string {
		if !bytes.Equal(b, want[i]) {
			return fmt.Sprintf("frame %d on the wire differs", i)
		}
		return ""
	})
}

// ExpectUDPPayloads receives n frames matching keep on r and fails the
// test unless frame i carries the UDP payload fmt.Sprintf(format, i).
func (r *Raw) ExpectUDPPayloads(t testing.TB, n int, format string, timeout time.Duration, keep func([]byte) bool) {
	t.Helper()
	r.expect(t, n, timeout, keep, nil, func(i int, b []byte) string {
		if got, want := string(UDPPayload(b)), fmt.Sprintf(format, i); got != want {
			return fmt.Sprintf("frame %d: UDP payload %q, want %q", i, got, want)
		}
		return ""
	})
}

// expect receives n frames matching keep and fails the test when one does
// not arrive within timeout or check returns a complaint about it.
func (r *Raw) expect(t testing.TB, n int, timeout time.Duration, keep func([]byte) bool, describe func() string, check func(i int, b []byte) string) {
	t.Helper()
	for i := range n {
		b, err := r.Recv(timeout, keep)
		if err != nil {
			more := ""
			if describe != nil {
				more = " " + describe()
			}
			t.Fatalf("peer captured %d of %d: %v%s", i, n, err, more)
		}
		if msg := check(i, b); msg != "" {
			t.Fatal(msg)
		}
	}
}

// UDPPayload decodes an Ethernet frame and returns its UDP payload, or nil.
func UDPPayload(b []byte) []byte {
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		return u.Payload
	}
	return nil
}

// HasUDPPrefix returns a frame filter for Receive and Raw.Recv: UDP
// payloads that start with prefix.
func HasUDPPrefix(prefix string) func([]byte) bool {
	return func(b []byte) bool { return bytes.HasPrefix(UDPPayload(b), []byte(prefix)) }
}
