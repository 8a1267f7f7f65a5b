package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
	"github.com/postern/postern/relay/store/sqlite"
)

// testRelay is a relay node on loopback with its admin client.
type testRelay struct {
	srv       *relay.Server
	apiAddr   string
	proxyAddr string
	dataDir   string
	admin     *client.Client
	stop      func()
	// shutdown starts a graceful stop and returns Serve's result; stop
	// must still be called (Cleanup does) to release the store.
	shutdown func() <-chan error
}

func logger(t *testing.T) *slog.Logger {
	if os.Getenv("POSTERN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startRelay starts a relay on dataDir, listening on apiAddr/proxyAddr
// ("127.0.0.1:0" for fresh ports). tune, if given, adjusts the config.
func startRelay(t *testing.T, dataDir, apiAddr, proxyAddr string, tune ...func(*relay.Config)) *testRelay {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dataDir, "relay.db"))
	require.NoError(t, err)
	cfg := relay.DefaultConfig()
	cfg.Store, cfg.Logger, cfg.HeartbeatInterval, cfg.NodeID = st, logger(t), 500*time.Millisecond, "test-node"
	for _, f := range tune {
		f(&cfg)
	}
	srv, err := relay.New(cfg)
	require.NoError(t, err)
	_, err = srv.Bootstrap(ctx, dataDir)
	require.NoError(t, err)
	apiLn := listenRetry(t, apiAddr)
	proxyLn := listenRetry(t, proxyAddr)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, apiLn, proxyLn) }()
	r := &testRelay{
		srv:       srv,
		apiAddr:   apiLn.Addr().String(),
		proxyAddr: proxyLn.Addr().String(),
		dataDir:   dataDir,
		admin:     client.New("http://"+apiLn.Addr().String(), testkit.AdminKey(t, dataDir), nil),
	}
	// result holds Serve's answer once, for shutdown and stop alike.
	result := make(chan error, 1)
	go func() {
		err := <-done
		result <- err
		close(result)
	}()
	r.shutdown = func() <-chan error {
		cancel()
		return result
	}
	var stopped bool
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err, ok := <-result; ok {
			require.NoError(t, err)
		}
		require.NoError(t, st.Close())
	}
	t.Cleanup(r.stop)
	return r
}

// listenRetry listens on addr, retrying briefly: a restarted relay reuses
// its previous port, which the kernel may hold for a moment.
func listenRetry(t *testing.T, addr string) net.Listener {
	t.Helper()
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, err)
	return nil
}

// testAgent is an agent running in this process.
type testAgent struct {
	a      *agent.Agent
	cancel func()
	done   chan error
}

func (ta *testAgent) stop(t *testing.T) {
	t.Helper()
	if ta.cancel == nil {
		return
	}
	ta.cancel()
	select {
	case err := <-ta.done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop within 10s")
	}
	ta.cancel = nil
}

// startAgent runs an agent with the given YAML rules (the allow:/deny:
// part of the config) against relay r.
func startAgent(t *testing.T, r *testRelay, token, rules string, hosts map[string]string) *testAgent {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf("relay_url: ws://%s\ntunnels: 2\n%s", r.apiAddr, rules)
	cfg, err := config.Parse(filepath.Join(dir, "agent.yaml"), []byte(yaml), func(string) (string, bool) { return "", false })
	require.NoError(t, err)

	hostsFile := filepath.Join(dir, "hosts")
	var b strings.Builder
	for name, ip := range hosts {
		fmt.Fprintf(&b, "%s %s\n", ip, name)
	}
	require.NoError(t, os.WriteFile(hostsFile, []byte(b.String()), 0o644))
	resolvConf := filepath.Join(dir, "resolv.conf")
	require.NoError(t, os.WriteFile(resolvConf, []byte("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"), 0o644))
	res, err := resolve.New(resolve.Config{HostsFile: hostsFile, ResolvConf: resolvConf, Logger: logger(t)})
	require.NoError(t, err)

	opts := agent.DefaultOptions()
	opts.Config, opts.Token, opts.Version, opts.Logger, opts.Resolver = cfg, token, "test", logger(t), res
	opts.BackoffBase, opts.BackoffMax, opts.DrainTimeout, opts.RefusedTokenPause = 50*time.Millisecond, 500*time.Millisecond, time.Second, 50*time.Millisecond
	a, err := agent.New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(func() { ta.stop(t) })
	return ta
}

// waitStatus polls the status API until check passes.
func waitStatus(t *testing.T, c *client.Client, connID string, check func(api.Status) bool) api.Status {
	t.Helper()
	var last api.Status
	require.Eventually(t, func() bool {
		st, err := c.Status(context.Background(), connID, "")
		if err != nil {
			return false
		}
		last = st
		return check(st)
	}, 10*time.Second, 20*time.Millisecond, "status never matched; last: %+v", last)
	return last
}

// connectResult is the answer to a CONNECT.
type connectResult struct {
	status int
	reason string
	body   api.Error
	conn   net.Conn // open tunnel when status == 200
	br     *bufio.Reader
}

// dialConnect sends CONNECT target through the proxy with the given
// credentials.
func dialConnect(t *testing.T, proxyAddr, connID, key, target string) connectResult {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	require.NoError(t, err)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, br, err := testkit.Connect(c, connID, key, target)
	require.NoError(t, err)
	_ = c.SetReadDeadline(time.Time{})
	res := connectResult{status: resp.StatusCode, reason: resp.Header.Get("Postern-Reason"), br: br}
	if resp.StatusCode == http.StatusOK {
		res.conn = c
		t.Cleanup(func() { _ = c.Close() })
		return res
	}
	defer c.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	require.NoError(t, jsonUnmarshal(body, &res.body), "body: %s", body)
	require.NotEmpty(t, resp.Header.Get("Postern-Request-Id"))
	require.Equal(t, res.body.RequestID, resp.Header.Get("Postern-Request-Id"))
	return res
}
