package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// clientSite is a real relay and agent process, with the product's key,
// a connection whose allowlist admits web (an HTTP target that counts its
// connections), and the proxy URL a client is given.
type clientSite struct {
	relay    relayProcess
	conn     api.Connection
	key      string
	proxyURL *url.URL // http://<conn id>:<key>@proxy
	web      *httptest.Server
	accepted atomic.Int64 // connections web accepted
}

func newClientSite(t *testing.T) *clientSite {
	t.Helper()
	relayBin, agentBin := binaries(t)
	dir := t.TempDir()
	s := &clientSite{relay: startRelayProcess(t, relayBin, filepath.Join(dir, "relay"))}
	s.web = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "issue PROJ-1 via "+r.Host)
	}))
	s.web.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.accepted.Add(1)
		}
	}
	s.web.Start()
	t.Cleanup(s.web.Close)

	keyFile := filepath.Join(dir, "relay", "admin.key")
	env := []string{"POSTERN_SERVER=" + s.relay.server}
	require.NoError(t, json.Unmarshal(runCLI(t, env, relayBin, "connections", "create", "jira", "--workspace", "acme",
		"--json", "--admin-key-file", keyFile), &s.conn))
	var key api.APIKey
	require.NoError(t, json.Unmarshal(runCLI(t, env, relayBin, "api-keys", "create", "product", "--workspace", "acme",
		"--json", "--admin-key-file", keyFile), &key))
	s.key = key.Key
	s.proxyURL = &url.URL{Scheme: "http", User: url.UserPassword(s.conn.ID, s.key), Host: s.relay.proxyAddr}

	cfg := testkit.WriteAgentConfig(t, dir, testkit.AgentConfig{Relays: []string{"ws://" + s.relay.apiAddr},
		Token: s.conn.AgentToken, Allow: []string{s.web.Listener.Addr().String()}})
	start(t, agentBin, "run", "--config", cfg)
	waitStatus(t, client.New(s.relay.server, s.key, nil), s.conn.ID, func(st api.Status) bool { return st.TunnelStatus == "connected" })
	return s
}

// blocked is a target the agent always refuses: a loopback address no
// allow rule names.
const blocked = "127.0.0.2:443"

// The reason of a refused CONNECT is in the status line, where curl, git,
// Python's requests and Go show it.
func TestClientsShowTheReason(t *testing.T) {
	s := newClientSite(t)

	t.Run("Go", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(s.proxyURL)}, Timeout: 10 * time.Second}
		_, err := c.Get("https://" + blocked + "/")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "TARGET_BLOCKED")
	})
	t.Run("curl", func(t *testing.T) {
		curl := lookTool(t, "curl")
		out := runWithProxy(t, s.proxyURL, nil, curl, "-sS", "-v", "--max-time", "10", "https://"+blocked+"/")
		assert.Contains(t, out, "< HTTP/1.1 403 TARGET_BLOCKED")
		assert.Contains(t, out, "< Postern-Reason: TARGET_BLOCKED")
	})
	t.Run("Python requests", func(t *testing.T) {
		py := lookTool(t, "python3")
		if exec.Command(py, "-c", "import requests").Run() != nil {
			skipOrFail(t, "python3 has no requests module")
		}
		out := runWithProxy(t, s.proxyURL, nil, py, "-c", `import requests
try:
    requests.get("https://`+blocked+`/", timeout=10)
except requests.exceptions.ProxyError as e:
    print(e)`)
		assert.Contains(t, out, "403 TARGET_BLOCKED")
	})
	t.Run("git", func(t *testing.T) {
		git := lookTool(t, "git")
		out := runWithProxy(t, s.proxyURL, nil, git, "ls-remote", "https://"+blocked+"/group/repo.git")
		assert.Contains(t, out, "403", "git names the status")
		// The README's recipe: git's curl trace shows the status line.
		traced := runWithProxy(t, s.proxyURL, []string{"GIT_TRACE_CURL=1"}, git, "ls-remote", "https://"+blocked+"/group/repo.git")
		assert.Contains(t, traced, "HTTP/1.1 403 TARGET_BLOCKED")
		assert.NotContains(t, traced, s.key, "git's trace redacts the proxy credentials")
	})
}

// Malformed CONNECT request lines are BAD_TARGET with the reason in the
// status line, header and body, not a bare 400 from the HTTP layer.
func TestMalformedConnectIsBadTarget(t *testing.T) {
	s := newClientSite(t)
	for _, target := range []string{"user@gitlab.corp:443", "[1.2.3.4]:443", "gitlab.corp:443/x", "gitl%61b.corp:443", "gitlab.corp:443?x", "gitlab.corp", "git lab.corp:443"} {
		t.Run(target, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", s.relay.proxyAddr, 5*time.Second)
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
			_, err = fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n",
				target, target, base64.StdEncoding.EncodeToString([]byte(s.conn.ID+":"+s.key)))
			require.NoError(t, err)
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "HTTP/1.1 400 BAD_TARGET\r\n", line)
			resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(line), br)), &http.Request{Method: http.MethodConnect})
			require.NoError(t, err)
			assert.Equal(t, "BAD_TARGET", resp.Header.Get("Postern-Reason"))
			assert.NotEmpty(t, resp.Header.Get("Postern-Request-Id"))
			var body api.Error
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			assert.Equal(t, protocol.BadTarget, body.Reason)
			assert.Equal(t, protocol.ProviderBaseURLBlocked, body.ProviderErrorCode)
		})
	}
}

// A keep-alive client forwarding plain http:// requests through the
// proxy reuses one upstream connection; the API and the proxy listener
// each say when a request was meant for the other; a client's first
// request without credentials is a challenge, not a refusal, in /metrics.
func TestHTTPForwardingAndListenerMessages(t *testing.T) {
	s := newClientSite(t)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(s.proxyURL)}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	target := "http://" + s.web.Listener.Addr().String() + "/rest/api/2/issue/PROJ-1"
	const requests = 50
	for i := range requests {
		resp, err := c.Get(target)
		require.NoError(t, err, "request %d", i)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		require.Contains(t, string(body), "issue PROJ-1")
	}
	assert.Equal(t, int64(1), s.accepted.Load(), "%d keep-alive requests through the proxy use one target connection", requests)

	t.Run("wrong key on the API", func(t *testing.T) {
		_, err := client.New(s.relay.server, s.key[:len(s.key)-4]+"AAAA", nil).ListConnections(context.Background())
		var apiErr *api.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, protocol.APIAuthRequired, apiErr.Reason)
		req, err := http.NewRequest(http.MethodGet, s.relay.server+"/v1/connections", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer nonsense")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		assert.Equal(t, `Bearer realm="postern"`, resp.Header.Get("WWW-Authenticate"))
	})
	t.Run("API call to the proxy port", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, "http://"+s.relay.proxyAddr+"/v1/connections", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+s.key)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var body api.Error
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		assert.Equal(t, "400 INVALID_REQUEST", resp.Status)
		assert.Contains(t, body.Message, "this is the proxy listener")
		assert.Contains(t, body.Message, "the API is on --listen ("+s.relay.apiAddr+")")
	})
	t.Run("challenges apart from refusals", func(t *testing.T) {
		for _, creds := range []*url.Userinfo{nil, url.UserPassword(s.conn.ID, "pak_wrong")} {
			u := *s.proxyURL
			u.User = creds
			_, err := (&http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&u)}}).Get(target)
			require.NoError(t, err, "a refused http:// request is an answer, not an error")
		}
		metrics := string(getBody(t, s.relay.server+"/metrics"))
		assert.Contains(t, metrics, "postern_relay_proxy_auth_challenges_total 1")
		assert.Contains(t, metrics, `postern_relay_refusals_total{reason="PROXY_AUTH_REQUIRED"} 1`)
	})
}

// runWithProxy runs a client with the proxy in its environment (never in
// argv: the URL carries the key) and returns what it printed. Arguments of
// env is added to the environment.
func runWithProxy(t *testing.T, proxy *url.URL, env []string, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(append(os.Environ(), "https_proxy="+proxy.String(), "HTTPS_PROXY="+proxy.String(),
		"http_proxy="+proxy.String(), "NO_PROXY=", "no_proxy=", "GIT_TERMINAL_PROMPT=0"), env...)
	out, _ := cmd.CombinedOutput() // the refusal is a failure of the client
	return string(out)
}

// lookTool finds a client program; without it the test fails in CI and
// skips elsewhere.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, name+" is not installed")
	}
	return p
}

func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why + " (CI installs it)")
	}
	t.Skip(why)
}

func getBody(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return b
}
