package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/bench/topo"
)

// routeBatch is how many RTM_NEWROUTE messages go into one sendmsg.
const routeBatch = 1024

// routeMsgLen is one RTM_NEWROUTE message: nlmsghdr, rtmsg, RTA_DST,
// RTA_GATEWAY and RTA_OIF attributes.
const routeMsgLen = unix.SizeofNlMsghdr + unix.SizeofRtMsg + 3*(unix.SizeofRtAttr+4)

// loadKernelRoutes installs every prefix as a unicast route via gw out of
// ifname in ns's main table, through an rtnetlink socket opened inside ns.
// Messages go out routeBatch per sendmsg, each asking for an ack; the kernel
// handles a sendmsg synchronously, so the acks of a batch are read right
// after it. An existing route for a prefix is replaced.
func loadKernelRoutes(ns *topo.Netns, prefixes []netip.Prefix, gw netip.Addr, ifname string) error {
	link, err := ns.Link(ifname)
	if err != nil {
		return err
	}
	oif := uint32(link.Attrs().Index)
	var fd int
	if err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	}); err != nil {
		return fmt.Errorf("%s: rtnetlink socket: %w", ns.Node, err)
	}
	defer unix.Close(fd)
	// Room for a batch of acks (each skb costs far more than its 36 bytes).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20); err != nil {
		return fmt.Errorf("rtnetlink rcvbuf: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20); err != nil {
		return fmt.Errorf("rtnetlink sndbuf: %w", err)
	}
	// Acks carry only the header of a failed request, not all of it.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("rtnetlink bind: %w", err)
	}
	buf := make([]byte, 0, routeBatch*routeMsgLen)
	rbuf := make([]byte, 1<<20)
	gw4 := gw.As4()
	seq := uint32(1)
	for start := 0; start < len(prefixes); start += routeBatch {
		batch := prefixes[start:min(start+routeBatch, len(prefixes))]
		buf = buf[:0]
		first := seq
		for _, p := range batch {
			buf = appendRouteMsg(buf, seq, p, gw4, oif)
			seq++
		}
		if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("rtnetlink send: %w", err)
		}
		if err := readAcks(fd, rbuf, first, seq, batch); err != nil {
			return fmt.Errorf("%s: %w", ns.Node, err)
		}
	}
	return nil
}

// appendRouteMsg appends one RTM_NEWROUTE request.
func appendRouteMsg(b []byte, seq uint32, p netip.Prefix, gw [4]byte, oif uint32) []byte {
	le := binary.LittleEndian // netlink is host byte order (amd64, arm64)
	b = le.AppendUint32(b, routeMsgLen)
	b = le.AppendUint16(b, unix.RTM_NEWROUTE)
	b = le.AppendUint16(b, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	b = le.AppendUint32(b, seq)
	b = le.AppendUint32(b, 0)
	// struct rtmsg
	b = append(b, unix.AF_INET, byte(p.Bits()), 0, 0,
		unix.RT_TABLE_MAIN, unix.RTPROT_STATIC, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST)
	b = le.AppendUint32(b, 0) // rtm_flags
	attr := func(b []byte, typ uint16, v [4]byte) []byte {
		b = le.AppendUint16(b, unix.SizeofRtAttr+4)
		b = le.AppendUint16(b, typ)
		return append(b, v[:]...)
	}
	b = attr(b, unix.RTA_DST, p.Masked().Addr().As4())
	b = attr(b, unix.RTA_GATEWAY, gw)
	var o [4]byte
	le.PutUint32(o[:], oif)
	return attr(b, unix.RTA_OIF, o)
}

// readAcks reads acks until every sequence number in [first, end) was
// answered, and returns the first error the kernel reported.
func readAcks(fd int, rbuf []byte, first, end uint32, batch []netip.Prefix) error {
	want := int(end - first)
	var errs []error
	for got := 0; got < want; {
		n, _, err := unix.Recvfrom(fd, rbuf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("rtnetlink recv: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(rbuf[:n])
		if err != nil {
			return fmt.Errorf("rtnetlink parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq < first || m.Header.Seq >= end {
				continue
			}
			got++
			if len(m.Data) < 4 {
				continue
			}
			if code := int32(binary.LittleEndian.Uint32(m.Data)); code != 0 && len(errs) < 3 {
				errs = append(errs, fmt.Errorf("route %v: %w", batch[m.Header.Seq-first], unix.Errno(-code)))
			}
		}
	}
	return errors.Join(errs...)
}
