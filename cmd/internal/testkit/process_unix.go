//go:build unix

package testkit

import (
	"os"
	"syscall"
)

// resume continues a process a test froze with SIGSTOP, so that it can act
// on the signals that stop it.
func resume(p *os.Process) { _ = p.Signal(syscall.SIGCONT) }
