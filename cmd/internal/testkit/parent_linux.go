package testkit

import (
	"os/exec"
	"syscall"
)

// dieWithParent asks the kernel to kill the child when the test binary
// dies, so a panicking test leaves no relay or agent behind.
func dieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
