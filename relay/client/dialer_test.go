package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

// canaryKey must never show in an error or in fmt or slog output.
const canaryKey = "pak_canary0000000_CANARY-KEY-MUST-NOT-LEAK-9f8e7d"

// proxyStandIn is a CONNECT proxy on loopback that hands each request to
// answer, which owns the connection from then on.
type proxyStandIn struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	seen []*http.Request
}

func startProxy(t *testing.T, tlsCfg *tls.Config, answer func(c net.Conn, req *http.Request)) *proxyStandIn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	p := &proxyStandIn{ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				p.mu.Lock()
				p.seen = append(p.seen, req)
				p.mu.Unlock()
				answer(c, req)
			})
		}
	})
	t.Cleanup(func() { _ = ln.Close(); p.wg.Wait() })
	return p
}

func (p *proxyStandIn) addr() string { return p.ln.Addr().String() }

func (p *proxyStandIn) last() *http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[len(p.seen)-1]
}

func newTestDialer(t *testing.T, proxy string, tune ...func(*DialerConfig)) *Dialer {
	t.Helper()
	cfg := DialerConfig{Proxy: proxy, ConnectionID: "conn_1", APIKey: canaryKey}
	for _, f := range tune {
		f(&cfg)
	}
	d, err := NewDialer(cfg)
	require.NoError(t, err)
	return d
}

// echoAfter answers 200, sends greeting in the same write, then echoes.
func echoAfter(greeting string) func(net.Conn, *http.Request) {
	return func(c net.Conn, _ *http.Request) {
		_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\nPostern-Request-Id: r1\r\n\r\n"+greeting)
		_, _ = io.Copy(c, c)
	}
}

func TestDialConnects(t *testing.T) {
	p := startProxy(t, nil, echoAfter("hello "))
	d := newTestDialer(t, p.addr())
	conn, err := d.DialContext(t.Context(), "tcp", "gitlab.corp.example:443")
	require.NoError(t, err)
	defer conn.Close()

	_, err = io.WriteString(conn, "world")
	require.NoError(t, err)
	got := make([]byte, len("hello world"))
	_, err = io.ReadFull(conn, got)
	require.NoError(t, err)
	assert.Equal(t, "hello world", string(got), "bytes sent right behind the 200 are not lost")

	req := p.last()
	assert.Equal(t, http.MethodConnect, req.Method)
	assert.Equal(t, "gitlab.corp.example:443", req.Host)
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("conn_1:"+canaryKey))
	assert.Equal(t, want, req.Header.Get("Proxy-Authorization"))

	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		assert.NoError(t, cw.CloseWrite(), "half-close reaches the TCP connection")
	}
}

func TestDialRefusals(t *testing.T) {
	tests := map[string]struct {
		answer     string
		status     int
		reason     protocol.Reason
		code       string
		retryAfter int
		requestID  string
		retryable  bool
	}{
		"allowlist missing": {
			answer: "HTTP/1.1 403 ALLOWLIST_MISSING\r\nContent-Type: application/json\r\nPostern-Reason: ALLOWLIST_MISSING\r\nPostern-Request-Id: 3f9a\r\nConnection: close\r\n\r\n" +
				`{"reason":"ALLOWLIST_MISSING","provider_error_code":"PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED","message":"no allow rule","request_id":"3f9a"}` + "\n",
			status: 403, reason: protocol.AllowlistMissing, code: protocol.ProviderConnectivityBlocked, requestID: "3f9a",
		},
		"rate limited, retry after from the header": {
			answer: "HTTP/1.1 429 RATE_LIMITED\r\nPostern-Reason: RATE_LIMITED\r\nPostern-Request-Id: r9\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\n{}",
			status: 429, reason: protocol.RateLimited, code: protocol.ProviderRateLimited, retryAfter: 7, requestID: "r9", retryable: true,
		},
		"wrong key": {
			answer: "HTTP/1.1 407 PROXY_AUTH_REQUIRED\r\nProxy-Authenticate: Basic realm=\"postern\"\r\nConnection: close\r\n\r\n" +
				`{"reason":"PROXY_AUTH_REQUIRED","message":"missing or wrong","request_id":"k1"}`,
			status: 407, reason: protocol.ProxyAuthRequired, requestID: "k1",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := startProxy(t, nil, func(c net.Conn, _ *http.Request) { _, _ = io.WriteString(c, tc.answer) })
			_, err := newTestDialer(t, p.addr()).DialContext(t.Context(), "tcp", "gitlab.corp.example:443")
			require.Error(t, err)
			var pe *ProxyError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, tc.status, pe.StatusCode)
			assert.Equal(t, tc.retryable, pe.Retryable())
			var re *protocol.Error
			require.ErrorAs(t, err, &re, "errors.As finds the reason error inside")
			assert.Equal(t, tc.reason, re.Reason)
			assert.Equal(t, tc.code, re.ProviderErrorCode)
			assert.Equal(t, tc.retryAfter, re.RetryAfter)
			assert.Equal(t, tc.requestID, re.RequestID)
			assert.Contains(t, err.Error(), "CONNECT gitlab.corp.example:443")
			assert.NotContains(t, err.Error(), canaryKey)
			assert.NotContains(t, fmt.Sprintf("%+v %#v", err, err), canaryKey)
		})
	}
}

func TestDialAnswerNotFromRelay(t *testing.T) {
	p := startProxy(t, nil, func(c net.Conn, _ *http.Request) {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\noops!")
	})
	_, err := newTestDialer(t, p.addr()).DialContext(t.Context(), "tcp", "a.example:443")
	var ue *UnexpectedResponseError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, 502, ue.StatusCode)
	var re *protocol.Error
	assert.False(t, errors.As(err, &re), "no reason is made up")
}

func TestDialDeadlines(t *testing.T) {
	silent := func(c net.Conn, _ *http.Request) { _, _ = io.Copy(io.Discard, c) }
	p := startProxy(t, nil, silent)

	t.Run("context deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := newTestDialer(t, p.addr()).DialContext(ctx, "tcp", "a.example:443")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), 5*time.Second)
	})
	t.Run("handshake timeout", func(t *testing.T) {
		d := newTestDialer(t, p.addr(), func(c *DialerConfig) { c.HandshakeTimeout = 100 * time.Millisecond })
		_, err := d.DialContext(t.Context(), "tcp", "a.example:443")
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := newTestDialer(t, p.addr()).DialContext(ctx, "tcp", "a.example:443")
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("the connection keeps no deadline", func(t *testing.T) {
		p := startProxy(t, nil, func(c net.Conn, r *http.Request) {
			time.Sleep(150 * time.Millisecond) // past the context's deadline below
			echoAfter("")(c, r)
		})
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		conn, err := newTestDialer(t, p.addr()).DialContext(ctx, "tcp", "a.example:443")
		cancel()
		require.NoError(t, err)
		defer conn.Close()
		_, err = io.WriteString(conn, "x")
		require.NoError(t, err)
		_, err = io.ReadFull(conn, make([]byte, 1))
		assert.NoError(t, err, "ending the dial's context does not end the connection")
	})
}

func TestDialBoundsTheAnswer(t *testing.T) {
	p := startProxy(t, nil, func(c net.Conn, _ *http.Request) {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Junk: "+strings.Repeat("a", MaxProxyHeaderBytes)+"\r\n\r\n")
	})
	_, err := newTestDialer(t, p.addr()).DialContext(t.Context(), "tcp", "a.example:443")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "over")
}

func TestDialRefusesBadInput(t *testing.T) {
	d := newTestDialer(t, "127.0.0.1:1")
	for _, tc := range []struct{ network, addr string }{
		{"udp", "a.example:53"},
		{"tcp", "a.example"},
		{"tcp", "a.example:443\r\nX-Evil: 1"},
		{"tcp", ":443"},
	} {
		_, err := d.DialContext(t.Context(), tc.network, tc.addr)
		assert.Error(t, err, "%s %q", tc.network, tc.addr)
	}
	_, err := NewDialer(DialerConfig{Proxy: "nohostport", ConnectionID: "a:b", APIKey: ""})
	require.ErrorIs(t, err, ErrBadDialerConfig)
	assert.Equal(t, 3, strings.Count(err.Error(), ErrBadDialerConfig.Error()), "every problem at once: %v", err)
}

func TestDialTLSToProxy(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler()) // only for its certificate
	defer srv.Close()
	p := startProxy(t, srv.TLS, echoAfter("tls "))
	d := newTestDialer(t, p.addr(), func(c *DialerConfig) {
		c.TLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
	})
	conn, err := d.DialContext(t.Context(), "tcp", "a.example:443")
	require.NoError(t, err)
	defer conn.Close()
	got := make([]byte, 4)
	_, err = io.ReadFull(conn, got)
	require.NoError(t, err)
	assert.Equal(t, "tls ", string(got))
}

func TestDialerHidesKey(t *testing.T) {
	d := newTestDialer(t, "127.0.0.1:1")
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("dialer", "d", d, "cfg", d.cfg)
	for _, s := range []string{fmt.Sprint(d), fmt.Sprintf("%+v", d.cfg), fmt.Sprintf("%#v", d), logged.String()} {
		assert.NotContains(t, s, canaryKey)
		assert.NotContains(t, s, base64.StdEncoding.EncodeToString([]byte("conn_1:"+canaryKey)))
	}
	_, err := d.DialContext(t.Context(), "tcp", "a.example:443") // nothing listens there
	require.Error(t, err)
	assert.NotContains(t, err.Error(), canaryKey)
}

// TestTransportKeepsTLSEndToEnd sends an https request through a proxy
// stand-in that only splices bytes: the transport verifies the provider's
// certificate inside the tunnel.
func TestTransportKeepsTLSEndToEnd(t *testing.T) {
	provider := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello from "+r.Host)
	}))
	defer provider.Close()
	p := startProxy(t, nil, func(c net.Conn, _ *http.Request) {
		up, err := net.Dial("tcp", provider.Listener.Addr().String())
		if err != nil {
			return
		}
		defer up.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() { _, _ = io.Copy(up, c) }()
		_, _ = io.Copy(c, up)
	})
	tr := NewTransport(newTestDialer(t, p.addr()), provider.Client().Transport.(*http.Transport).TLSClientConfig)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(provider.URL + "/x")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	assert.Equal(t, "hello from "+provider.Listener.Addr().String(), string(body))
	assert.Equal(t, provider.Listener.Addr().String(), p.last().Host, "the CONNECT names the provider")

	_, err = (&http.Client{Transport: NewTransport(newTestDialer(t, p.addr()), nil)}).Get(provider.URL)
	require.Error(t, err, "an untrusted provider certificate fails inside the tunnel")
}
