package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
)

// demoReady is the last line `make run` prints before it waits for Ctrl-C.
const demoReady = "Ctrl-C stops everything."

// demoGoodbye starts the one line the demo prints when Ctrl-C stops it.
const demoGoodbye = "demo stopped: relay, agent and demo target are down"

// demoEnv is what scripts/demo.sh needs to run beside anything else: the
// binaries the tests built (and demotarget), a state directory of its own
// and four free ports.
func demoEnv(t *testing.T) []string {
	t.Helper()
	relayBin, agentBin := testkit.Binaries(t)
	bin := t.TempDir()
	require.NoError(t, os.Symlink(relayBin, filepath.Join(bin, "postern-relay")))
	require.NoError(t, os.Symlink(agentBin, filepath.Join(bin, "postern-agent")))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, "demotarget"),
		"github.com/postern/postern/scripts/demotarget")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build demotarget: %s", out)
	env := append(os.Environ(), "POSTERN_DEMO_BIN="+bin, "POSTERN_DEMO_DIR="+filepath.Join(t.TempDir(), "run"))
	for _, name := range []string{"RELAY", "PROXY", "TARGET", "STATUS"} {
		_, port, err := net.SplitHostPort(testkit.FreeAddr(t))
		require.NoError(t, err)
		env = append(env, "POSTERN_DEMO_"+name+"_PORT="+port)
	}
	return env
}

// demoScript is scripts/demo.sh, which `make run` runs.
func demoScript(t *testing.T) string {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "demo.sh"))
	require.NoError(t, err)
	return script
}

// demoCommands returns the command lines the demo printed for the reader
// to paste: indented lines that start with curl or an absolute path.
func demoCommands(out string) []string {
	var cmds []string
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\r\n")
		if !strings.HasPrefix(line, "  ") {
			continue
		}
		cmd := strings.TrimSpace(line)
		if strings.HasPrefix(cmd, "curl ") || strings.HasPrefix(cmd, "/") {
			cmds = append(cmds, cmd)
		}
	}
	return cmds
}

// TestDemoCommandsWorkAndCtrlCSaysGoodbye runs `make run`'s script as a
// real process, pastes every command it printed into a shell in another
// directory with none of the demo's environment, and then stops it with
// SIGINT: it exits 0 with its one-line goodbye and leaves nothing running.
func TestDemoCommandsWorkAndCtrlCSaysGoodbye(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("the demo needs curl, which is not installed")
	}
	env := demoEnv(t)
	cmd := exec.Command(demoScript(t))
	cmd.Env = env
	demo := testkit.StartCmd(t, "demo.sh", cmd)
	testkit.WaitFor(t, 90*time.Second, "demo ready", func() bool {
		require.False(t, demo.Exited(), "demo exited early: %v\n%s", demo.Err(), demo.Output())
		return strings.Contains(demo.Output(), demoReady)
	})

	cmds := demoCommands(demo.Output())
	require.GreaterOrEqual(t, len(cmds), 8, "commands printed:\n%s", demo.Output())
	for _, line := range cmds {
		assertPastedCommandWorks(t, line)
	}

	demo.Signal(t, syscall.SIGINT)
	select {
	case <-demo.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("demo still running 30s after SIGINT:\n%s", demo.Output())
	}
	require.NoError(t, demo.Err(), "exit status after SIGINT:\n%s", demo.Output())
	lines := strings.Split(strings.TrimSpace(demo.Output()), "\n")
	assert.True(t, strings.HasPrefix(lines[len(lines)-1], demoGoodbye), "last line: %q", lines[len(lines)-1])
	assertDemoPortsClosed(t, env)
}

// assertPastedCommandWorks runs line in a fresh bash, from a directory
// that is not the repository's, without the demo's environment.
func assertPastedCommandWorks(t *testing.T, line string) {
	t.Helper()
	cmd := exec.Command("bash", "-c", line)
	cmd.Dir = t.TempDir()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POSTERN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if strings.Contains(line, "10.1.2.3") {
		// The refused CONNECT: curl fails, and -v shows why.
		assert.Contains(t, string(out), "< HTTP/1.1 403", "pasted: %s", line)
		assert.Contains(t, string(out), "< Postern-Reason: ALLOWLIST_MISSING", "pasted: %s", line)
		return
	}
	assert.NoError(t, err, "pasted: %s\n%s", line, out)
}

// assertDemoPortsClosed checks that relay, proxy, target and the agent's
// status listener are gone.
func assertDemoPortsClosed(t *testing.T, env []string) {
	t.Helper()
	for _, kv := range env {
		name, port, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "POSTERN_DEMO_") || !strings.HasSuffix(name, "_PORT") {
			continue
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
		if err == nil {
			c.Close()
		}
		assert.Error(t, err, "%s %s still listening after the demo stopped", name, port)
	}
}
