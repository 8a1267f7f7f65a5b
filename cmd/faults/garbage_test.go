package faults

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol/tunnel"
)

// randomBytes returns n reproducible random bytes.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	_, _ = r.Read(b)
	return b
}

// rawExchange writes req and then after (in the background: the relay may
// refuse before it is all sent) and reads the first line of the answer
// ("" if none). With untilClose it then reads until the relay closes the
// connection. It returns the line and how long the connection lived.
func rawExchange(t *testing.T, addr string, req, after []byte, untilClose bool) (string, time.Duration) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	start := time.Now()
	_ = c.SetDeadline(start.Add(20 * time.Second))
	go func() {
		if _, err := c.Write(req); err == nil && after != nil {
			_, _ = c.Write(after)
		}
	}()
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if untilClose {
		_, _ = io.Copy(io.Discard, br)
	}
	return strings.TrimSpace(line), time.Since(start)
}

func upgradeRequest(host, auth string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "GET /v1/tunnel HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n", host)
	b.WriteString("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: postern.v1\r\n")
	if auth != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", auth)
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// Random bytes at /v1/tunnel, before and after the upgrade and inside
// WebSocket messages, are refused or cut off; the relay keeps serving its
// agent and never registers a tunnel for them.
func TestFaultGarbageIntoTunnel(t *testing.T) {
	s := newSystem(t)
	s.startAgent(t, agentOptions{})
	addr := s.relay.apiAddr
	tests := map[string]struct {
		req, after []byte
		wantLine   string // prefix of the answer's first line
		closes     bool   // the relay hangs up (else a refusal on a keep-alive connection)
	}{
		"random bytes instead of HTTP":   {req: randomBytes(1, 64<<10), wantLine: "HTTP/1.1 400", closes: true},
		"random bytes after a GET line":  {req: append([]byte("GET /v1/tunnel HTTP/1.1\r\n"), randomBytes(2, 64<<10)...), wantLine: "HTTP/1.1 400", closes: true},
		"upgrade without a token":        {req: upgradeRequest(addr, ""), wantLine: "HTTP/1.1 401"},
		"upgrade with a random token":    {req: upgradeRequest(addr, string(randomBytes(3, 40))), wantLine: "HTTP/1.1 4"},
		"upgrade, then raw random bytes": {req: upgradeRequest(addr, s.token), after: randomBytes(4, 1<<20), wantLine: "HTTP/1.1 101", closes: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			line, lived := rawExchange(t, addr, tc.req, tc.after, tc.closes)
			assert.True(t, strings.HasPrefix(line, tc.wantLine), "answer %q, want %q", line, tc.wantLine)
			assert.False(t, strings.HasPrefix(line, "HTTP/1.1 2"), "garbage is never accepted: %q", line)
			assert.Less(t, lived, 15*time.Second, "the relay answers, and hangs up on garbage")
		})
	}
	t.Run("WebSocket messages of random bytes", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// A real upgrade with a valid token, then binary messages of
		// random bytes where the yamux session should be.
		base := &url.URL{Scheme: "ws", Host: addr}
		conn, err := tunnel.DialConn(ctx, base, tunnel.DialOptions{Token: s.token})
		require.NoError(t, err)
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		start := time.Now()
		for i := range 16 {
			if _, err := conn.Write(randomBytes(uint64(10+i), 4<<10)); err != nil {
				break // the relay already hung up
			}
		}
		_, err = conn.Read(make([]byte, 1))
		require.Error(t, err, "the relay ends a tunnel that speaks garbage")
		assert.NoError(t, ctx.Err(), "ended before the deadline")
		t.Logf("garbage WebSocket tunnel ended after %s: %v", time.Since(start).Round(time.Millisecond), err)
	})

	require.True(t, s.relay.healthy())
	st := s.relay.status(t, s.connID)
	assert.Equal(t, "connected", st.TunnelStatus)
	assert.Equal(t, 2, agentTunnels(st), "no garbage connection became a tunnel")
	require.NoError(t, s.roundTrip(1<<20, 20*time.Second))
}

// 8 MiB of request headers, in one header or in many, are refused at the
// header cap on both listeners; the relay's memory stays bounded and it
// keeps serving.
func TestFaultHugeHeaders(t *testing.T) {
	s := newSystem(t)
	a := s.startAgent(t, agentOptions{})
	samples := sampleUsage(t, s.relay.Process, a.Process)
	const size = 8 << 20
	one := "X-Big: " + strings.Repeat("a", size) + "\r\n"
	var many strings.Builder
	for i := 0; many.Len() < size; i++ {
		fmt.Fprintf(&many, "X-H%d: %s\r\n", i, strings.Repeat("b", 1000))
	}
	tests := map[string]struct {
		addr, head string
	}{
		"api, one 8 MiB header":        {s.relay.apiAddr, "GET /healthz HTTP/1.1\r\nHost: relay\r\n" + one},
		"api, 8 MiB of 1 KB headers":   {s.relay.apiAddr, "GET /v1/tunnel HTTP/1.1\r\nHost: relay\r\n" + many.String()},
		"proxy, one 8 MiB header":      {s.relay.proxyAddr, "CONNECT " + s.echo + " HTTP/1.1\r\nHost: " + s.echo + "\r\n" + one},
		"proxy, 8 MiB of 1 KB headers": {s.relay.proxyAddr, "CONNECT " + s.echo + " HTTP/1.1\r\nHost: " + s.echo + "\r\n" + many.String()},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			line, lived := rawExchange(t, tc.addr, []byte(tc.head+"\r\n"), nil, true)
			// The relay answers 431 and closes; when it closes with most
			// of the request unread, the kernel may reset the connection
			// before the answer is read. Either way nothing is accepted.
			if line != "" {
				assert.True(t, strings.HasPrefix(line, "HTTP/1.1 431"), "answer %q", line)
			}
			assert.Less(t, lived, 15*time.Second, "the relay ends the connection")
			t.Logf("%s: answer %q after %s", name, line, lived.Round(time.Millisecond))
		})
	}
	samples.stop()
	relayPeak, _ := samples.peaks()
	assert.Less(t, relayPeak.RSSKiB, int64(rssBound), "relay RSS")
	require.True(t, s.relay.healthy())
	assert.Equal(t, "connected", s.relay.status(t, s.connID).TunnelStatus)
	require.NoError(t, s.roundTrip(1<<20, 20*time.Second))
	t.Logf("huge headers: relay peak %s", relayPeak)
}
