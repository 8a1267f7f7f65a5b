package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

func TestURL(t *testing.T) {
	tests := map[string]string{
		"wss://relay.example.com":                    "wss://relay.example.com/v1/tunnel",
		"wss://relay.example.com/":                   "wss://relay.example.com/v1/tunnel",
		"wss://relay.example.com/postern/":           "wss://relay.example.com/postern/v1/tunnel",
		"ws://127.0.0.1:8080/base?x=1#frag":          "ws://127.0.0.1:8080/base/v1/tunnel",
		"wss://relay.example.com/a%2Fb/":             "wss://relay.example.com/a/b/v1/tunnel",
		"wss://user:pass@relay.example.com/postern/": "wss://user:pass@relay.example.com/postern/v1/tunnel",
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			u, err := url.Parse(in)
			require.NoError(t, err)
			assert.Equal(t, want, URL(u))
		})
	}
}

func TestConfigValidateRefusesInsteadOfPatching(t *testing.T) {
	require.NoError(t, DefaultConfig().Validate())
	tests := map[string]func(*Config){
		"no backlog":                            func(c *Config) { c.AcceptBacklog = 0 },
		"keepalive at zero":                     func(c *Config) { c.KeepAliveInterval = 0 },
		"unbounded writes":                      func(c *Config) { c.WriteTimeout = 0 },
		"unbounded stream open":                 func(c *Config) { c.StreamOpenTimeout = -time.Second },
		"window below yamux's":                  func(c *Config) { c.StreamWindow = 64 << 10 },
		"negative ack hold":                     func(c *Config) { c.AckHold = -time.Second },
		"ack hold near the peer's open timeout": func(c *Config) { c.AckHold = StreamOpenTimeout },
	}
	for name, mut := range tests {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			mut(&c)
			assert.Error(t, c.Validate())
			_, err := Server(nil, c)
			assert.Error(t, err, "a session never starts with a refused config")
		})
	}
	off := DefaultConfig()
	off.KeepAlive, off.KeepAliveInterval = false, 0
	assert.NoError(t, off.Validate(), "without keepalive its interval is unused")
}

// A relay must keep every WebSocket message within MaxMessage; the agent's
// side of a tunnel enforces that cap on what it reads and ends the session.
func TestOversizedMessageEndsTheSession(t *testing.T) {
	sent := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protocol.Subprotocol}})
		if err != nil {
			sent <- err
			return
		}
		defer ws.CloseNow()
		// One well-formed yamux data frame for stream 1 carrying a control
		// frame of an unknown type, which a reader would otherwise ignore;
		// only its size is wrong.
		const body = MaxMessage
		msg := make([]byte, 12, 12+body)
		binary.BigEndian.PutUint32(msg[4:8], 1)
		binary.BigEndian.PutUint32(msg[8:12], body)
		msg = binary.BigEndian.AppendUint32(msg, body-4)
		msg = append(msg, 0xEE)
		msg = append(msg, make([]byte, body-5)...)
		sent <- nil
		// The client may hang up as soon as it has read the message's
		// header, which is its length, so the write may not finish.
		_ = ws.Write(r.Context(), websocket.MessageBinary, msg)
		_, _, _ = ws.Read(r.Context()) // until the client hangs up
	}))
	defer srv.Close()
	base, err := url.Parse("ws://" + srv.Listener.Addr().String())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	sess, err := Dial(ctx, base, DialOptions{Token: "t", Config: DefaultConfig()})
	require.NoError(t, err)
	defer sess.Close()
	require.NoError(t, <-sent, "the server did not upgrade")
	select {
	case <-sess.Done():
	case <-ctx.Done():
		t.Fatal("a message over MaxMessage did not end the session")
	}
}

func TestReadRefusal(t *testing.T) {
	tests := map[string]struct {
		status int
		header http.Header
		body   string
		want   *protocol.Error
		retry  time.Duration
	}{
		"relay token refusal": {
			status: 401, body: `{"reason":"AGENT_TOKEN_INVALID","message":"agent token is unknown"}`,
			want: &protocol.Error{Reason: protocol.AgentTokenInvalid, Message: "agent token is unknown"},
		},
		"reason header only": {
			status: 503, header: http.Header{"Postern-Reason": {"RELAY_UNAVAILABLE"}, "Retry-After": {"7"}}, body: "oops",
			want: &protocol.Error{Reason: protocol.RelayUnavailable, RetryAfter: 7}, retry: 7 * time.Second,
		},
		"body retry_after wins": {
			status: 429, header: http.Header{"Retry-After": {"1"}}, body: `{"reason":"RATE_LIMITED","retry_after":30}`,
			want: &protocol.Error{Reason: protocol.RateLimited, RetryAfter: 30}, retry: 30 * time.Second,
		},
		"not from a relay": {status: 404, body: "<html>not found</html>"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			for k, v := range tc.header {
				rec.Header()[k] = v
			}
			rec.WriteHeader(tc.status)
			_, _ = rec.WriteString(tc.body)
			e := ReadRefusal(rec.Result())
			assert.Equal(t, tc.status, e.StatusCode)
			assert.Equal(t, tc.want, e.Refusal)
			assert.Equal(t, tc.retry, e.RetryAfter())
			var pe *protocol.Error
			assert.Equal(t, tc.want != nil, errors.As(error(e), &pe), "errors.As finds the reason error")
		})
	}
}
