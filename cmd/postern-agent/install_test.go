package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/installer"
)

const installTestToken = "pat_installcmdaaaaaa_bmV2ZXJQcmludFRoaXNTZWNyZXRWYWx1ZS0tLS0tLS0" // of the issued shape, made up

// serviceManagerHere says whether a real service manager runs on this
// machine: systemd as PID 1, answering `systemctl is-system-running`.
func serviceManagerHere() (bool, string) {
	if err := installer.RealHost().CheckServiceManager(); err != nil {
		return false, err.Error()
	}
	out, _ := exec.Command("systemctl", "is-system-running").Output()
	switch state := strings.TrimSpace(string(out)); state {
	case "running", "degraded":
		return true, ""
	default:
		return false, fmt.Sprintf("systemctl is-system-running answers %q", state)
	}
}

// TestServiceLifecycleOnThisMachine installs, starts, stops and removes the
// agent service with the service manager of this machine, against a relay
// it starts, and leaves the machine as it found it. Where no service
// manager can run (a container), it says so and drives the same commands
// against a temporary root with a recording service manager instead.
func TestServiceLifecycleOnThisMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installing a service needs root; run as root (CI does)")
	}
	if ok, why := serviceManagerHere(); !ok {
		t.Logf("no service manager can run here (%s); checking install, idempotency, start/stop and uninstall --purge against a temporary root instead", why)
		tempRootLifecycle(t)
		return
	}
	realLifecycle(t)
}

// runCmds executes one command line against a fresh set of the service
// commands (fresh flags each time, as in a new process).
func runCmds(t *testing.T, newCmds func() []*cobra.Command, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "postern-agent", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newCmds()...)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func tempRootLifecycle(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc/systemd/system", "usr/local/bin", "var/lib", "var/log"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	before := snapshotTree(t, root)
	exe, err := os.Executable()
	require.NoError(t, err)
	mgr := &recordingManager{state: installer.StateNotInstalled}
	newInstaller := func(log *slog.Logger) *installer.Installer {
		return installer.New(installer.Options{
			Root:  root,
			Paths: installer.DefaultPaths("linux"),
			Host: &installer.Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": {Data: []byte("systemd")}},
				Privileged: func() bool { return true }},
			Manager: mgr,
			EnsureUser: func(_ context.Context, name string) (installer.Account, error) {
				return installer.Account{Name: name, UID: 4242, GID: 4343}, nil
			},
			Executable: exe,
			Getenv:     func(string) (string, bool) { return "", false },
			Logger:     log,
		})
	}
	cmds := func() []*cobra.Command { return serviceCmds(newInstaller) }

	src := t.TempDir()
	cfg := filepath.Join(src, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("relay_url: wss://relay.example.com\nallow:\n  - host: gitlab.corp.example\n    ports: [443]\n"), 0o644))
	tok := filepath.Join(src, "token")
	require.NoError(t, os.WriteFile(tok, []byte(installTestToken), 0o600))

	bad := filepath.Join(src, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("relay_url: wss://relay.example.com\nalow: []\n"), 0o644))
	_, err = runCmds(t, cmds, "install", "--config", bad, "--token-file", tok)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bad.yaml:2:", "problems are listed with their line")
	assert.Equal(t, before, snapshotTree(t, root), "an invalid config installs nothing")

	out, err := runCmds(t, cmds, "install", "--config", cfg, "--token-file", tok)
	require.NoError(t, err, out)
	assert.Contains(t, out, "installed; start it with: postern-agent start")
	assert.NotContains(t, out, installTestToken)
	t.Logf("install wrote:\n%s", out)
	for name, mode := range map[string]fs.FileMode{
		"etc/postern/agent.yaml":                   0o640,
		"etc/postern/agent.token":                  0o600,
		"etc/postern/agent.env":                    0o640,
		"usr/local/bin/postern-agent":              0o755,
		"etc/systemd/system/postern-agent.service": 0o644,
	} {
		fi, err := os.Stat(filepath.Join(root, name))
		require.NoError(t, err, name)
		assert.Equal(t, mode, fi.Mode().Perm(), name)
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/postern-agent.service"))
	require.NoError(t, err)
	assert.Contains(t, string(unit), "ExecStart=/usr/local/bin/postern-agent run --config /etc/postern/agent.yaml\n")
	assert.Contains(t, string(unit), "User=postern\n")
	assert.NotContains(t, string(unit), installTestToken)

	out, err = runCmds(t, cmds, "install")
	require.NoError(t, err, out)
	assert.Contains(t, out, "already installed and up to date")

	for _, step := range []struct{ args, want string }{
		{"start", "postern-agent: running"},
		{"restart", "postern-agent: running"},
		{"stop", "postern-agent: stopped"},
	} {
		out, err = runCmds(t, cmds, step.args)
		require.NoError(t, err, out)
		assert.Contains(t, out, step.want)
	}

	out, err = runCmds(t, cmds, "uninstall")
	require.NoError(t, err, out)
	assert.Contains(t, out, "--purge")
	assert.FileExists(t, filepath.Join(root, "etc/postern/agent.yaml"))
	assert.NoFileExists(t, filepath.Join(root, "etc/systemd/system/postern-agent.service"))

	out, err = runCmds(t, cmds, "uninstall", "--purge")
	require.NoError(t, err, out)
	assert.Equal(t, before, snapshotTree(t, root), "uninstall --purge leaves the root as it was found")
	assert.Equal(t, []string{"register", "register", "start", "restart", "stop", "unregister", "unregister"}, mgr.calls)
}

// realLifecycle drives the real service manager; it runs only where systemd
// is PID 1, and restores everything it touched.
func realLifecycle(t *testing.T) {
	for _, p := range []string{"/etc/systemd/system/postern-agent.service", "/etc/postern", "/usr/local/bin/postern-agent", "/var/lib/postern-agent"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists: an agent is installed on this machine; not touching it", p)
		}
	}
	_, lookupErr := user.Lookup("postern")
	userExisted := lookupErr == nil

	tmp := t.TempDir()
	relayBin, agentBin := testkit.Binaries(t)

	apiAddr, proxyAddr, statusAddr := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	dataDir := filepath.Join(tmp, "relay")
	// Stopped, and its log's tail shown on failure, by the kit's cleanup.
	testkit.Start(t, "relay", relayBin, "serve", "--data", dataDir, "--listen", apiAddr, "--proxy-listen", proxyAddr)

	var adminKey string
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(dataDir, "admin.key"))
		adminKey = strings.TrimSpace(string(b))
		return err == nil && adminKey != ""
	}, 15*time.Second, 50*time.Millisecond, "the relay writes its admin key")
	api := func(method, path string, body any, into any) {
		t.Helper()
		var rd bytes.Buffer
		if body != nil {
			require.NoError(t, json.NewEncoder(&rd).Encode(body))
		}
		req, err := http.NewRequest(method, "http://"+apiAddr+path, &rd)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Less(t, resp.StatusCode, 300, "%s %s: %s", method, path, resp.Status)
		require.NoError(t, json.NewDecoder(resp.Body).Decode(into))
	}
	var conn struct {
		ID         string `json:"id"`
		AgentToken string `json:"agent_token"`
	}
	api("POST", "/v1/connections", map[string]string{"name": "installer-test"}, &conn)

	src := filepath.Join(tmp, "src")
	require.NoError(t, os.MkdirAll(src, 0o700))
	cfg := filepath.Join(src, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(
		"relay_url: ws://%s\nstatus_listen: %s\nallow:\n  - ip: 10.0.0.7\n    ports: [8080]\n", apiAddr, statusAddr)), 0o644))
	tok := filepath.Join(src, "token")
	require.NoError(t, os.WriteFile(tok, []byte(conn.AgentToken), 0o600))

	agent := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(agentBin, args...).CombinedOutput()
		require.NoError(t, err, "postern-agent %s:\n%s", strings.Join(args, " "), out)
		assert.NotContains(t, string(out), conn.AgentToken)
		return string(out)
	}
	t.Cleanup(func() {
		// Whatever happened above, leave the machine as it was.
		_ = exec.Command("/usr/local/bin/postern-agent", "uninstall", "--purge").Run()
		_ = exec.Command(agentBin, "uninstall", "--purge").Run()
		if !userExisted {
			_ = exec.Command("userdel", "postern").Run()
		}
	})

	t.Log(agent("install", "--config", cfg, "--token-file", tok))
	assert.Contains(t, agent("start"), "running")
	type status struct {
		TunnelStatus string `json:"tunnel_status"`
	}
	var st status
	require.Eventually(t, func() bool {
		api("GET", "/v1/connections/"+conn.ID+"/status", nil, &st)
		return st.TunnelStatus == "connected"
	}, 30*time.Second, 200*time.Millisecond, "the tunnel of the agent started by systemd comes up in the relay's status")

	assert.Contains(t, agent("stop"), "stopped")
	require.Eventually(t, func() bool {
		api("GET", "/v1/connections/"+conn.ID+"/status", nil, &st)
		return st.TunnelStatus != "connected"
	}, 30*time.Second, 200*time.Millisecond, "stopping the service closes the tunnel")

	agent("uninstall", "--purge")
	if !userExisted {
		out, err := exec.Command("userdel", "postern").CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	for _, p := range []string{"/etc/systemd/system/postern-agent.service", "/etc/postern", "/usr/local/bin/postern-agent", "/var/lib/postern-agent"} {
		_, err := os.Stat(p)
		assert.True(t, errors.Is(err, fs.ErrNotExist), "%s is gone", p)
	}
}

// recordingManager is a service manager that only records what it is asked.
type recordingManager struct {
	mu    sync.Mutex
	state installer.State
	calls []string
}

func (m *recordingManager) Register(context.Context, installer.Spec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "register")
	if m.state == installer.StateNotInstalled {
		m.state = installer.StateStopped
	}
	return nil
}

func (m *recordingManager) Unregister(_ context.Context, remove func() error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "unregister")
	m.state = installer.StateNotInstalled
	return remove()
}

func (m *recordingManager) Control(_ context.Context, a installer.Action) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, string(a))
	m.state = installer.StateRunning
	if a == installer.ActionStop {
		m.state = installer.StateStopped
	}
	return nil
}

func (m *recordingManager) State(context.Context) (installer.State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state, nil
}

// snapshotTree records every path under dir with its mode and content.
func snapshotTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		out[rel] = v
		return nil
	}))
	return out
}
