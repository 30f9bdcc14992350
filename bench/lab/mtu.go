package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// checkMTU checks the path MTU between pods on different nodes (through
// the tunnel when there is one), DF set: a packet of exactly the pod MTU
// passes (ICMP echo and UDP), one byte more is refused, with ICMP
// fragmentation-needed or the sender's own EMSGSIZE, never silently lost.
func (e *checkEnv) checkMTU(ctx context.Context, w io.Writer, rep *Report) {
	mtu := e.st.Config.MTU()
	var pairs [][2]Pod
	seen := map[string]bool{}
	for _, a := range e.st.Pods {
		for _, b := range e.st.Pods {
			k := e.pathKind(a, b)
			if a.Name == b.Name || k == "same-node" || seen[k] {
				continue
			}
			seen[k] = true
			pairs = append(pairs, [2]Pod{a, b})
		}
	}
	if len(pairs) == 0 {
		rep.add("mtu", false, "no two pods on different nodes")
		return
	}
	for _, pr := range pairs {
		a, b := pr[0], pr[1]
		row := fmt.Sprintf("mtu %s", e.pathKind(a, b))
		podMTU, err := ifaceMTU(a.Netns, "eth0")
		if err != nil {
			rep.add(row, false, err.Error())
			continue
		}
		if podMTU != mtu {
			rep.add(row, false, fmt.Sprintf("%s eth0 MTU %d, want %d for encap %s", a.Name, podMTU, mtu,
				e.st.Config.Encap))
			continue
		}
		var problems []string
		fit, over := mtu-28, mtu-27 // ICMP or UDP payload: MTU - 20 (IPv4) - 8
		var err1 error
		for try := 0; try < 3; try++ {
			if err1 = pingDF(ctx, a, b, fit); err1 == nil {
				break
			}
		}
		if err1 != nil {
			problems = append(problems, fmt.Sprintf("ping %d B with DF failed: %v", fit, err1))
		}
		for try := 0; try < 3; try++ {
			if err1 = udpDF(a, b, fit); err1 == nil {
				break
			}
		}
		if err1 != nil {
			problems = append(problems, fmt.Sprintf("UDP %d B with DF failed: %v", fit, err1))
		}
		pingHow, err := pingOver(ctx, a, b, over)
		if err != nil {
			problems = append(problems, err.Error())
		}
		udpHow, err := udpOver(a, b, over)
		if err != nil {
			problems = append(problems, err.Error())
		}
		detail := fmt.Sprintf("%s->%s MTU %d: %d B ping+UDP pass; %d B refused (ping: %s, UDP: %s)", a.Name, b.Name,
			mtu, fit, over, pingHow, udpHow)
		if len(problems) > 0 {
			detail = fmt.Sprintf("%s->%s MTU %d: %s", a.Name, b.Name, mtu, strings.Join(problems, "; "))
		}
		rep.add(row, len(problems) == 0, detail)
		fmt.Fprintln(w, row+": "+detail)
	}
}

// ifaceMTU reads an interface's MTU inside a namespace.
func ifaceMTU(netns, ifname string) (int, error) {
	var mtu int
	err := inNetns(netns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		mtu = ifi.MTU
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", netns, ifname, err)
	}
	return mtu, nil
}

func pingDF(ctx context.Context, a, b Pod, size int) error {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", a.Netns, "ping", "-c", "1", "-W", "1", "-M", "do",
		"-s", fmt.Sprint(size), b.IP).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, lastLine(string(out)))
	}
	return nil
}

// pingOver pings with DF and a payload one byte over the MTU: it must be
// refused with an error, not time out.
func pingOver(ctx context.Context, a, b Pod, size int) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", a.Netns, "ping", "-c", "1", "-W", "1", "-M", "do",
		"-s", fmt.Sprint(size), b.IP).CombinedOutput()
	s := strings.ToLower(string(out))
	switch {
	case err == nil:
		return "", fmt.Errorf("ping %d B with DF passed: the path carries more than the pod MTU", size)
	case strings.Contains(s, "frag needed"):
		return "ICMP frag-needed", nil
	case strings.Contains(s, "message too long"):
		return "local EMSGSIZE", nil
	}
	return "", fmt.Errorf("ping %d B with DF: no error, silently lost: %s", size, lastLine(string(out)))
}

// dialDF opens a UDP socket with DF set (IP_PMTUDISC_DO) and ICMP errors
// reported (IP_RECVERR) in pod a, connected to b's echo server.
func dialDF(a, b Pod) (net.Conn, error) {
	var c net.Conn
	err := inNetns(a.Netns, func() error {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DO)
				if serr == nil {
					serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVERR, 1)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}}
		var err error
		c, err = d.Dial("udp4", net.JoinHostPort(b.IP, fmt.Sprint(CheckPort)))
		return err
	})
	return c, err
}

func udpDF(a, b Pod, size int) error {
	c, err := dialDF(a, b)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i)
	}
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, size+100)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("echo of %d B came back as %d B", size, n)
	}
	return nil
}

// udpOver sends one datagram one byte over the MTU with DF: it must be
// refused by the sender (EMSGSIZE on write), or reported by ICMP
// frag-needed (EMSGSIZE on read, or on the next write once the path MTU
// dropped).
func udpOver(a, b Pod, size int) (string, error) {
	c, err := dialDF(a, b)
	if err != nil {
		return "", err
	}
	defer c.Close()
	msg := make([]byte, size)
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(msg); errors.Is(err, syscall.EMSGSIZE) {
		return "local EMSGSIZE", nil
	} else if err != nil {
		return "", fmt.Errorf("UDP %d B with DF: %v", size, err)
	}
	buf := make([]byte, size+100)
	n, err := c.Read(buf)
	switch {
	case errors.Is(err, syscall.EMSGSIZE):
		return "ICMP frag-needed", nil
	case err == nil:
		return "", fmt.Errorf("UDP %d B with DF passed (%d B back): the path carries more than the pod MTU", size, n)
	}
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(msg); errors.Is(err, syscall.EMSGSIZE) {
		return "ICMP frag-needed (path MTU lowered)", nil
	}
	return "", fmt.Errorf("UDP %d B with DF: no error, silently lost", size)
}
