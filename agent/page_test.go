package agent

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/protocol"
)

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(body)
}

// TestStatusPageShowsWhatStatusShows: the page at / carries the facts of
// /status, refused streams included, by reason and the last of them.
func TestStatusPageShowsWhatStatusShows(t *testing.T) {
	relay := testkit.NewRelay(t, time.Second)
	cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 1\nallow:\n  - host: gitlab.corp.example\n    ports: [443]\n"+
		"blocked: [10.9.0.0/16]\n", relay.URL()))
	a := runAgent(t, Options{Config: cfg})
	s := relay.Session(t)
	for range 2 {
		res, _ := s.Dial(t, testkit.DialRequest("10.1.2.3", 443))
		require.Equal(t, protocol.AllowlistMissing, res.Reason)
	}
	srv := httptest.NewServer(a.StatusHandler())
	defer srv.Close()

	st := a.Status()
	assert.Equal(t, map[protocol.Reason]int{protocol.AllowlistMissing: 2}, st.Refusals)
	require.Len(t, st.LastRefusals, 2)
	assert.Equal(t, "10.1.2.3:443", st.LastRefusals[0].Target)

	code, h, body := get(t, srv.URL+"/")
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "text/html; charset=utf-8", h.Get("Content-Type"))
	assert.Contains(t, h.Get("Content-Security-Policy"), "default-src 'none'")
	assert.Equal(t, []string{"10.9.0.0/16"}, st.Allowlist.Blocked)
	for _, want := range []string{st.AgentID, "1 of 1 up", "ws://", "gitlab.corp.example", st.Allowlist.SHA256,
		"<td>blocked</td><td><code>10.9.0.0/16</code></td>",
		"<code>ALLOWLIST_MISSING</code> × 2", "10.1.2.3:443", "✓ yes"} {
		assert.Contains(t, body, want)
	}
	assert.NotContains(t, body, testkit.Token, "the page never shows the token")
	assert.False(t, strings.Contains(body, "<script"), "the page needs no script")
	code, _, css := get(t, srv.URL+"/page.css")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, css, "body")
}

// TestDebugEndpointsAreForThisMachineOnly: logs and profiles go to a
// loopback client, and to no one else whatever status_listen is.
func TestDebugEndpointsAreForThisMachineOnly(t *testing.T) {
	relay := testkit.NewRelay(t, time.Second)
	cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 1\n", relay.URL()))
	opts := Options{Config: cfg}
	a, err := New(testOptions(t, opts))
	require.NoError(t, err)
	a.opts.RecentLogs = func() []string { return []string{"line one", "line two"} }
	h := a.StatusHandler()
	for path, want := range map[string]string{
		"/debug/logs":                    "line one\nline two\n",
		"/debug/pprof/goroutine?debug=2": "goroutine",
	} {
		local := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "127.0.0.1:5555"
		h.ServeHTTP(local, req)
		assert.Equal(t, http.StatusOK, local.Code, path)
		assert.Contains(t, local.Body.String(), want, path)

		remote := httptest.NewRecorder()
		req = httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "192.0.2.7:5555"
		h.ServeHTTP(remote, req)
		assert.Equal(t, http.StatusForbidden, remote.Code, path)
	}
	unknown := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/debug/pprof/threadcreate", nil)
	req.RemoteAddr = "[::1]:5555"
	h.ServeHTTP(unknown, req)
	assert.Equal(t, http.StatusNotFound, unknown.Code)
}
