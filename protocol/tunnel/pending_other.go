//go:build !linux

package tunnel

import "syscall"

// unreadBytes is nil where the count is not asked: a splice then reads
// one TLS record at a time.
func unreadBytes(syscall.RawConn) func() int { return nil }
