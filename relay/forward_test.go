package relay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// keepAliveTarget plays a target behind the agent that answers every
// request of a stream, naming the stream and the request, until the relay
// closes the stream; ended receives once per stream that ended.
type keepAliveTarget struct {
	streams atomic.Int64
	ended   chan struct{}
}

func newKeepAliveTarget() *keepAliveTarget { return &keepAliveTarget{ended: make(chan struct{}, 16)} }

func (k *keepAliveTarget) answer(_ protocol.Request, st net.Conn) {
	defer func() { k.ended <- struct{}{} }()
	if protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{OK: true}) != nil {
		return
	}
	stream := k.streams.Add(1)
	br := bufio.NewReader(st)
	for n := 1; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		body := fmt.Sprintf("stream %d request %d", stream, n)
		resp := &http.Response{StatusCode: http.StatusOK, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
			ContentLength: int64(len(body)), Body: io.NopCloser(strings.NewReader(body))}
		if resp.Write(st) != nil {
			return
		}
	}
}

// forwardingClient is a keep-alive client of the proxy listener with
// conn's id and key.
func forwardingClient(t *testing.T, h *harness, connID, key string) *http.Transport {
	t.Helper()
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: h.ep.proxyAddr, User: url.UserPassword(connID, key)})}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func getVia(t *testing.T, tr *http.Transport, target string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, target, nil)
	require.NoError(t, err)
	return do(t, &http.Client{Transport: tr}, req)
}

// Keep-alive http:// requests of one client connection share one stream
// and one target connection; closing the client connection closes it.
func TestPlainHTTPKeepsTheUpstream(t *testing.T) {
	t.Parallel()
	h, _, _ := serveHarness(t)
	c := h.createConnection(t, "gitlab", "")
	target := newKeepAliveTarget()
	a := h.firstTunnel(t, c, testHello("agent-1", 1), byHost(map[string]answerFunc{"gitlab.corp.example": target.answer}))
	tr := forwardingClient(t, h, c.ID, h.adminKey)

	for n := 1; n <= 5; n++ {
		r := getVia(t, tr, "http://gitlab.corp.example:8080/api/v4/projects")
		require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
		assert.Equal(t, fmt.Sprintf("stream 1 request %d", n), string(r.body))
	}
	assert.Equal(t, "gitlab.corp.example", a.NextRequest(t).Host)
	requireNoRequest(t, a, "a keep-alive request opened a second stream")

	tr.CloseIdleConnections()
	requireDone(t, target.ended, "the upstream stayed open after the client connection closed")
}

// A revoked API key closes the idle upstreams opened with it, and the
// next request on the same client connection is refused with the reason
// in its status line.
func TestPlainHTTPUpstreamEndsWithItsKey(t *testing.T) {
	t.Parallel()
	h, _, _ := serveHarness(t)
	c := h.createConnection(t, "gitlab", "acme")
	target := newKeepAliveTarget()
	h.firstTunnel(t, c, testHello("agent-1", 1), byHost(map[string]answerFunc{"gitlab.corp.example": target.answer}))
	k := h.newKey(t, api.CreateAPIKeyRequest{Name: "product", Workspace: "acme"})
	tr := forwardingClient(t, h, c.ID, k.Key)

	r := getVia(t, tr, "http://gitlab.corp.example/")
	require.Equal(t, "stream 1 request 1", string(r.body))
	decode[api.APIKey](t, h.call(t, http.MethodPost, "/v1/api-keys/"+k.ID+"/revoke", h.adminKey, nil), http.StatusOK)
	requireDone(t, target.ended, "the revoked key's idle upstream stayed open")

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://gitlab.corp.example/", nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "407 PROXY_AUTH_REQUIRED", resp.Status)
	assert.True(t, resp.Close, "the refusal closes the client connection")
	assert.Equal(t, int64(1), target.streams.Load())
}

// A malformed CONNECT line that follows keep-alive requests on the same
// client connection is refused BAD_TARGET like a first line, not with the
// bare 400 of the HTTP layer.
func TestMalformedConnectAfterKeepAliveRequests(t *testing.T) {
	t.Parallel()
	h, _, _ := serveHarness(t)
	c := h.createConnection(t, "gitlab", "")
	target := newKeepAliveTarget()
	h.firstTunnel(t, c, testHello("agent-1", 1), byHost(map[string]answerFunc{"gitlab.corp.example": target.answer}))
	creds := "Proxy-Authorization: " + basicAuth(c.ID, h.adminKey) + "\r\n"

	for _, bad := range []string{"user@gitlab.corp.example:443", "[1.2.3.4]:443", "gitlab.corp.example:443/x", "gitl%61b.corp.example:443"} {
		t.Run(bad, func(t *testing.T) {
			conn, err := net.Dial("tcp", h.ep.proxyAddr)
			require.NoError(t, err)
			defer conn.Close()
			require.NoError(t, conn.SetDeadline(time.Now().Add(waitFor)))
			br := bufio.NewReader(conn)
			_, err = io.WriteString(conn, "GET http://gitlab.corp.example/ HTTP/1.1\r\nHost: gitlab.corp.example\r\n"+creds+"\r\n")
			require.NoError(t, err)
			r := readAnswer(t, br, &http.Request{Method: http.MethodGet})
			require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
			_, err = io.WriteString(conn, "CONNECT "+bad+" HTTP/1.1\r\nHost: "+bad+"\r\n"+creds+"\r\n")
			require.NoError(t, err)
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "HTTP/1.1 400 BAD_TARGET\r\n", line)
		})
	}
}

// A client given the API listener as its proxy is told where the proxy
// listener is, with the reason in the status line.
func TestProxyRequestToTheAPIListener(t *testing.T) {
	t.Parallel()
	h, _, _ := serveHarness(t)
	apiAddr := strings.TrimPrefix(h.ep.apiURL, "http://")
	want := "this is the API listener; the proxy (CONNECT host:port, http:// URLs) is on --proxy-listen (" + h.ep.proxyAddr + ")"

	t.Run("CONNECT", func(t *testing.T) {
		conn, err := net.Dial("tcp", apiAddr)
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(waitFor)))
		_, err = io.WriteString(conn, "CONNECT gitlab.corp.example:443 HTTP/1.1\r\nHost: gitlab.corp.example:443\r\n\r\n")
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, "400 INVALID_REQUEST", resp.Status)
		var body api.Error
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		assert.Equal(t, want, body.Message)
	})
	t.Run("http:// URL", func(t *testing.T) {
		tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: apiAddr})}
		t.Cleanup(tr.CloseIdleConnections)
		r := getVia(t, tr, "http://gitlab.corp.example/v1/connections")
		e := requireRefusal(t, r, http.StatusBadRequest, protocol.InvalidRequest)
		assert.Equal(t, want, e.Message)
	})
}

// The API's Bearer scheme in Proxy-Authorization is refused with which
// scheme the proxy takes and where the API is.
func TestProxyBearerCredentials(t *testing.T) {
	t.Parallel()
	h, _, _ := serveHarness(t)
	c := h.createConnection(t, "gitlab", "")
	pc := h.connect(t, "gitlab.corp.example:443", "Bearer "+h.adminKey, nil)
	assert.Equal(t, "407 PROXY_AUTH_REQUIRED", pc.resp.Status)
	e := requireRefusal(t, pc.reply(), http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
	assert.Equal(t, "Proxy-Authorization must be Basic base64(<connection id>:<api key>) with a key valid for that connection; "+
		"Bearer <api key> is the API's scheme, and the API is on --listen ("+strings.TrimPrefix(h.ep.apiURL, "http://")+")", e.Message)
	pc = h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, "pak_wrong"), nil)
	assert.NotContains(t, string(pc.body), "Bearer", "a wrong Basic credential gets no Bearer hint")
}
