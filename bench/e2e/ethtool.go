package e2e

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tabbynet/tabby/bench/topo"
)

// ethtool ioctl commands (<linux/ethtool.h>); there is no ethtool binary on
// these machines.
const (
	ethtoolGTxCsum = 0x16
	ethtoolSTxCsum = 0x17
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with the ifr_data member of the union.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte
}

// setTxChecksum turns TX checksum offload of a link on or off (ethtool -K
// <if> tx on|off). Veths offload by default: a frame the kernel sends out
// then carries a partial checksum, which an AF_XDP socket on the other end
// receives as is.
func setTxChecksum(ns *topo.Netns, ifname string, on bool) error {
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		v := ethtoolValue{cmd: ethtoolSTxCsum}
		if on {
			v.data = 1
		}
		if err := ethtoolIoctl(fd, ifname, &v); err != nil {
			return fmt.Errorf("%s: ethtool -K %s tx %v: %w", ns.Node, ifname, on, err)
		}
		g := ethtoolValue{cmd: ethtoolGTxCsum}
		if err := ethtoolIoctl(fd, ifname, &g); err != nil {
			return fmt.Errorf("%s: ethtool -k %s: %w", ns.Node, ifname, err)
		}
		if (g.data != 0) != on {
			return fmt.Errorf("%s: tx checksum offload of %s still %v", ns.Node, ifname, g.data != 0)
		}
		return nil
	})
}

func ethtoolIoctl(fd int, ifname string, v *ethtoolValue) error {
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
	ifr.data = unsafe.Pointer(v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	if errno != 0 {
		return errno
	}
	return nil
}

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }
