package relay

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

func TestConnectPassesAgentReasonThrough(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")

	tests := map[string]struct {
		reason     protocol.Reason // what the agent answers
		retryAfter int             // what the agent asks for
		status     int
		want       protocol.Reason // what the product sees
		provider   string
		retryHdr   string
	}{
		"dns timeout":        {reason: protocol.DNSTimeout, status: 504, want: protocol.DNSTimeout, provider: protocol.ProviderBaseURLUnreachable},
		"dns nxdomain":       {reason: protocol.DNSNXDomain, status: 502, want: protocol.DNSNXDomain, provider: protocol.ProviderBaseURLUnreachable},
		"dns servfail":       {reason: protocol.DNSServFail, status: 502, want: protocol.DNSServFail, provider: protocol.ProviderBaseURLUnreachable},
		"connect refused":    {reason: protocol.ConnectRefused, status: 502, want: protocol.ConnectRefused, provider: protocol.ProviderBaseURLUnreachable},
		"connect timeout":    {reason: protocol.ConnectTimeout, status: 504, want: protocol.ConnectTimeout, provider: protocol.ProviderBaseURLUnreachable},
		"host unreachable":   {reason: protocol.HostUnreachable, status: 502, want: protocol.HostUnreachable, provider: protocol.ProviderBaseURLUnreachable},
		"allowlist missing":  {reason: protocol.AllowlistMissing, status: 403, want: protocol.AllowlistMissing, provider: protocol.ProviderConnectivityBlocked},
		"target blocked":     {reason: protocol.TargetBlocked, status: 403, want: protocol.TargetBlocked, provider: protocol.ProviderBaseURLBlocked},
		"bad target":         {reason: protocol.BadTarget, status: 400, want: protocol.BadTarget, provider: protocol.ProviderBaseURLBlocked},
		"agent busy":         {reason: protocol.AgentBusy, retryAfter: 7, status: 429, want: protocol.AgentBusy, provider: protocol.ProviderRateLimited, retryHdr: "7"},
		"rate limited":       {reason: protocol.RateLimited, status: 429, want: protocol.RateLimited, provider: protocol.ProviderRateLimited, retryHdr: "1"},
		"unsupported op":     {reason: protocol.UnsupportedOp, status: 502, want: protocol.UnsupportedOp},
		"reason from future": {reason: "QUANTUM_FLUX", status: 502, want: "QUANTUM_FLUX"},
		"no reason at all":   {reason: "", status: 502, want: protocol.ProtocolError, provider: protocol.ProviderConnectivityBlocked},
	}
	answers := map[string]answerFunc{}
	hostOf := func(name string) string { return strings.ReplaceAll(name, " ", "-") + ".corp.example" }
	for name, tc := range tests {
		answers[hostOf(name)] = refuse(tc.reason, tc.retryAfter)
	}
	a := h.firstTunnel(t, c, testHello("agent-1", 1), byHost(answers))

	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := time.Now()
			pc := h.connect(t, hostOf(name)+":8443", basicAuth(c.ID, h.adminKey), nil)
			r := pc.reply()
			require.Equal(t, tc.status, r.status, "body: %s", r.body)
			assert.Equal(t, string(tc.want), r.header.Get("Postern-Reason"))
			e := decode[api.Error](t, r, tc.status)
			assert.Equal(t, tc.want, e.Reason)
			assert.Equal(t, tc.provider, e.ProviderErrorCode)
			assert.Equal(t, r.header.Get("Postern-Request-Id"), e.RequestID)
			assert.NotEmpty(t, e.RequestID)
			if tc.reason != "" {
				assert.Equal(t, "fake agent refuses: "+string(tc.reason), e.Message, "the agent's message reaches the product")
			}
			assert.Equal(t, tc.retryHdr, r.header.Get("Retry-After"))
			if tc.retryHdr != "" {
				assert.Equal(t, tc.retryHdr, strconv.Itoa(e.RetryAfter))
			}

			// This subtest's request is the only one in flight.
			req := a.NextRequest(t)
			assert.Equal(t, protocol.OpDial, req.Op)
			assert.Equal(t, hostOf(name), req.Host)
			assert.Equal(t, 8443, req.Port)
			assert.Equal(t, e.RequestID, req.ID, "the agent sees the product's request id")
			assert.WithinRange(t, req.Deadline(), before, time.Now().Add(DefaultConfig().OpenTimeout+time.Second))
		})
	}
	// Every refused stream was released.
	h.waitReleased(t, c.ID)
}

func TestConnectCarriesBytesBothWays(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	key := h.createKey(t, "acme")
	a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)

	// A TLS ClientHello typically leaves right behind the CONNECT line.
	early := []byte("\x16\x03\x01early bytes")
	pc := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, key), early)
	require.Equal(t, http.StatusOK, pc.resp.StatusCode)
	reqID := pc.resp.Header.Get("Postern-Request-Id")
	assert.NotEmpty(t, reqID)

	req := a.NextRequest(t)
	assert.Equal(t, "gitlab.corp.example", req.Host)
	assert.Equal(t, 443, req.Port)
	assert.Equal(t, reqID, req.ID)
	assert.False(t, req.Deadline().IsZero(), "every stream has a deadline")

	got := make([]byte, len(early))
	_, err := io.ReadFull(pc, got)
	require.NoError(t, err)
	assert.Equal(t, early, got, "bytes sent behind CONNECT reach the target")

	more := []byte(strings.Repeat("0123456789", 50_000)) // several yamux frames
	go func() { _, _ = pc.Write(more) }()
	back := make([]byte, len(more))
	_, err = io.ReadFull(pc, back)
	require.NoError(t, err)
	assert.Equal(t, more, back)

	st := h.status(t, c.ID, "")
	require.Len(t, st.Agents, 1)
	assert.Equal(t, 1, st.Agents[0].ActiveStreams)

	// Half-close: the client is done writing; the target sees EOF and
	// its close reaches the client as EOF.
	require.NoError(t, pc.Conn.(*net.TCPConn).CloseWrite())
	rest, err := io.ReadAll(pc)
	require.NoError(t, err)
	assert.Empty(t, rest)
	h.waitReleased(t, c.ID)
}

func TestConnectRefusals(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	revoked := h.createConnection(t, "old", "acme")
	h.revoke(t, revoked.ID)
	theirs := h.createConnection(t, "theirs", "beta")
	key := h.createKey(t, "acme")
	a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)

	tests := map[string]struct {
		target string
		auth   string
		status int
		reason protocol.Reason
	}{
		"no proxy authorization": {"gitlab.corp.example:443", "", 407, protocol.ProxyAuthRequired},
		"bearer scheme":          {"gitlab.corp.example:443", "Bearer " + key, 407, protocol.ProxyAuthRequired},
		"not base64":             {"gitlab.corp.example:443", "Basic !!!", 407, protocol.ProxyAuthRequired},
		"no colon":               {"gitlab.corp.example:443", "Basic " + base64.StdEncoding.EncodeToString([]byte(c.ID)), 407, protocol.ProxyAuthRequired},
		"empty connection id":    {"gitlab.corp.example:443", basicAuth("", key), 407, protocol.ProxyAuthRequired},
		"wrong key":              {"gitlab.corp.example:443", basicAuth(c.ID, key[:len(key)-4]+"AAAA"), 407, protocol.ProxyAuthRequired},
		"agent token as key":     {"gitlab.corp.example:443", basicAuth(c.ID, c.AgentToken), 407, protocol.ProxyAuthRequired},
		"unknown connection":     {"gitlab.corp.example:443", basicAuth("conn_0000000000000000", key), 407, protocol.ProxyAuthRequired},
		"other workspace":        {"gitlab.corp.example:443", basicAuth(theirs.ID, key), 407, protocol.ProxyAuthRequired},
		"revoked connection":     {"gitlab.corp.example:443", basicAuth(revoked.ID, key), 403, protocol.ConnectionRevoked},
		"never connected":        {"gitlab.corp.example:443", basicAuth(theirs.ID, h.adminKey), 502, protocol.AgentNeverConnected},
		"no port":                {"gitlab.corp.example", basicAuth(c.ID, key), 400, protocol.BadTarget},
		"port zero":              {"gitlab.corp.example:0", basicAuth(c.ID, key), 400, protocol.BadTarget},
		"port too high":          {"gitlab.corp.example:65536", basicAuth(c.ID, key), 400, protocol.BadTarget},
		"port with leading zero": {"gitlab.corp.example:0443", basicAuth(c.ID, key), 400, protocol.BadTarget},
		"empty host":             {":443", basicAuth(c.ID, key), 400, protocol.BadTarget},
		"host longer than 255":   {strings.Repeat("a", 256) + ":443", basicAuth(c.ID, key), 400, protocol.BadTarget},
	}
	bodies := map[string]api.Error{}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pc := h.connect(t, tc.target, tc.auth, nil)
			r := pc.reply()
			requireRefusal(t, r, tc.status, tc.reason)
			assert.Equal(t, strconv.Itoa(tc.status)+" "+string(tc.reason), pc.resp.Status, "the reason is the status line's text")
			if tc.status == http.StatusProxyAuthRequired {
				assert.Equal(t, `Basic realm="postern"`, r.header.Get("Proxy-Authenticate"))
			}
			bodies[name] = withoutRequestID(t, r)
		})
	}
	t.Run("every bad credential gets one answer", func(t *testing.T) {
		want := bodies["unknown connection"]
		for name, tc := range tests {
			if tc.status == http.StatusProxyAuthRequired && name != "bearer scheme" {
				assert.Equal(t, want, bodies[name], name)
			}
		}
		// The API's scheme, whatever the key, gets the same answer and
		// where the API is: nothing about the key.
		bearer := want
		bearer.Message += "; Bearer <api key> is the API's scheme, and the API is on --listen"
		assert.Equal(t, bearer, bodies["bearer scheme"])
	})
	requireNoRequest(t, a, "a refused CONNECT reached the agent")
}

func TestProxyRejectsOtherRequests(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	tests := map[string]string{
		"origin-form":    "GET /v1/connections HTTP/1.1\r\nHost: relay\r\n",
		"https absolute": "GET https://gitlab.corp.example/ HTTP/1.1\r\nHost: gitlab.corp.example\r\n",
	}
	for name, head := range tests {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", h.ep.proxyAddr)
			require.NoError(t, err)
			defer conn.Close()
			_, err = io.WriteString(conn, head+"Proxy-Authorization: "+basicAuth(c.ID, h.adminKey)+"\r\nConnection: close\r\n\r\n")
			require.NoError(t, err)
			requireRefusal(t, readAnswer(t, bufio.NewReader(conn), nil), http.StatusBadRequest, protocol.InvalidRequest)
		})
	}
}

func TestPlainHTTPIsForwarded(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), byHost(map[string]answerFunc{
		"gitlab.corp.example": serveHTTP,
		"dns.corp.example":    refuse(protocol.DNSNXDomain, 0),
	}))
	h.waitTunnels(t, c.ID, 1)

	proxyURL := &url.URL{Scheme: "http", Host: h.ep.proxyAddr, User: url.UserPassword(c.ID, h.adminKey)}
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}

	get := func(t *testing.T, target string) answer {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, target, nil)
		require.NoError(t, err)
		return do(t, client, req)
	}

	t.Run("forwarded through the tunnel", func(t *testing.T) {
		r := get(t, "http://gitlab.corp.example:8080/api/v4/projects?page=2")
		require.Equal(t, http.StatusTeapot, r.status, "body: %s", r.body)
		assert.Equal(t, "GET /api/v4/projects?page=2 host=gitlab.corp.example:8080 proxy-authorization=", string(r.body),
			"the target gets the request without the product's proxy credentials")
		req := a.NextRequest(t)
		assert.Equal(t, "gitlab.corp.example", req.Host)
		assert.Equal(t, 8080, req.Port)
		assert.Equal(t, r.header.Get("Postern-Request-Id"), req.ID)
	})

	t.Run("default port 80", func(t *testing.T) {
		r := get(t, "http://gitlab.corp.example/")
		require.Equal(t, http.StatusTeapot, r.status, "body: %s", r.body)
		assert.Equal(t, 80, a.NextRequest(t).Port)
	})

	t.Run("agent refusal keeps its reason", func(t *testing.T) {
		r := get(t, "http://dns.corp.example/")
		e := requireRefusal(t, r, http.StatusBadGateway, protocol.DNSNXDomain)
		assert.Equal(t, protocol.ProviderBaseURLUnreachable, e.ProviderErrorCode)
		assert.Equal(t, "dns.corp.example", a.NextRequest(t).Host)
	})

	t.Run("missing credentials", func(t *testing.T) {
		bare := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: h.ep.proxyAddr})}
		t.Cleanup(bare.CloseIdleConnections)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://gitlab.corp.example/", nil)
		require.NoError(t, err)
		requireRefusal(t, do(t, &http.Client{Transport: bare}, req), http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
	})
}

// twoAgents connects agent-a, then agent-b, one tunnel each, to c, which
// has no tunnel yet, and waits until the relay has registered both.
func (h *harness) twoAgents(t *testing.T, c api.Connection) (a, b *fakeAgent) {
	t.Helper()
	a = h.firstTunnel(t, c, testHello("agent-a", 1), echo)
	b = h.connectAgent(t, c.AgentToken, testHello("agent-b", 1), echo)
	h.waitTunnels(t, c.ID, 2)
	return a, b
}

func TestStreamsSpreadAcrossTunnels(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	a, b := h.twoAgents(t, c)

	first := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	require.Equal(t, http.StatusOK, first.resp.StatusCode)
	second := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	require.Equal(t, http.StatusOK, second.resp.StatusCode)

	assert.Len(t, a.Requests(), 1, "agent-a got one stream")
	assert.Len(t, b.Requests(), 1, "agent-b got one stream")
	st := h.status(t, c.ID, "")
	require.Len(t, st.Agents, 2)
	for _, ag := range st.Agents {
		assert.Equal(t, 1, ag.ActiveStreams, ag.AgentID)
	}
}

func TestStreamFallsBackToNextTunnel(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	a, b := h.twoAgents(t, c)
	cands := h.srv.broker.Candidates(c.ID)
	require.Equal(t, "agent-b", cands[0].Hello.AgentID, "among equally busy tunnels the newest is tried first")
	first, second := b, a

	// The first candidate refuses new streams (yamux go-away); the ping
	// returns once the relay has read the go-away before it.
	require.NoError(t, first.Session.GoAway())
	_, err := first.Session.Ping()
	require.NoError(t, err)

	_, got := h.connectEcho(t, c.ID, []byte("ping"))
	assert.Equal(t, "ping", string(got))
	assert.Len(t, second.Requests(), 1)
	assert.Empty(t, first.Requests())

	t.Run("no tunnel accepts", func(t *testing.T) {
		require.NoError(t, second.Session.GoAway())
		_, err := second.Session.Ping()
		require.NoError(t, err)
		pc := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
		requireRefusal(t, pc.reply(), http.StatusBadGateway, protocol.AgentOffline)
	})
}

// A tunnel that ends after the request reached it, before the agent
// answered, sends the request on to the next tunnel: nothing of the data
// phase has happened.
func TestStreamMovesOnWhenTunnelEndsBeforeAnswer(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	a := h.firstTunnel(t, c, testHello("agent-a", 1), echo)
	var dying *fakeAgent
	ready := make(chan struct{})
	dying = h.connectAgent(t, c.AgentToken, testHello("agent-b", 1), func(protocol.Request, net.Conn) {
		<-ready
		_ = dying.Session.Close() // the tunnel goes before the agent answers
	})
	close(ready)
	h.waitTunnels(t, c.ID, 2)
	require.Equal(t, "agent-b", h.srv.broker.Candidates(c.ID)[0].Hello.AgentID, "the dying tunnel is tried first")

	_, got := h.connectEcho(t, c.ID, []byte("ping"))
	assert.Equal(t, "ping", string(got), "the request went on to agent-a")
	assert.Len(t, dying.Requests(), 1, "agent-b's tunnel got the request first")
	assert.Len(t, a.Requests(), 1)
}

func TestRelayStreamCap(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.MaxStreamsPerTunnel = 1 })
	h.firstTunnel(t, c, testHello("agent-1", 1), echo)

	first := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	require.Equal(t, http.StatusOK, first.resp.StatusCode)
	pc := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	e := requireRefusal(t, pc.reply(), http.StatusTooManyRequests, protocol.AgentBusy)
	assert.Equal(t, protocol.ProviderRateLimited, e.ProviderErrorCode)
	assert.Equal(t, "1", pc.resp.Header.Get("Retry-After"))
	assert.Equal(t, 1, e.RetryAfter)

	// Once the first stream ends the slot is free again.
	require.NoError(t, first.Close())
	h.waitReleased(t, c.ID)
	again := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	assert.Equal(t, http.StatusOK, again.resp.StatusCode)
}

func TestAgentThatNeverAnswers(t *testing.T) {
	t.Parallel()
	const openTimeout = 300 * time.Millisecond
	h, c := newConnHarness(t, "", func(c *Config) { c.OpenTimeout = openTimeout })
	silent := func(_ protocol.Request, st net.Conn) { _, _ = io.Copy(io.Discard, st) }
	h.firstTunnel(t, c, testHello("agent-1", 1), silent)

	start := time.Now()
	pc := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	e := requireRefusal(t, pc.reply(), http.StatusGatewayTimeout, protocol.ConnectTimeout)
	assert.Equal(t, protocol.ProviderBaseURLUnreachable, e.ProviderErrorCode)
	assert.GreaterOrEqual(t, time.Since(start), openTimeout-10*time.Millisecond, "the relay waited for the agent")
	h.waitReleased(t, c.ID)
}

func TestAgentAnswersGarbage(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	garbage := func(_ protocol.Request, st net.Conn) {
		_ = protocol.WriteFrame(st, protocol.FrameHello, protocol.Hello{AgentID: "confused"})
	}
	h.firstTunnel(t, c, testHello("agent-1", 1), garbage)

	pc := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	requireRefusal(t, pc.reply(), http.StatusBadGateway, protocol.ProtocolError)
	h.waitReleased(t, c.ID)
}

func TestRevokeClosesTunnelsAndStreams(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 2), echo)
	b := h.connectAgent(t, c.AgentToken, testHello("agent-1", 2), echo)
	h.waitTunnels(t, c.ID, 2)

	pc, one := h.connectEcho(t, c.ID, []byte("x"))

	start := time.Now()
	h.revoke(t, c.ID)

	// The proxied stream ends within a second.
	require.NoError(t, pc.SetReadDeadline(start.Add(time.Second)))
	_, err := pc.Read(one)
	require.Error(t, err)
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "stream still open a second after revocation")

	for name, ag := range map[string]*fakeAgent{"a": a, "b": b} {
		select {
		case <-ag.Session.Done():
		case <-time.After(time.Until(start.Add(time.Second))):
			t.Fatalf("tunnel %s still up a second after revocation", name)
		}
		var saw bool
		for f := range ag.Control() { // closed once the agent read everything
			if f.Type == protocol.FrameRevoked {
				var rv protocol.Revoked
				require.NoError(t, f.Decode(protocol.FrameRevoked, &rv))
				assert.NotEmpty(t, rv.Message)
				saw = true
			}
		}
		assert.True(t, saw, "tunnel %s was told why it closed", name)
	}

	st := h.status(t, c.ID, "")
	assert.Equal(t, "revoked", st.TunnelStatus)
	assert.Empty(t, st.Agents)
	_, resp, err := h.dialAgent(t, c.AgentToken, testHello("agent-1", 2), echo)
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Equal(t, string(protocol.AgentTokenRevoked), resp.Header.Get("Postern-Reason"))
}

// serveHarness runs the harness's node with Serve on loopback listeners
// and points the harness at them.
func serveHarness(t *testing.T, opts ...func(*Config)) (*harness, context.CancelFunc, <-chan error) {
	t.Helper()
	h := newHarness(t, opts...)
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	h.ep = endpoints{apiURL: "http://" + apiLn.Addr().String(), proxyAddr: proxyLn.Addr().String(), client: &http.Client{Transport: tr}}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- h.srv.Serve(ctx, apiLn, proxyLn)
		close(done) // later receives (the cleanup's) return at once
	}()
	t.Cleanup(func() {
		cancel()
		h.srv.Close() // cuts any drain short
		<-done
	})
	return h, cancel, done
}

func waitServe(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(waitFor):
		require.FailNow(t, "Serve did not return")
	}
}

func TestServeDrainsOnCancel(t *testing.T) {
	t.Parallel()
	h, cancel, done := serveHarness(t)
	health := decode[map[string]string](t, h.call(t, http.MethodGet, "/healthz", "", nil), http.StatusOK)
	assert.Equal(t, "node-test", health["node_id"])
	c := h.createConnection(t, "gitlab", "")
	a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)
	pc, _ := h.connectEcho(t, c.ID, []byte("hi"))

	cancel()
	// The agent is asked to move elsewhere...
	var goAway protocol.GoAway
	for f := range a.Control() {
		if f.Type == protocol.FrameGoAway {
			require.NoError(t, f.Decode(protocol.FrameGoAway, &goAway))
			break
		}
	}
	assert.Equal(t, "shutdown", goAway.Reason)
	// ...new work is refused at once...
	_, err := net.Dial("tcp", h.ep.proxyAddr)
	assert.Error(t, err, "the proxy listener is closed")
	// ...while the open stream still carries bytes.
	_, err = pc.Write([]byte("still here"))
	require.NoError(t, err)
	more := make([]byte, len("still here"))
	_, err = io.ReadFull(pc, more)
	require.NoError(t, err)
	assert.Equal(t, "still here", string(more))
	assert.Empty(t, done, "Serve returned with a stream open")

	// The last stream ends: Serve closes the tunnel and returns.
	require.NoError(t, pc.Close())
	waitServe(t, done)
	requireDone(t, a.Session.Done(), "tunnel survived Serve")
}

func TestServeDrainTimeoutCutsStreams(t *testing.T) {
	t.Parallel()
	const drain = 200 * time.Millisecond
	h, cancel, done := serveHarness(t, func(c *Config) { c.DrainTimeout = drain })
	c := h.createConnection(t, "gitlab", "")
	a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)
	pc := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	require.Equal(t, http.StatusOK, pc.resp.StatusCode)

	start := time.Now()
	cancel()
	waitServe(t, done)
	assert.GreaterOrEqual(t, time.Since(start), drain, "open streams get the drain timeout")
	_, err := io.ReadAll(pc)
	assert.NoError(t, err, "the cut stream ends with EOF")
	requireDone(t, a.Session.Done(), "tunnel survived Serve")
}

func TestServeWithoutStreamsStopsAtOnce(t *testing.T) {
	t.Parallel()
	h, cancel, done := serveHarness(t) // default drain timeout: 30 s
	c := h.createConnection(t, "gitlab", "")
	h.firstTunnel(t, c, testHello("agent-1", 1), echo)
	cancel()
	waitServe(t, done)
}

// The JSON body of a refusal has exactly the documented fields.
func TestRefusalBodyFields(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	pc := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(pc.body, &raw))
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	assert.ElementsMatch(t, []string{"reason", "provider_error_code", "message", "request_id"}, keys)
}
