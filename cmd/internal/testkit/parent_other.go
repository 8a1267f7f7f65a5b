//go:build !linux

package testkit

import "os/exec"

// dieWithParent does nothing where the kernel has no parent-death signal;
// there the cleanups Start registers are the only stop.
func dieWithParent(*exec.Cmd) {}
