package afxdp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Constants from <linux/if_xdp.h> and <linux/bpf.h>.
const (
	// xdpPacketHeadroom is XDP_PACKET_HEADROOM: the kernel places
	// received data this far into a frame (after the registered headroom).
	xdpPacketHeadroom = unix.XDP_PACKET_HEADROOM
	// xdpMaxTxSkbBudget is the XDP_MAX_TX_SKB_BUDGET socket option (Linux
	// 6.17): how many descriptors one copy-mode sendto may send, from
	// TX_BATCH_SIZE (32, the default) up to the TX ring size.
	xdpMaxTxSkbBudget = 9
	// copyModeTxBatch is the kernel's TX_BATCH_SIZE.
	copyModeTxBatch = 32
	// ethHeaderLen is the shortest frame the port accepts.
	ethHeaderLen = 14
)

func getsockopt(fd, level, opt int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func setsockopt(fd, level, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(p), size, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// sendtoKick is sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0): it asks the
// kernel to process the TX ring. It does not allocate.
func sendtoKick(fd int) unix.Errno {
	_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return errno
}

// recvfromWake is recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL): it wakes
// a driver that set need_wakeup on the fill ring.
func recvfromWake(fd int) unix.Errno {
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return errno
}
