// Package ethtool changes interface offload settings through the
// SIOCETHTOOL ioctl, without the ethtool binary.
package ethtool

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// SetTxChecksum turns TX checksum offload of an interface of the calling
// thread's network namespace on or off (ETHTOOL_STXCSUM: what `ethtool -K
// <if> tx off` does). Turning it off also turns off what depends on it
// (TSO, GSO of checksummed protocols).
func SetTxChecksum(ifname string, on bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	v := &struct{ cmd, data uint32 }{cmd: unix.ETHTOOL_STXCSUM}
	if on {
		v.data = 1
	}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(v)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return errno
	}
	return nil
}
