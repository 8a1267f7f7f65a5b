//go:build linux

package testkit

import (
	"crypto/sha256"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startChild starts this test binary as a child in the given mode and,
// unless it is one that exits at once, waits until it is ready.
func startChild(t *testing.T, mode string) *Process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	p := StartCmd(t, mode, cmd)
	if mode != "fail" {
		WaitFor(t, 10*time.Second, mode+" child ready", func() bool { return strings.Contains(p.Output(), "ready") })
	}
	return p
}

func TestStopEndsAProcessCleanly(t *testing.T) {
	p := startChild(t, "exit-on-term")
	assert.False(t, p.Exited())
	assert.NoError(t, p.Err(), "a running process has no exit result")
	require.NoError(t, p.Stop(5*time.Second))
	assert.True(t, p.Exited())
	assert.NoError(t, p.Err())
	assert.NoError(t, p.Stop(5*time.Second), "a second Stop has nothing to report")
}

func TestStopKillsAProcessThatIgnoresTerm(t *testing.T) {
	p := startChild(t, "ignore-term")
	err := p.Stop(200 * time.Millisecond)
	require.Error(t, err)
	assert.Equal(t, "ignore-term ignored SIGTERM for 200ms and was killed", err.Error())
	assert.True(t, p.Exited())
}

func TestStopForcedSendsASecondTerm(t *testing.T) {
	p := startChild(t, "drain-then-exit")
	require.NoError(t, p.StopForced(200*time.Millisecond, 5*time.Second))
	assert.Contains(t, p.Output(), "draining")
}

func TestStopReportsTheExitStatus(t *testing.T) {
	p := startChild(t, "fail")
	<-p.Done()
	err := p.Stop(time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "fail exit after SIGTERM: exit status 3")
	assert.Contains(t, p.Output(), "giving up")
}

func TestStopResumesAFrozenProcess(t *testing.T) {
	p := startChild(t, "exit-on-term")
	p.Signal(t, syscall.SIGSTOP)
	assert.NoError(t, p.Stop(5*time.Second))
}

func TestKillCountsAsStopped(t *testing.T) {
	p := startChild(t, "ignore-term")
	p.Kill()
	assert.True(t, p.Exited())
	assert.Error(t, p.Err(), "killed")
	assert.NoError(t, p.Stop(time.Second))
}

func TestResourceReadings(t *testing.T) {
	p := startChild(t, "exit-on-term")
	u, err := p.Usage()
	require.NoError(t, err)
	assert.Positive(t, u.RSSKiB)
	assert.GreaterOrEqual(t, u.HWMKiB, u.RSSKiB)
	assert.Positive(t, u.Threads)
	assert.GreaterOrEqual(t, u.FDs, 3, "stdin, stdout, stderr")
	// The child is still starting, so its peak may grow between readings:
	// PeakRSS, in bytes, lies between the peaks read before and after it.
	peak, err := p.PeakRSS()
	require.NoError(t, err)
	after, err := p.Usage()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, peak, u.HWMKiB<<10)
	assert.LessOrEqual(t, peak, after.HWMKiB<<10)
	cpu, err := p.CPUTime()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, cpu, time.Duration(0))

	require.NoError(t, p.Stop(5*time.Second))
	_, err = ReadUsage(p.Pid())
	assert.Error(t, err, "a reaped process has no /proc entry")
}

// The echo server answers the digest of what it read and then as many
// bytes of NewPattern(EchoSeed).
func TestEchoServer(t *testing.T) {
	c, err := net.Dial("tcp", EchoServer(t))
	require.NoError(t, err)
	defer c.Close()
	const n = 100 << 10
	sent := sha256.New()
	_, err = io.Copy(io.MultiWriter(c, sent), io.LimitReader(NewPattern(3), n))
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())

	answer, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Len(t, answer, sha256.Size+n)
	assert.Equal(t, sent.Sum(nil), answer[:sha256.Size])
	want := make([]byte, n)
	_, _ = NewPattern(EchoSeed).Read(want)
	assert.Equal(t, want, answer[sha256.Size:])
}

func TestFreeAddrCanBeListenedOn(t *testing.T) {
	addr := FreeAddr(t)
	assert.True(t, strings.HasPrefix(addr, "127.0.0.1:"))
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	require.NoError(t, ln.Close())
}

func TestWaitForReturnsHowLongItTook(t *testing.T) {
	start := time.Now()
	took := WaitFor(t, 5*time.Second, "a quarter second passed", func() bool { return time.Since(start) > 250*time.Millisecond })
	assert.GreaterOrEqual(t, took, 250*time.Millisecond)
	assert.Less(t, took, 5*time.Second)
}
