//go:build unix

package tunnel

import "syscall"

const canWriteDirect = true

// writeNow is one write(2) on a non-blocking socket.
func writeNow(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }
