//go:build !unix

package testkit

import "os"

// resume does nothing where processes cannot be frozen with SIGSTOP.
func resume(*os.Process) {}
