package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopTimeout bounds how long a binary may take to exit after SIGTERM.
const stopTimeout = 15 * time.Second

// buildBinaries builds both commands into a temporary directory, static,
// the way they ship.
func buildBinaries(tb testing.TB) (relayBin, agentBin string) {
	tb.Helper()
	dir := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, name := range []string{"postern-relay", "postern-agent"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(dir, name),
			"github.com/postern/postern/cmd/"+name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	return filepath.Join(dir, "postern-relay"), filepath.Join(dir, "postern-agent")
}

// process is one started binary. Its output is kept only as a tail, so a
// long run cannot grow memory without bound.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
	once sync.Once
}

func startProcess(tb testing.TB, name, bin string, args ...string) *process {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	out := newTailBuffer(64 << 10)
	cmd.Stdout, cmd.Stderr = out, out
	// If the bench binary dies without running its cleanups (a -timeout
	// panic), the kernel still ends the child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		if err := p.stop(); err != nil {
			tb.Errorf("%v\n%s output (tail):\n%s", err, name, out)
		}
	})
	return p
}

// stop sends SIGTERM and waits for the exit; a process that ignores it is
// killed after stopTimeout. Safe to call more than once.
func (p *process) stop() error {
	var err error
	p.once.Do(func() {
		select {
		case <-p.done:
			err = fmt.Errorf("%s exited before it was stopped: %v", p.name, p.err)
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.err != nil {
				err = fmt.Errorf("%s exit after SIGTERM: %w", p.name, p.err)
			}
		case <-time.After(stopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.done
			err = fmt.Errorf("%s ignored SIGTERM for %s and was killed", p.name, stopTimeout)
		}
	})
	return err
}

// peakRSS reads the process's resident-set high-water mark (VmHWM).
func (p *process) peakRSS() (int64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("%s peak rss: %w", p.name, err)
	}
	return parseVmHWM(string(data))
}

var errNoVmHWM = errors.New("no VmHWM line in /proc status")

// parseVmHWM returns the VmHWM value of a /proc/PID/status text in bytes.
func parseVmHWM(status string) (int64, error) {
	for line := range strings.Lines(status) {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("VmHWM line %q: unexpected format", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmHWM line %q: %w", strings.TrimSpace(line), err)
		}
		return kb << 10, nil
	}
	return 0, errNoVmHWM
}

// clockTick is the unit of utime and stime in /proc/PID/stat. USER_HZ is
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuTime reads the CPU time (user + system) the process has used so far.
func (p *process) cpuTime() (time.Duration, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("%s cpu time: %w", p.name, err)
	}
	return parseCPUTime(string(data))
}

// parseCPUTime returns utime + stime of a /proc/PID/stat line. The
// command name in parentheses may hold spaces and parentheses, so fields
// are counted from the last ')'.
func parseCPUTime(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no command name")
	}
	// After the name: state (field 3) ... utime (14), stime (15).
	fields := strings.Fields(stat[i+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the name, want at least 13", len(fields))
	}
	var total int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("/proc stat: cpu field %q is not a tick count", f)
		}
		total += n
	}
	return time.Duration(total) * clockTick, nil
}

// tailBuffer is an io.Writer that keeps the last limit bytes written.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func newTailBuffer(limit int) *tailBuffer { return &tailBuffer{limit: limit} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
