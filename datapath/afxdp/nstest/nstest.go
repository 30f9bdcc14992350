// Package nstest builds throwaway network namespaces, veth pairs and raw
// packet sockets for tests of the packet I/O ports. Everything it creates
// has a random name and is removed by t.Cleanup, even when the test fails.
// Tests using it must run as root; RequireRoot skips them otherwise.
package nstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and AF_XDP/AF_PACKET sockets")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: iproute2 (ip) not installed")
	}
}

// Suffix returns a random 6-hex-digit suffix for names.
func Suffix() string {
	var b [3]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NS is a network namespace created for one test.
type NS struct {
	Name string
}

// NewNS creates a namespace named tbx-<tag>-<random> with lo up, and
// deletes it in t.Cleanup.
func NewNS(t testing.TB, tag string) *NS {
	t.Helper()
	n := &NS{Name: fmt.Sprintf("tbx-%s-%s", tag, Suffix())}
	Run(t, "ip", "netns", "add", n.Name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Logf("cleanup: ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	n.IP(t, "link", "set", "lo", "up")
	return n
}

// IP runs `ip -n NS args...` and returns its output; it fails the test on
// error.
func (n *NS) IP(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// Exec runs a command inside the namespace (ip netns exec).
func (n *NS) Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Command returns an unstarted command that runs inside the namespace.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command and fails the test if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out)
}

// Do runs fn on an OS thread switched into the namespace. Sockets, links
// and BPF attachments fn creates belong to the namespace; they stay usable
// from any thread afterwards. If the thread cannot be switched back it is
// discarded.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", n.Name, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		err = fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else: the goroutine exits locked and the thread is destroyed
		errc <- err
	}()
	return <-errc
}

// Veth creates a veth pair, end a in namespace na and end b in nb, both up,
// with the given MTU (0: default). Deleting the namespaces removes it.
func Veth(t testing.TB, na *NS, a string, nb *NS, b string, mtu int) {
	t.Helper()
	VethQueues(t, na, a, nb, b, mtu, 0)
}

// VethQueues is Veth with the given number of RX and TX queues per end
// (0: the default, one).
func VethQueues(t testing.TB, na *NS, a string, nb *NS, b string, mtu, queues int) {
	t.Helper()
	args := []string{"link", "add", a, "netns", na.Name}
	q := func() []string {
		if queues <= 0 {
			return nil
		}
		return []string{"numtxqueues", fmt.Sprint(queues), "numrxqueues", fmt.Sprint(queues)}
	}
	args = append(args, q()...)
	args = append(args, "type", "veth", "peer", "name", b, "netns", nb.Name)
	args = append(args, q()...)
	Run(t, "ip", args...)
	for _, e := range []struct {
		ns   *NS
		name string
	}{{na, a}, {nb, b}} {
		if mtu > 0 {
			e.ns.IP(t, "link", "set", e.name, "mtu", fmt.Sprint(mtu))
		}
		e.ns.IP(t, "link", "set", e.name, "up")
	}
}

// XDPAttached reports whether an XDP program is attached to the interface
// (in any mode), from `ip link`.
func (n *NS) XDPAttached(t testing.TB, ifname string) bool {
	t.Helper()
	out := n.IP(t, "-d", "link", "show", "dev", ifname)
	return strings.Contains(out, "xdp") || strings.Contains(out, "prog/")
}

// MAC returns the interface's hardware address.
func (n *NS) MAC(t testing.TB, ifname string) []byte {
	t.Helper()
	out := n.IP(t, "-br", "link", "show", "dev", ifname)
	f := strings.Fields(out)
	if len(f) < 3 {
		t.Fatalf("ip -br link: %q", out)
	}
	var mac []byte
	for _, h := range strings.Split(f[2], ":") {
		v, err := hex.DecodeString(h)
		if err != nil {
			t.Fatalf("parse mac %q: %v", f[2], err)
		}
		mac = append(mac, v...)
	}
	return mac
}

// Raw is an AF_PACKET SOCK_RAW socket bound to one interface, for sending
// and capturing whole frames.
type Raw struct {
	fd      int
	ifindex int
}

// OpenRaw opens a raw packet socket on ifname inside ns (closed in
// t.Cleanup). It sees every frame on the interface, both directions.
func OpenRaw(t testing.TB, ns *NS, ifname string) *Raw {
	t.Helper()
	r := &Raw{fd: -1}
	err := ns.Do(func() error {
		ifi, err := ifindex(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		// Room for bursts of thousands of frames before the test reads.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi}); err != nil {
			unix.Close(fd)
			return err
		}
		r.fd, r.ifindex = fd, ifi
		return nil
	})
	if err != nil {
		t.Fatalf("open raw socket on %s in %s: %v", ifname, ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(r.fd) })
	return r
}

func ifindex(name string) (int, error) {
	// Never read /sys/class/net: /sys shows the namespace it was mounted in
	// (the host's), so a namespace interface named like a host one (eth0)
	// would resolve to the host's interface. The ioctl answers for the
	// calling thread's namespace.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("interface %s: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}

// Send transmits one whole frame.
func (r *Raw) Send(frame []byte) error {
	return unix.Sendto(r.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: r.ifindex, Halen: 6})
}

// Recv returns the next frame the interface received (outgoing frames are
// skipped) for which keep returns true (nil keep: any), or an error after
// timeout.
func (r *Raw) Recv(timeout time.Duration, keep func([]byte) bool) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errors.New("timeout")
		}
		pfd := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int(left.Milliseconds())+1); err != nil && err != unix.EINTR {
			return nil, err
		}
		n, from, err := unix.Recvfrom(r.fd, buf, unix.MSG_DONTWAIT)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if keep == nil || keep(buf[:n]) {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
