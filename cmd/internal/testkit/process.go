package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// OutputLimit is how much of a process's combined output a Process keeps:
// the last MiB. A soak test runs a binary at debug level for minutes;
// keeping all of it would grow without bound, and the tail is what
// explains a failure.
const OutputLimit = 1 << 20

// DefaultGrace is how long the cleanup Start registers gives a process to
// exit after SIGTERM before it kills it.
const DefaultGrace = 15 * time.Second

// failedTail is how much output the cleanup logs when the test failed.
const failedTail = 4000

// Process is a started binary with its stdout and stderr captured
// together.
type Process struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid once done is closed

	stopOnce sync.Once
}

// Start runs bin with args; see StartCmd.
func Start(tb testing.TB, name, bin string, args ...string) *Process {
	tb.Helper()
	return StartCmd(tb, name, exec.Command(bin, args...))
}

// StartCmd starts cmd, which the caller may have given an environment or
// a working directory, and names it name in messages. Its output goes to a
// buffer that keeps the last OutputLimit bytes. On Linux the child gets
// SIGKILL if the test binary dies without running its cleanups (a -timeout
// panic). When the test ends, a cleanup stops it (Stop with DefaultGrace)
// unless the test did, and logs the tail of its output if the test failed.
// That cleanup does not judge how the process exited; a package that
// checks it registers its own cleanup after StartCmd, which runs first,
// and reports what Stop returns.
func StartCmd(tb testing.TB, name string, cmd *exec.Cmd) *Process {
	tb.Helper()
	out := newTailBuffer(OutputLimit)
	cmd.Stdout, cmd.Stderr = out, out // one writer: no interleaving races
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &Process{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		_ = p.Stop(DefaultGrace)
		if tb.Failed() {
			tb.Logf("%s output (tail):\n%s", name, tail(out.String(), failedTail))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// Name is the name the process was started with.
func (p *Process) Name() string { return p.name }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output returns what the process printed so far, up to the last
// OutputLimit bytes.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process exited (Wait's result); nil while it runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Exited says whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process; failing to is a test bug, so it fails
// the test.
func (p *Process) Signal(tb testing.TB, sig os.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// Kill ends the process with SIGKILL, as a crash or kill -9 would, and
// waits for it. A killed process counts as stopped: Stop then returns nil.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
	p.stopOnce.Do(func() {})
}

// Stop asks the process to exit with SIGTERM, the way a service manager
// does, and waits up to grace; a process still running then is killed.
// It returns nil when the process exited cleanly, and otherwise says what
// happened: the exit status after SIGTERM, or that it had to be killed.
// A process that had already exited is judged by its exit status.
// A process a test froze with SIGSTOP is resumed first.
//
// Only the first Stop (or Kill) acts and reports; later calls return nil
// at once, so a test may stop a process early and its cleanup stays quiet.
func (p *Process) Stop(grace time.Duration) error {
	return p.stop(grace)
}

// StopForced is Stop for a process that may be draining streams: if it is
// still running drain after SIGTERM, it gets a second SIGTERM, which both
// Postern commands read as "stop now, cut open streams"
// (cmd/internal/stopsignal), and grace more before it is killed.
func (p *Process) StopForced(drain, grace time.Duration) error {
	return p.stop(drain, grace)
}

// stop sends one SIGTERM per wait and waits that long for the exit after
// each, then kills.
func (p *Process) stop(waits ...time.Duration) error {
	var err error
	p.stopOnce.Do(func() { err = p.terminate(waits) })
	return err
}

func (p *Process) terminate(waits []time.Duration) error {
	resume(p.cmd.Process)
	var waited time.Duration
	for _, wait := range waits {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.err != nil {
				return fmt.Errorf("%s exit after SIGTERM: %w", p.name, p.err)
			}
			return nil
		case <-time.After(wait):
			waited += wait
		}
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s ignored SIGTERM for %s and was killed", p.name, waited)
}
