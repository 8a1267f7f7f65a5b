package faults

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// binaries builds postern-relay and postern-agent once per test binary.
var binaries builtBinaries

type builtBinaries struct {
	once  sync.Once
	dir   string
	err   error
	relay string
	agent string
}

func (b *builtBinaries) get(t *testing.T) (relayBin, agentBin string) {
	t.Helper()
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "postern-faults-bin-")
		if b.err != nil {
			return
		}
		for _, name := range []string{"postern-relay", "postern-agent"} {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(b.dir, name), "github.com/postern/postern/cmd/"+name)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				b.err = fmt.Errorf("build %s: %w\n%s", name, err, out)
				return
			}
		}
		b.relay, b.agent = filepath.Join(b.dir, "postern-relay"), filepath.Join(b.dir, "postern-agent")
	})
	require.NoError(t, b.err)
	return b.relay, b.agent
}

func (b *builtBinaries) remove() {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// proc is a running binary with its combined output captured.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

// lockedBuffer serializes writes from a child's stdout and stderr.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startProc starts bin and registers a cleanup that stops it. On a failed
// test the tail of its output is logged.
func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", name, tail(out.String(), 4000))
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

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig), "signal %v to %s", sig, p.name)
}

// kill ends the process with SIGKILL and waits for it.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop resumes a stopped process and asks it to exit with SIGTERM. A
// process still draining streams after 5 s gets the second signal that
// forces the stop, and SIGKILL 10 s after that.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGTERM, 5 * time.Second}, {syscall.SIGTERM, 10 * time.Second}, {syscall.SIGKILL, time.Minute}} {
		_ = p.cmd.Process.Signal(step.sig)
		select {
		case <-p.done:
			return
		case <-time.After(step.wait):
			t.Logf("%s still running %s after %v", p.name, step.wait, step.sig)
		}
	}
}

// usage is what /proc says about a process at one moment.
type usage struct {
	RSSKiB  int64 // VmRSS
	HWMKiB  int64 // VmHWM, the peak RSS so far
	Threads int64
	FDs     int
}

func (u usage) String() string {
	return fmt.Sprintf("rss=%.1fMiB peak=%.1fMiB threads=%d fds=%d", float64(u.RSSKiB)/1024, float64(u.HWMKiB)/1024, u.Threads, u.FDs)
}

// usage reads /proc/PID/status and counts /proc/PID/fd.
func (p *proc) usage(t *testing.T) usage {
	t.Helper()
	u, err := readUsage(p.pid())
	require.NoError(t, err, "read /proc of %s", p.name)
	return u
}

func readUsage(pid int) (usage, error) {
	var u usage
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			u.RSSKiB = n
		case "VmHWM":
			u.HWMKiB = n
		case "Threads":
			u.Threads = n
		}
	}
	if err := sc.Err(); err != nil {
		return u, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return u, err
	}
	u.FDs = len(fds)
	if u.RSSKiB == 0 {
		return u, errors.New("no VmRSS: process gone")
	}
	return u, nil
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}
