package reply

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

func TestRawPutsTheReasonInTheStatusLine(t *testing.T) {
	tests := map[string]struct {
		reason protocol.Reason
		status int
		want   string // the status line
	}{
		"policy refusal":   {protocol.TargetBlocked, http.StatusForbidden, "HTTP/1.1 403 TARGET_BLOCKED\r\n"},
		"challenge":        {protocol.ProxyAuthRequired, http.StatusProxyAuthRequired, "HTTP/1.1 407 PROXY_AUTH_REQUIRED\r\n"},
		"not a token":      {"bad reason\r\nX: y", http.StatusBadGateway, "HTTP/1.1 502 Bad Gateway\r\n"},
		"lower case":       {"target_blocked", http.StatusForbidden, "HTTP/1.1 403 Forbidden\r\n"},
		"no reason at all": {"", http.StatusInternalServerError, "HTTP/1.1 500 Internal Server Error\r\n"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := http.Header{}
			h.Set("Postern-Request-Id", "r1")
			raw := Raw(tc.status, protocol.Error{Reason: tc.reason, Message: "m", RequestID: "r1"}, h)
			line, _, _ := bytes.Cut(raw, []byte("\n"))
			assert.Equal(t, tc.want, string(line)+"\n")

			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), &http.Request{Method: http.MethodConnect})
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.True(t, resp.Close, "the answer ends the connection")
			assert.Equal(t, strconv.Itoa(len(body)), resp.Header.Get("Content-Length"))
			assert.Equal(t, "r1", resp.Header.Get("Postern-Request-Id"))
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var e protocol.Error
			require.NoError(t, json.Unmarshal(body, &e))
			assert.Equal(t, tc.reason, e.Reason)
			assert.Equal(t, "r1", e.RequestID)
		})
	}
}

// Refuse on a real HTTP/1.1 connection: the reason is the status text, the
// headers and body are Error's, and the connection ends after the answer.
func TestRefuseOnAConnection(t *testing.T) {
	srv := httptest.NewServer(WithRequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Refuse(w, r, protocol.Errorf(protocol.AllowlistMissing, "no allow rule covers %s", r.Host))
	})))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(c, "CONNECT jira.corp.example:443 HTTP/1.1\r\nHost: jira.corp.example:443\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "HTTP/1.1 403 ALLOWLIST_MISSING\r\n", line)
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader([]byte(line)), br)), &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	var e protocol.Error
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	assert.Equal(t, "ALLOWLIST_MISSING", resp.Header.Get("Postern-Reason"))
	assert.Equal(t, resp.Header.Get("Postern-Request-Id"), e.RequestID)
	assert.NotEmpty(t, e.RequestID)
	assert.Equal(t, "no allow rule covers jira.corp.example:443", e.Message)
	rest, err := io.ReadAll(br)
	require.NoError(t, err, "the relay closes the connection after the answer")
	assert.Empty(t, rest)
}

// Where the connection cannot be taken over, Refuse answers as Error does.
func TestRefuseWithoutAConnection(t *testing.T) {
	w := httptest.NewRecorder()
	Refuse(w, httptest.NewRequest(http.MethodGet, "http://jira.corp.example/", nil), protocol.Errorf(protocol.RateLimited, "slow down"))
	assert.Equal(t, http.StatusTooManyRequests, w.Code)
	assert.Equal(t, "RATE_LIMITED", w.Header().Get("Postern-Reason"))
	assert.NotEmpty(t, w.Header().Get("Retry-After"))
	var e protocol.Error
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &e))
	assert.Equal(t, protocol.RateLimited, e.Reason)
}
