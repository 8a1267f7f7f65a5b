package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/doctor"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// within is how soon after a fault every place must show it.
const within = 5 * time.Second

// noEnv is an empty environment for config.Load: the scenario agents are
// configured by their file alone, like the binaries they are checked with.
func noEnv(string) (string, bool) { return "", false }

// agentFiles is an agent installation on disk: the config file, the token
// file beside it (mode 0600), and the paths the config names.
type agentFiles struct {
	cfgPath    string
	statusAddr string
	auditPath  string
}

// writeAgentFiles writes an agent config for relayURL with the token and
// the given YAML (allow, deny, dns, ...) into a fresh directory.
func writeAgentFiles(t *testing.T, relayURL, token, body string) agentFiles {
	t.Helper()
	dir := t.TempDir()
	f := agentFiles{statusAddr: testkit.FreeAddr(t), auditPath: filepath.Join(dir, "audit.jsonl")}
	f.cfgPath = testkit.WriteAgentConfig(t, dir, testkit.AgentConfig{Relays: []string{relayURL}, Token: token,
		StatusListen: f.statusAddr, Tunnels: 2, More: "audit_log: audit.jsonl\n" + body})
	return f
}

// fileAgent is an agent started from its config file in this process,
// wired the way `postern-agent run` wires it (the config's resolver, audit
// log and status server), with a short open timeout where a test needs
// one. It stops when the test ends.
type fileAgent struct {
	agentFiles
	ta *testAgent
}

func (fa *fileAgent) stop(t *testing.T) { fa.ta.stop(t) }

func startFileAgent(t *testing.T, files agentFiles, openTimeout time.Duration) *fileAgent {
	t.Helper()
	cfg, err := config.Load(files.cfgPath, noEnv)
	require.NoError(t, err)
	token, err := cfg.LoadToken(noEnv)
	require.NoError(t, err)
	res, err := resolve.New(resolve.Config{Servers: cfg.DNSServers, Timeout: cfg.DNSTimeout, Logger: logger(t)})
	require.NoError(t, err)
	al, err := audit.Open(cfg.AuditLog, audit.DefaultMaxBytes, audit.DefaultKeep)
	require.NoError(t, err)
	opts := agent.DefaultOptions()
	opts.Config, opts.Token, opts.Version, opts.Logger, opts.Resolver, opts.Audit = cfg, token, "scenario", logger(t), res, al
	opts.OpenTimeout = cmp.Or(openTimeout, opts.OpenTimeout) // 0: the default
	opts.DrainTimeout, opts.BackoffBase, opts.BackoffMax = 2*time.Second, 50*time.Millisecond, 500*time.Millisecond
	a, err := agent.New(opts)
	require.NoError(t, err)

	ln, err := net.Listen("tcp", cfg.StatusListen)
	require.NoError(t, err)
	srv := &http.Server{Handler: a.StatusHandler(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	// done reports Run's result once the status server and the audit log
	// are closed too, so a stopped agent leaves nothing behind.
	go func() {
		err := <-ran
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		scancel()
		<-served
		stopped <- errors.Join(err, al.Close())
	}()
	fa := &fileAgent{agentFiles: files, ta: &testAgent{a: a, cancel: cancel, done: stopped}}
	t.Cleanup(func() { fa.stop(t) })
	return fa
}

// cliResult is one run of a command-line tool.
type cliResult struct {
	stdout, stderr string
	code           int
}

// scenarioEnv is the environment of the agent CLI in the scenarios: this
// process's, without proxies or POSTERN_* overrides that would change
// what the config file says.
func scenarioEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(name) {
		case "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY":
			continue
		}
		if strings.HasPrefix(name, "POSTERN_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// runTool runs bin with args in scenarioEnv; see runToolEnv.
func runTool(t *testing.T, bin string, args ...string) cliResult {
	t.Helper()
	return runToolEnv(t, scenarioEnv(), bin, args...)
}

// runToolEnv runs bin with args and env as its whole environment, and
// returns its output and exit status; a non-zero exit is an answer here,
// not an error.
func runToolEnv(t *testing.T, env []string, bin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		res.code = exit.ExitCode()
	} else {
		require.NoError(t, err, "%s %v", filepath.Base(bin), args)
	}
	return res
}

// runDoctor runs `postern-agent doctor --config FILE --json` and decodes
// its one JSON document.
func runDoctor(t *testing.T, agentBin, cfgPath string) (doctor.Report, cliResult) {
	t.Helper()
	res := runTool(t, agentBin, "doctor", "--config", cfgPath, "--json")
	var rep doctor.Report
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &rep), "doctor --json output:\n%s\nstderr:\n%s", res.stdout, res.stderr)
	if rep.OK {
		assert.Equal(t, 0, res.code, "doctor exits 0 when every check passed")
	} else {
		assert.Equal(t, 1, res.code, "doctor exits 1 when a check failed")
	}
	return rep, res
}

// doctorCheck returns the check of layer for target in rep.
func doctorCheck(t *testing.T, rep doctor.Report, layer, target string) doctor.Check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Layer == layer && c.Target == target {
			return c
		}
	}
	require.Failf(t, "doctor check missing", "no %q check for %q in %+v", layer, target, rep.Checks)
	return doctor.Check{}
}

// doctorWant is what one doctor check must show.
type doctorWant struct {
	layer, target string
	status        doctor.Status
	reason        protocol.Reason
	// remediation is a substring of the remediation line (FAIL only).
	remediation string
	// detail is a substring of what the check found.
	detail string
}

func assertDoctor(t *testing.T, rep doctor.Report, w doctorWant) {
	t.Helper()
	c := doctorCheck(t, rep, w.layer, w.target)
	assert.Equal(t, w.status, c.Status, "doctor %s %s: %s", w.layer, w.target, c.Detail)
	assert.Equal(t, w.reason, c.Reason, "doctor %s %s reason; every check: %+v", w.layer, w.target, rep.Checks)
	assert.Contains(t, c.Detail, w.detail, "doctor %s %s detail", w.layer, w.target)
	if w.status == doctor.Fail {
		assert.NotEmpty(t, c.Remediation, "a failed check says what to do")
		assert.Contains(t, c.Remediation, w.remediation)
		assert.False(t, rep.OK)
	}
}

// runAgentStatus runs `postern-agent status --config FILE --json`.
func runAgentStatus(t *testing.T, agentBin, cfgPath string) (agent.LocalStatus, cliResult) {
	t.Helper()
	res := runTool(t, agentBin, "status", "--config", cfgPath, "--json")
	var st agent.LocalStatus
	if res.code == 0 || res.code == 1 {
		require.NoError(t, json.Unmarshal([]byte(res.stdout), &st), "status --json output:\n%s\nstderr:\n%s", res.stdout, res.stderr)
	}
	return st, res
}

// assertAgentNotRunning checks what `postern-agent status` says when no
// agent serves the config's status_listen.
func assertAgentNotRunning(t *testing.T, agentBin string, files agentFiles) {
	t.Helper()
	_, res := runAgentStatus(t, agentBin, files.cfgPath)
	assert.Equal(t, 2, res.code, "status of an agent that does not run")
	assert.Empty(t, res.stdout)
	assert.Contains(t, res.stderr, "agent not reachable at "+files.statusAddr)
	assert.Contains(t, res.stderr, "is postern-agent running?")
}

// assertAgentNotReady waits until `postern-agent status --json` shows a
// running agent with no tunnel up, then checks the human output, which
// exits 1 for an agent that is not ready.
func assertAgentNotReady(t *testing.T, agentBin string, files agentFiles) {
	t.Helper()
	var (
		st  agent.LocalStatus
		res cliResult
	)
	eventually(t, func() bool {
		st, res = runAgentStatus(t, agentBin, files.cfgPath)
		return res.code == 1 && !st.Ready && st.TunnelsUp == 0 // --json too exits 1 when not ready
	}, func() string {
		return fmt.Sprintf("agent status never showed a running agent without tunnels; last: %+v %+v", st, res)
	})
	assert.Equal(t, 2, st.TunnelsWanted)
	assert.Empty(t, st.Tunnels)
	human := runTool(t, agentBin, "status", "--config", files.cfgPath)
	assert.Equal(t, 1, human.code, "status exits 1 for an agent that is not ready")
	assert.Contains(t, human.stdout, "ready:     no: no tunnel to the relay is up")
	assert.Contains(t, human.stdout, "tunnels:   0 of 2 up")
}

// eventually polls cond from the test's goroutine (cond may use require)
// until it holds, for at most `within`; msg describes the last attempt.
func eventually(t *testing.T, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, msg())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditEntry waits for the audit log line of a request and returns it.
func auditEntry(t *testing.T, path string, match func(audit.Entry) bool) audit.Entry {
	t.Helper()
	var found audit.Entry
	eventually(t, func() bool {
		f, err := os.Open(path)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var e audit.Entry
			if json.Unmarshal(sc.Bytes(), &e) == nil && match(e) {
				found = e
				return true
			}
		}
		return false
	}, func() string { return "no matching audit entry in " + path })
	return found
}

// statusEventually polls the status API for baseURL until check passes,
// for at most `within`.
func statusEventually(t *testing.T, c *client.Client, connID, baseURL string, check func(api.Status) bool) api.Status {
	t.Helper()
	var (
		last api.Status
		err  error
	)
	eventually(t, func() bool {
		last, err = c.Status(context.Background(), connID, baseURL)
		return err == nil && check(last)
	}, func() string { return fmt.Sprintf("status never matched; last: %+v, err: %v", last, err) })
	return last
}

// statusWant is what the status API must show.
type statusWant struct {
	tunnel, auth, allowlist string
	reason                  protocol.Reason
	ready                   bool
}

func (w statusWant) matches(s api.Status) bool {
	return s.TunnelStatus == w.tunnel && s.AuthStatus == w.auth && s.AllowlistStatus == w.allowlist &&
		s.Reason == w.reason && s.ProviderErrorCode == w.reason.Info().ProviderErrorCode && s.Ready == w.ready
}

// assertStatus waits until the status API shows w.
func assertStatus(t *testing.T, c *client.Client, connID, baseURL string, w statusWant) api.Status {
	t.Helper()
	return statusEventually(t, c, connID, baseURL, w.matches)
}

// timedConnect sends a CONNECT and requires its answer within `within`.
func timedConnect(t *testing.T, proxyAddr, connID, key, target string) connectResult {
	t.Helper()
	start := time.Now()
	res := dialConnect(t, proxyAddr, connID, key, target)
	assert.Less(t, time.Since(start), within, "CONNECT %s answered after %s", target, time.Since(start))
	return res
}

// scenarioClient is an API client with its own connection pool, closed
// when the test ends so no keep-alive connection outlives it. A call whose
// context comes from withRequestID records the answer's Postern-Request-Id.
func scenarioClient(t *testing.T, apiAddr, key string) *client.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return client.New("http://"+apiAddr, key, &http.Client{Transport: recordingTransport{tr}, Timeout: 30 * time.Second})
}

type requestIDKey struct{}

// withRequestID returns a context in which the scenario client stores the
// request id of the relay's answer into *id.
func withRequestID(ctx context.Context, id *string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// recordingTransport stores each answer's Postern-Request-Id where the
// request's context asks for it.
type recordingTransport struct{ rt http.RoundTripper }

func (r recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.rt.RoundTrip(req)
	if err == nil {
		if p, ok := req.Context().Value(requestIDKey{}).(*string); ok {
			*p = resp.Header.Get("Postern-Request-Id")
		}
	}
	return resp, err
}
