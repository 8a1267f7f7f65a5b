package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
	"github.com/postern/postern/relay/admin"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/auth"
	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Polling bounds for require.Eventually: state changes here take
// milliseconds, so a generous ceiling costs nothing when things work.
const (
	waitFor   = 5 * time.Second
	pollEvery = 5 * time.Millisecond
)

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// endpoints is where a harness reaches its node: the httptest servers by
// default, or the listeners of Serve.
type endpoints struct {
	apiURL    string
	proxyAddr string
	client    *http.Client
}

// harness is one relay node on a real SQLite store, its API and proxy
// handlers served on loopback, and an admin key.
type harness struct {
	srv      *Server
	api      *httptest.Server
	proxy    *httptest.Server
	ep       endpoints
	adminKey string
	logs     *syncBuffer
	dbPath   string // the SQLite store's file

	mu      sync.Mutex
	secrets []string // must never show up in the logs
}

func newHarness(t *testing.T, opts ...func(*Config)) *harness {
	t.Helper()
	return newHarnessVerifying(t, secret.Verify, opts...)
}

// newConnHarness is newHarness with the connection most tests start from:
// "gitlab", in workspace ws ("" is the relay's default).
func newConnHarness(t *testing.T, ws string, opts ...func(*Config)) (*harness, api.Connection) {
	t.Helper()
	h := newHarness(t, opts...)
	return h, h.createConnection(t, "gitlab", ws)
}

// newHarnessVerifying is newHarness whose node compares secrets with verify.
func newHarnessVerifying(t *testing.T, verify auth.Verifier, opts ...func(*Config)) *harness {
	t.Helper()
	h := newBareHarness(t, verify, opts...)
	key, err := admin.CreateAPIKey(t.Context(), h.srv.store, api.CreateAPIKeyRequest{Name: "test-admin", Admin: true})
	require.NoError(t, err)
	h.adminKey = h.remember(key.Key)
	return h
}

// newBareHarness is newHarness on a store without any API key.
func newBareHarness(t *testing.T, verify auth.Verifier, opts ...func(*Config)) *harness {
	t.Helper()
	dbPath := filepath.Join(t.TempDir(), "relay.db")
	st, err := sqlite.Open(t.Context(), dbPath)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, st.Close()) })

	logs := &syncBuffer{}
	cfg := DefaultConfig()
	cfg.Store = st
	cfg.NodeID = "node-test"
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := newServer(cfg, verify)
	require.NoError(t, err)
	h := &harness{srv: srv, logs: logs, dbPath: dbPath}
	h.api = httptest.NewServer(srv.Handler())
	// The proxy is served as ServeListeners serves it: kept http://
	// upstreams per client connection, malformed CONNECT lines answered.
	h.proxy = httptest.NewUnstartedServer(nil)
	h.proxy.Config = srv.proxyServer()
	h.proxy.Listener = srv.proxyListener(h.proxy.Listener)
	h.proxy.Start()
	h.ep = endpoints{apiURL: h.api.URL, proxyAddr: h.proxy.Listener.Addr().String(), client: h.api.Client()}
	t.Cleanup(func() {
		srv.Close()
		h.api.Close()
		h.proxy.Close()
		out := logs.String()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, s := range h.secrets {
			assert.NotContains(t, out, secretPart(s), "a credential reached the logs")
		}
	})
	return h
}

// secretPart is the part of a credential (<prefix>_<id>_<secret>) after
// its public id.
func secretPart(cred string) string {
	cut := len(secret.AgentTokenPrefix) + 1 + secret.IDLen + 1
	if len(cred) <= cut {
		return cred
	}
	return cred[cut:]
}

// remember registers a credential that must never be logged.
func (h *harness) remember(cred string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.secrets = append(h.secrets, cred)
	return cred
}

// answer is an HTTP answer, read in full.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// call sends one API request. body is nil (no body), a string (sent as
// is) or a value encoded as JSON.
func (h *harness) call(t *testing.T, method, path, key string, body any) answer {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(t, err)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, h.ep.apiURL+path, rd)
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return do(t, h.ep.client, req)
}

func do(t *testing.T, c *http.Client, req *http.Request) answer {
	t.Helper()
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// readAnswer reads the answer to req from br, with its body in full.
func readAnswer(t *testing.T, br *bufio.Reader, req *http.Request) answer {
	t.Helper()
	resp, err := http.ReadResponse(br, req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// decode checks the status and decodes the JSON body.
func decode[T any](t *testing.T, r answer, status int) T {
	t.Helper()
	require.Equal(t, status, r.status, "body: %s", r.body)
	assert.Equal(t, "application/json", r.header.Get("Content-Type"))
	var v T
	require.NoError(t, json.Unmarshal(r.body, &v), "body: %s", r.body)
	return v
}

// requireRefusal checks everything a client sees of a refusal: status,
// Postern-Reason, the JSON body and the request id in header and body.
func requireRefusal(t *testing.T, r answer, status int, reason protocol.Reason) api.Error {
	t.Helper()
	e := decode[api.Error](t, r, status)
	assert.Equal(t, string(reason), r.header.Get("Postern-Reason"))
	assert.Equal(t, reason, e.Reason)
	assert.Equal(t, reason.Info().ProviderErrorCode, e.ProviderErrorCode)
	assert.NotEmpty(t, e.Message)
	assert.NotEmpty(t, e.RequestID)
	assert.Equal(t, r.header.Get("Postern-Request-Id"), e.RequestID)
	return e
}

// withoutRequestID returns an error body with its request id blanked, for
// comparing two answers that must not differ otherwise.
func withoutRequestID(t *testing.T, r answer) api.Error {
	t.Helper()
	var e api.Error
	require.NoError(t, json.Unmarshal(r.body, &e), "body: %s", r.body)
	e.RequestID = ""
	return e
}

// createConnection creates a connection with the admin key.
func (h *harness) createConnection(t *testing.T, name, workspace string) api.Connection {
	t.Helper()
	c := decode[api.Connection](t, h.call(t, http.MethodPost, "/v1/connections", h.adminKey,
		api.CreateConnectionRequest{Name: name, Workspace: workspace}), http.StatusCreated)
	require.NotEmpty(t, c.AgentToken)
	h.remember(c.AgentToken)
	return c
}

// createKey creates a workspace API key with the admin key.
func (h *harness) createKey(t *testing.T, workspace string) string {
	t.Helper()
	k := decode[api.APIKey](t, h.call(t, http.MethodPost, "/v1/api-keys", h.adminKey,
		api.CreateAPIKeyRequest{Name: "key for " + workspace, Workspace: workspace}), http.StatusCreated)
	return h.remember(k.Key)
}

// revoke revokes a connection with the admin key.
func (h *harness) revoke(t *testing.T, connID string) api.Connection {
	t.Helper()
	return decode[api.Connection](t, h.call(t, http.MethodPost, "/v1/connections/"+connID+"/revoke", h.adminKey, nil), http.StatusOK)
}

// rotate issues a new agent token of a connection with the admin key.
func (h *harness) rotate(t *testing.T, connID string) api.TokenResponse {
	t.Helper()
	tok := decode[api.TokenResponse](t, h.call(t, http.MethodPost, "/v1/connections/"+connID+"/tokens", h.adminKey, nil), http.StatusCreated)
	h.remember(tok.AgentToken)
	return tok
}

func (h *harness) status(t *testing.T, connID, query string) api.Status {
	t.Helper()
	return decode[api.Status](t, h.call(t, http.MethodGet, "/v1/connections/"+connID+"/status"+query, h.adminKey, nil), http.StatusOK)
}

// pollStatus is status for require.Eventually conditions, which run on
// another goroutine and so must not fail the test themselves.
func (h *harness) pollStatus(connID string) api.Status {
	return pollJSON[api.Status](h, "/v1/connections/"+connID+"/status")
}

// pollJSON reads an API answer with the admin key without failing the
// test: any problem gives the zero value.
func pollJSON[T any](h *harness, path string) T {
	var v, zero T
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.ep.apiURL+path, nil)
	if err != nil {
		return zero
	}
	req.Header.Set("Authorization", "Bearer "+h.adminKey)
	resp, err := h.ep.client.Do(req)
	if err != nil {
		return zero
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
		return zero
	}
	return v
}

// activeStreams counts the streams open now on a connection's tunnels.
func (h *harness) activeStreams(connID string) int64 {
	var n int64
	for _, s := range h.srv.broker.Sessions(connID) {
		n += s.Active()
	}
	return n
}

// waitReleased waits until no stream of the connection is open, then
// checks that status says so too.
func (h *harness) waitReleased(t *testing.T, connID string) {
	t.Helper()
	require.Eventually(t, func() bool { return h.activeStreams(connID) == 0 }, waitFor, pollEvery)
	for _, a := range h.status(t, connID, "").Agents {
		assert.Zero(t, a.ActiveStreams, a.AgentID)
	}
}

// waitTunnels waits until the node has n live tunnels for a connection.
// An agent gets Welcome just before the relay registers its session.
func (h *harness) waitTunnels(t *testing.T, connID string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(h.srv.broker.Sessions(connID)) == n },
		waitFor, pollEvery, "want %d tunnels", n)
}

// requireDone waits for done to be closed, and fails the test with msg
// when it is not within waitFor.
func requireDone(t *testing.T, done <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(waitFor):
		require.FailNow(t, msg)
	}
}

// requireNoRequest fails the test if the agent has received a request;
// what says what such a request would mean.
func requireNoRequest(t *testing.T, a *fakeAgent, what string) {
	t.Helper()
	select {
	case r := <-a.Requests():
		t.Fatalf("%s: %+v", what, r)
	default:
	}
}

// relayURL is the relay base URL an agent is configured with.
func (h *harness) relayURL() string {
	return "ws" + strings.TrimPrefix(h.ep.apiURL, "http")
}

// tunnelRequest sends a bare GET /v1/tunnel, as a refused agent would.
func (h *harness) tunnelRequest(t *testing.T, authorization string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, h.ep.apiURL+protocol.TunnelPath, nil)
	require.NoError(t, err)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", protocol.Subprotocol)
	return do(t, h.ep.client, req)
}

// wrongSecret returns token with its id kept and its secret replaced.
func wrongSecret(t *testing.T, token string) string {
	t.Helper()
	other, err := secret.New(secret.AgentTokenPrefix)
	require.NoError(t, err)
	cut := len(secret.AgentTokenPrefix) + 1 + secret.IDLen + 1
	return token[:cut] + other.Display[cut:]
}

func basicAuth(connID, key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(connID+":"+key))
}

// proxyConn is a client connection to the CONNECT proxy.
type proxyConn struct {
	net.Conn
	br   *bufio.Reader
	resp *http.Response
	body []byte // the body of a refusal
}

// connect sends CONNECT target with the given Proxy-Authorization (none if
// empty) and any bytes the client wants to send right behind it, and reads
// the answer. A refusal's body is read in full.
func (h *harness) connect(t *testing.T, target, proxyAuth string, early []byte) *proxyConn {
	t.Helper()
	return h.sendHead(t, connectHead(target, proxyAuth, "")+string(early))
}

// connectHead is a client's CONNECT head for target, with Proxy-Authorization
// when proxyAuth is not empty and the fields in more ("Name: value\r\n"...).
func connectHead(target, proxyAuth, more string) string {
	msg := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if proxyAuth != "" {
		msg += "Proxy-Authorization: " + proxyAuth + "\r\n"
	}
	return msg + more + "\r\n"
}

// sendHead opens a client connection to the proxy, writes msg as it is,
// and reads the answer. A refusal's body is read in full.
func (h *harness) sendHead(t *testing.T, msg string) *proxyConn {
	t.Helper()
	c, err := net.Dial("tcp", h.ep.proxyAddr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(waitFor)))
	_, err = io.WriteString(c, msg)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	pc := &proxyConn{Conn: c, br: br, resp: resp}
	if resp.StatusCode != http.StatusOK {
		pc.body, err = io.ReadAll(resp.Body)
		require.NoError(t, err)
	}
	return pc
}

// connectEcho opens a CONNECT to gitlab.corp.example:443 through
// connection connID with the admin key, sends early behind it, requires the
// proxy to accept, and reads as many bytes back.
func (h *harness) connectEcho(t *testing.T, connID string, early []byte) (*proxyConn, []byte) {
	t.Helper()
	pc := h.connect(t, "gitlab.corp.example:443", basicAuth(connID, h.adminKey), early)
	require.Equal(t, http.StatusOK, pc.resp.StatusCode)
	back := make([]byte, len(early))
	_, err := io.ReadFull(pc, back)
	require.NoError(t, err)
	return pc, back
}

func (p *proxyConn) Read(b []byte) (int, error) { return p.br.Read(b) }

func (p *proxyConn) reply() answer {
	return answer{status: p.resp.StatusCode, header: p.resp.Header, body: p.body}
}

// answerFunc plays the agent's side of one relay-opened stream after its
// request was read. The stream is closed when it returns.
type answerFunc = tunneltest.AnswerFunc

// refuse answers with a failed result.
func refuse(reason protocol.Reason, retryAfter int) answerFunc {
	return func(_ protocol.Request, st net.Conn) {
		_ = protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{
			Reason: reason, Message: "fake agent refuses: " + string(reason), RetryAfterSeconds: retryAfter,
		})
	}
}

// echo accepts and sends back every byte until the relay half-closes.
func echo(_ protocol.Request, st net.Conn) {
	if protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{OK: true, Addr: "10.0.0.7:443"}) != nil {
		return
	}
	_, _ = io.Copy(st, st)
}

// serveHTTP accepts and answers one HTTP request with a description of
// what reached the target.
func serveHTTP(_ protocol.Request, st net.Conn) {
	if protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{OK: true}) != nil {
		return
	}
	req, err := http.ReadRequest(bufio.NewReader(st))
	if err != nil {
		return
	}
	body := req.Method + " " + req.URL.RequestURI() + " host=" + req.Host +
		" proxy-authorization=" + req.Header.Get("Proxy-Authorization")
	resp := &http.Response{
		StatusCode: http.StatusTeapot, ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/plain"}},
		ContentLength: int64(len(body)), Body: io.NopCloser(strings.NewReader(body)), Close: true,
	}
	_ = resp.Write(st)
}

// byHost picks the answer by the requested host.
func byHost(answers map[string]answerFunc) answerFunc {
	return func(req protocol.Request, st net.Conn) {
		if a, ok := answers[req.Host]; ok {
			a(req, st)
			return
		}
		refuse(protocol.AllowlistMissing, 0)(req, st)
	}
}

// fakeAgent is the agent side of one tunnel, built from the same transport
// as the real agent.
type fakeAgent = tunneltest.Agent

func testHello(agentID string, tunnels int) protocol.Hello {
	return protocol.Hello{
		ProtocolVersion: protocol.Version,
		AgentID:         agentID,
		Hostname:        "host-" + agentID,
		Version:         "1.2.3",
		Tunnels:         tunnels,
		StartedAt:       time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC),
		Allowlist:       testAllowlist(),
	}
}

func testAllowlist() protocol.Allowlist {
	return protocol.Allowlist{
		Status:   "configured",
		Mode:     "enforce",
		Count:    3,
		SHA256:   "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
		LoadedAt: time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC),
		Allow: []protocol.RuleSpec{
			{Host: "gitlab.corp.example", Ports: []string{"443"}},
			{CIDR: "10.20.0.0/16", Ports: []string{"443", "8000-8100"}},
		},
		Deny: []protocol.RuleSpec{{CIDR: "10.20.5.0/24"}},
	}
}

// connectAgent opens a tunnel with token, completes Hello/Welcome and
// answers every relay-opened stream with answer. It fails the test if
// the relay refuses.
func (h *harness) connectAgent(t *testing.T, token string, hello protocol.Hello, answer answerFunc) *fakeAgent {
	t.Helper()
	a, resp, err := h.dialAgent(t, token, hello, answer)
	if err != nil && resp != nil {
		require.NoError(t, err, "relay answered HTTP %d", resp.StatusCode)
	}
	require.NoError(t, err)
	return a
}

// firstTunnel is connectAgent for a connection with no other tunnel up:
// it also waits until the relay has registered this one.
func (h *harness) firstTunnel(t *testing.T, c api.Connection, hello protocol.Hello, answer answerFunc) *fakeAgent {
	t.Helper()
	a := h.connectAgent(t, c.AgentToken, hello, answer)
	h.waitTunnels(t, c.ID, 1)
	return a
}

// dialAgent is connectAgent that returns the error (and the relay's
// answer, when it refused before the upgrade) instead of failing.
func (h *harness) dialAgent(t *testing.T, token string, hello protocol.Hello, answer answerFunc) (*fakeAgent, *tunnel.UpgradeError, error) {
	t.Helper()
	a, err := tunneltest.DialAgent(t, h.relayURL(), tunneltest.AgentOptions{
		Token: token, Hello: hello, Answer: answer, HTTPClient: h.ep.client,
	})
	var refused *tunnel.UpgradeError
	errors.As(err, &refused)
	return a, refused, err
}
