package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// TestReloadUnderLoad swaps the allowlist while streams run: no stream to
// a target allowed before and after fails, a newly allowed target works
// at once, and an invalid file keeps the rules in force and is reported.
func TestReloadUnderLoad(t *testing.T) {
	f := newFixture(t)
	second := testkit.EchoServer(t)
	_, secondPort, _ := net.SplitHostPort(second)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.yaml")
	// The file is replaced whole, the way editors and config managers
	// do: a reader never sees it half written.
	writeConfig := func(body string) {
		tmp := cfgPath + ".tmp"
		require.NoError(t, os.WriteFile(tmp, []byte(body), 0o644))
		require.NoError(t, os.Rename(tmp, cfgPath))
	}
	writeRules := func(extra string) {
		writeConfig(fmt.Sprintf("relay_url: ws://%s\nallow:\n  - ip: 127.0.0.1\n    ports: [%s%s]\n", f.relay.apiAddr, f.port, extra))
	}
	writeRules("")
	load := func() (*config.Config, error) {
		return config.Load(cfgPath, func(string) (string, bool) { return "", false })
	}
	cfg, err := load()
	require.NoError(t, err)
	res, err := resolve.New(resolve.Config{HostsFile: filepath.Join(dir, "none"), ResolvConf: filepath.Join(dir, "none")})
	require.NoError(t, err)
	opts := agent.DefaultOptions()
	opts.Config, opts.Token, opts.Version, opts.Resolver, opts.Logger = cfg, f.conn.AgentToken, "test", res, logger(t)
	opts.BackoffBase, opts.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
	a, err := agent.New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = a.Run(ctx) }()
	trigger := make(chan os.Signal, 1)
	go func() { defer wg.Done(); _ = a.WatchConfig(ctx, cfgPath, load, trigger, 20*time.Millisecond) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	first := waitStatus(t, f.relay.admin, f.conn.ID, func(s api.Status) bool { return s.TunnelStatus == "connected" })
	sha0 := first.Agents[0].Allowlist.SHA256

	// Load: streams to the first target, which every version allows.
	var ok, failed atomic.Int64
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var loadWG sync.WaitGroup
	for range 4 {
		loadWG.Add(1)
		go func() {
			defer loadWG.Done()
			for loadCtx.Err() == nil {
				res := dialConnectNoFail(f.relay.proxyAddr, f.conn.ID, f.key, f.target)
				if res != http.StatusOK {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}

	for i := range 5 {
		writeRules(", " + secondPort)
		st := waitStatus(t, f.relay.admin, f.conn.ID, func(s api.Status) bool {
			return len(s.Agents) > 0 && s.Agents[0].Allowlist.SHA256 != sha0
		})
		assert.Equal(t, "configured", st.AllowlistStatus, "round %d", i)
		roundTrip(t, f.connect(t, second), 1<<10)

		writeRules("")
		waitStatus(t, f.relay.admin, f.conn.ID, func(s api.Status) bool {
			return len(s.Agents) > 0 && s.Agents[0].Allowlist.SHA256 == sha0
		})
		assertRefused(t, f.connect(t, second), http.StatusForbidden, protocol.TargetBlocked)
	}

	// An invalid file: old rules stay, the relay shows why.
	writeConfig("relay_url: ws://" + f.relay.apiAddr + "\nallow:\n  - ip: 127.0.0.1\n    portz: [1]\n")
	trigger <- syscall.SIGHUP
	st := waitStatus(t, f.relay.admin, f.conn.ID, func(s api.Status) bool { return s.AllowlistStatus == "invalid" })
	assert.Contains(t, st.LastError, "agent.yaml:4")
	assert.Equal(t, sha0, st.Agents[0].Allowlist.SHA256, "the rules in force are the previous ones")
	roundTrip(t, f.connect(t, f.target), 1<<10)

	stopLoad()
	loadWG.Wait()
	assert.Zero(t, failed.Load(), "streams to an always-allowed target failed during reloads")
	assert.Greater(t, ok.Load(), int64(20), "the load actually ran")
}

// dialConnectNoFail runs a CONNECT plus a tiny exchange and returns the
// status (0 on a transport error) without touching testing.T, for use in
// load goroutines.
func dialConnectNoFail(proxyAddr, connID, key, target string) int {
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	resp, br, err := testkit.Connect(c, connID, key, target)
	if err != nil {
		return 0
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		return 0
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0
	}
	digest := make([]byte, 32)
	if _, err := io.ReadFull(br, digest); err != nil {
		return 0
	}
	return http.StatusOK
}

// TestReloadNamesWhatWaitsForARestart: a reload that changes settings
// built at start names each of them in the agent's log, applies the
// allowlist change at once, and keeps naming them at later reloads until
// the agent restarts; a reload that changes only rules names nothing.
func TestReloadNamesWhatWaitsForARestart(t *testing.T) {
	_, agentBin := binaries(t)
	dir := t.TempDir()
	token := "pat_abcabcabcabcabca_czNjcmV0LS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0"
	base := testkit.AgentConfig{Relays: []string{"ws://" + testkit.FreeAddr(t)}, Token: token,
		StatusListen: testkit.FreeAddr(t), Allow: []string{"127.0.0.1:9"}}
	cfg := testkit.WriteAgentConfig(t, dir, base)
	p := start(t, agentBin, "run", "--config", cfg)
	testkit.WaitFor(t, 10*time.Second, "agent started", func() bool { return strings.Contains(p.Output(), "agent starting") })

	const named = `msg="config reload: restart the agent to apply the change to tunnels and log_level; ` +
		`changes to allow, deny, blocked and mode apply now" restart_needed=tunnels,log_level`
	changed := base
	changed.Tunnels, changed.Allow, changed.More = 3, []string{"127.0.0.1:9", "127.0.0.1:10"}, "log_level: debug\n"
	testkit.WriteAgentConfig(t, dir, changed)
	p.Signal(t, syscall.SIGHUP)
	testkit.WaitFor(t, 10*time.Second, "reload named the changes", func() bool { return strings.Contains(p.Output(), named) })
	assert.Contains(t, p.Output(), `msg="allowlist reloaded" rules=1`)

	before := strings.Count(p.Output(), "allowlist reloaded")
	changed.Allow = []string{"127.0.0.1:9"}
	testkit.WriteAgentConfig(t, dir, changed)
	p.Signal(t, syscall.SIGHUP)
	testkit.WaitFor(t, 10*time.Second, "second reload", func() bool { return strings.Count(p.Output(), "allowlist reloaded") > before })
	assert.GreaterOrEqual(t, strings.Count(p.Output(), named), 2, "still waiting for a restart:\n%s", p.Output())

	// Back to what runs: the reload that reads it names nothing. (A
	// reload the file watcher started for the previous write may still
	// log after this point, so the last reload is the one judged.)
	testkit.WriteAgentConfig(t, dir, base)
	p.Signal(t, syscall.SIGHUP)
	testkit.WaitFor(t, 10*time.Second, "a reload without the restart warning", func() bool {
		lines := strings.Split(p.Output(), "\n")
		for i := len(lines) - 1; i > 0; i-- {
			if strings.Contains(lines[i], "allowlist reloaded") {
				return !strings.Contains(lines[i-1], "restart_needed")
			}
		}
		return false
	})
}
