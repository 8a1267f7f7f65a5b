package tunnel

import (
	"syscall"
	"unsafe"
)

// unreadBytes asks the kernel how many received bytes wait in the socket
// (FIONREAD, which for a socket is SIOCINQ).
func unreadBytes(rc syscall.RawConn) func() int {
	return func() int {
		var n int32
		var errno syscall.Errno
		if err := rc.Control(func(fd uintptr) {
			_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
		}); err != nil || errno != 0 {
			return 0
		}
		return int(n)
	}
}
