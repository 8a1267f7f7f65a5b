package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/postern/postern/cmd/internal/testkit"
)

// TestMakeRunCtrlCInTerminal is `make run` the way a user runs it: make
// in a terminal, Ctrl-C typed into it. The terminal sends SIGINT to its
// whole foreground process group; make must still end with exit 0 and the
// demo's goodbye, not "make: *** [run] Error 130".
func TestMakeRunCtrlCInTerminal(t *testing.T) {
	for _, tool := range []string{"make", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("this test needs %s, which is not installed", tool)
		}
	}
	env := demoEnv(t)
	makefile := filepath.Join(t.TempDir(), "Makefile")
	// The Makefile's run target, minus the build the test kit has done.
	require.NoError(t, os.WriteFile(makefile, fmt.Appendf(nil, ".PHONY: run\nrun:\n\t@%s\n", demoScript(t)), 0o600))

	term, tty := openPTY(t)
	cmd := exec.Command("make", "-f", makefile, "run")
	cmd.Env = outsideMake(env)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	require.NoError(t, cmd.Start())
	tty.Close()
	screen := &lockedBuffer{}
	read := make(chan struct{})
	go func() { // ends when the terminal's last user is gone (EIO)
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := term.Read(buf)
			screen.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	testkit.WaitFor(t, 90*time.Second, "demo ready in the terminal", func() bool {
		return strings.Contains(screen.String(), demoReady)
	})
	_, err := term.Write([]byte{0x03}) // Ctrl-C, as typed
	require.NoError(t, err)
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("make still running 30s after Ctrl-C:\n%s", screen.String())
	}
	<-read
	out := strings.ReplaceAll(screen.String(), "\r", "")
	require.NoError(t, err, "make's exit after Ctrl-C; terminal:\n%s", out)
	assert.NotContains(t, out, "make: ***")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	assert.True(t, strings.HasPrefix(lines[len(lines)-1], demoGoodbye), "last line: %q", lines[len(lines)-1])
	assertDemoPortsClosed(t, env)
}

// outsideMake is env without what a make running these tests passes to
// its children (make test), so the make under test behaves as one a user
// starts in a terminal and prints no "make[1]: Leaving directory".
func outsideMake(env []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKE_TERMOUT", "MAKE_TERMERR", "MAKEOVERRIDES":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// openPTY opens a pseudo-terminal: term is the side a terminal emulator
// holds, tty the one a shell gets as its controlling terminal.
func openPTY(t *testing.T) (term, tty *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	require.NoError(t, err, "open /dev/ptmx")
	term = os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { term.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0), "unlock pty")
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	require.NoError(t, err, "pty number")
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err, "open pty")
	return term, tty
}

// lockedBuffer is a bytes.Buffer one goroutine writes and the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
