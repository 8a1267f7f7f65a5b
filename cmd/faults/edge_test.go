package faults

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
	"github.com/postern/postern/relay"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/proxyproto"
)

// floodStats counts the answers to a flood of wrong agent tokens.
type floodStats struct {
	mu       sync.Mutex
	statuses map[int]int // -1: no answer
	started  time.Time
}

func (f *floodStats) add(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses[status]++
}

func (f *floodStats) get(status int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statuses[status]
}

func (f *floodStats) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprint(f.statuses)
}

// wrongTokens makes the tokens of a flood: the real token's id with
// wrong secrets, and garbage, in turn; as a stale agent behind a shared
// NAT sends them, or someone who learned the token id. (A flood of
// unknown ids, which the store must be asked about, is
// relay.TestWrongTokenFlood.)
func wrongTokens(t *testing.T, real string) func(i int) string {
	t.Helper()
	return func(i int) string {
		if i%2 == 0 {
			return testkit.WrongSecret(t, real)
		}
		return fmt.Sprintf("garbage-%d", i)
	}
}

// flood sends wrong agent tokens to addr's /v1/tunnel from workers
// goroutines, each pausing 5 ms between attempts, until ctx ends, at most
// for two minutes.
func flood(ctx context.Context, t *testing.T, addr string, workers int, token func(int) string) (*floodStats, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	stats := &floodStats{statuses: map[int]int{}, started: time.Now()}
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				stats.add(tunnelAttempt(ctx, client, addr, token(int(next.Add(1)))))
				// Hundreds a second keep the address limited without
				// taking the machine's CPU from the relay under test.
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	return stats, func() {
		cancel()
		wg.Wait()
		tr.CloseIdleConnections()
	}
}

// tunnelAttempt asks for a tunnel with token and returns the status, -1
// when no answer came (or the flood was ending).
func tunnelAttempt(ctx context.Context, client *http.Client, addr, token string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+protocol.TunnelPath, nil)
	if err != nil {
		return -1
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return -1
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// A flood of wrong agent tokens from one address is rate limited, while
// the correct credentials that come from the same address are served as
// if nothing happened: the admin lists, creates and revokes, the product
// proxies with its key and with a key made during the flood, an agent
// that restarts gets its tunnels back, and the agent of a connection made
// during the flood connects for the first time.
//
// The flood lasts longer than the relay's auth limit window (a minute), so
// no credential here passes because it was verified within the window.
func TestFaultWrongTokenFloodSparesCorrectCredentials(t *testing.T) {
	s := newSystem(t)
	a := s.startAgent(t, agentOptions{})
	require.NoError(t, s.roundTrip(1<<10, 10*time.Second), "the product's key is verified before the flood")
	ctx := t.Context()
	bystander, err := s.relay.admin.CreateConnection(ctx, "bystander", "acme")
	require.NoError(t, err)

	parent := t
	stats, stop := flood(ctx, t, s.relay.apiAddr, 4, wrongTokens(t, s.token))
	defer stop()
	testkit.WaitFor(t, 20*time.Second, "the flood is rate limited", func() bool {
		return stats.get(http.StatusTooManyRequests) > 50
	})

	t.Run("admin", func(t *testing.T) {
		list, err := s.relay.admin.ListConnections(ctx)
		require.NoError(t, err)
		assert.Len(t, list.Connections, 2)
		revoked, err := s.relay.admin.RevokeConnection(ctx, bystander.ID)
		require.NoError(t, err, "a revoke during an attack goes through")
		assert.NotNil(t, revoked.RevokedAt)
		st := s.relay.status(t, s.connID)
		assert.Equal(t, "connected", st.TunnelStatus)
		assert.Equal(t, "active", st.AuthStatus, "its agent is up")
	})
	t.Run("product", func(t *testing.T) {
		require.NoError(t, s.roundTrip(64<<10, 10*time.Second))
		key, err := s.relay.admin.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: "made-during-flood", Workspace: "acme"})
		require.NoError(t, err, "the admin creates a key during the flood")
		product := *s
		product.key = key.Key
		require.NoError(t, product.roundTrip(64<<10, 10*time.Second), "a key this node never saw is checked within the lookup budget")
	})
	var fresh api.Connection
	t.Run("new connection's agent", func(t *testing.T) {
		conn, err := s.relay.admin.CreateConnection(ctx, "made-during-flood", "acme")
		require.NoError(t, err)
		fresh = conn
		site := *s
		site.connID, site.token = conn.ID, conn.AgentToken
		site.launchAgent(parent, agentOptions{}) // it runs on after this subtest
		site.waitConnected(t, 20*time.Second)
	})
	t.Run("agent restarts", func(t *testing.T) {
		require.NoError(t, a.StopForced(5*time.Second, 10*time.Second))
		s.launchAgent(parent, agentOptions{})
		took := s.waitConnected(t, 20*time.Second)
		t.Logf("agent back after %s", took.Round(time.Millisecond))
		require.NoError(t, s.roundTrip(1<<10, 10*time.Second))
	})
	t.Run("past the limit window", func(t *testing.T) {
		// Correct credentials are not served from a window's memory:
		// 70 s into the flood the admin and the product still pass.
		wait := time.Until(stats.started.Add(70 * time.Second))
		t.Logf("flooding for another %s", wait.Round(time.Second))
		time.Sleep(wait)
		_, err := s.relay.admin.RevokeConnection(ctx, bystander.ID)
		require.NoError(t, err)
		require.NoError(t, s.roundTrip(1<<10, 10*time.Second))
		st := s.relay.status(t, s.connID)
		assert.Equal(t, "connected", st.TunnelStatus)
		assert.Equal(t, 4, agentTunnels(st)+agentTunnels(s.relay.status(t, fresh.ID)), "both agents kept their tunnels through the flood")
	})

	stop()
	took := time.Since(stats.started)
	t.Logf("flood answers over %s: %s", took.Round(time.Millisecond), stats)
	assert.Zero(t, stats.get(http.StatusSwitchingProtocols)+stats.get(http.StatusOK), "no wrong token got through")
	// The first 10 refusals of the window, one refill every 6 s, at most
	// one in-flight attempt per worker, and the lookup budget: the rest
	// were answered 429 without a store lookup.
	budget := int(relay.DefaultAuthLookupsWhileLimited*(took.Seconds()+1)) + 1
	limit := 10 + 4 + int(took/(6*time.Second)) + 1 + budget
	assert.LessOrEqual(t, stats.get(http.StatusUnauthorized), limit, "refusals that reached the store")
	assert.Greater(t, stats.get(http.StatusTooManyRequests), stats.get(http.StatusUnauthorized))
	require.True(t, s.relay.healthy())
}

// lbDialer dials from 127.0.0.2, standing for a load balancer in front of
// the relay.
func lbDialer(t *testing.T) *net.Dialer {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	c, err := d.Dial("tcp", "127.0.0.1:1") // probes the bind, not the port
	if c != nil {
		_ = c.Close()
	}
	if err != nil && strings.Contains(err.Error(), "assign") {
		t.Skipf("cannot bind 127.0.0.2: %v", err)
	}
	return d
}

// exchangeVia dials addr with d, writes header then req, and returns the
// first line of the answer ("" when the relay hung up without one).
func exchangeVia(t *testing.T, d *net.Dialer, addr string, header, req []byte) string {
	t.Helper()
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, err = c.Write(append(append([]byte{}, header...), req...))
	require.NoError(t, err)
	buf := make([]byte, 64)
	n, _ := io.ReadAtLeast(c, buf, len("HTTP/1.1 200"))
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	return line
}

func tunnelGET(token string) []byte {
	return []byte("GET " + protocol.TunnelPath + " HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer " + token + "\r\nConnection: close\r\n\r\n")
}

// Behind a load balancer that speaks the PROXY protocol, the relay's
// limits and logs see the client the balancer names, on both listeners;
// from anyone else the header is refused.
func TestFaultProxyProtocolNamesTheClient(t *testing.T) {
	lb := lbDialer(t)
	r := startRelay(t, t.TempDir(), testkit.FreeAddr(t), testkit.FreeAddr(t), "--trusted-proxies", "127.0.0.2")
	conn, err := r.admin.CreateConnection(t.Context(), "behind-lb", "acme")
	require.NoError(t, err)
	front := netip.MustParseAddrPort("192.0.2.1:443")
	alice := netip.MustParseAddrPort("203.0.113.7:40001")
	bob := netip.MustParseAddrPort("[2001:db8::8]:40002")
	carol := netip.MustParseAddrPort("198.51.100.9:40003")
	health := []byte("GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")

	t.Run("trusted balancer", func(t *testing.T) {
		assert.Equal(t, "HTTP/1.1 200 OK", exchangeVia(t, lb, r.apiAddr, proxyproto.AppendV1(nil, alice, front), health))
		assert.Equal(t, "HTTP/1.1 200 OK", exchangeVia(t, lb, r.apiAddr, proxyproto.AppendV2(nil, bob, front, nil), health))
		assert.Equal(t, "", exchangeVia(t, lb, r.apiAddr, nil, health), "a header is required from a trusted balancer")
	})
	t.Run("limits count the named client", func(t *testing.T) {
		for i := range 10 {
			line := exchangeVia(t, lb, r.apiAddr, proxyproto.AppendV1(nil, alice, front), tunnelGET(testkit.WrongSecret(t, conn.AgentToken)))
			require.True(t, strings.HasPrefix(line, "HTTP/1.1 401"), "attempt %d: %q", i, line)
		}
		line := exchangeVia(t, lb, r.apiAddr, proxyproto.AppendV1(nil, alice, front), tunnelGET(testkit.WrongSecret(t, conn.AgentToken)))
		assert.True(t, strings.HasPrefix(line, "HTTP/1.1 429"), "alice is limited: %q", line)
		line = exchangeVia(t, lb, r.apiAddr, proxyproto.AppendV2(nil, bob, front, nil), tunnelGET(testkit.WrongSecret(t, conn.AgentToken)))
		assert.True(t, strings.HasPrefix(line, "HTTP/1.1 401"), "bob, behind the same balancer, is not: %q", line)
		assert.True(t, r.healthy(), "nor is the balancer's own address")
	})
	t.Run("proxy listener", func(t *testing.T) {
		connect := []byte("CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nProxy-Authorization: Basic bm9wZTpub3Bl\r\n\r\n")
		for range 10 {
			line := exchangeVia(t, lb, r.proxyAddr, proxyproto.AppendV2(nil, carol, front, nil), connect)
			require.True(t, strings.HasPrefix(line, "HTTP/1.1 407"), "%q", line)
		}
		line := exchangeVia(t, lb, r.proxyAddr, proxyproto.AppendV2(nil, carol, front, nil), connect)
		assert.True(t, strings.HasPrefix(line, "HTTP/1.1 429"), "carol is limited: %q", line)
	})
	t.Run("a CONNECT's bytes cross the balancer both ways", func(t *testing.T) {
		// The relay writes the agent's bytes to the balancer's connection,
		// which it reads through a PROXY header reader: in order, whole,
		// and half-closed at the end.
		echo := func(_ protocol.Request, st net.Conn) {
			if protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{OK: true, Addr: "10.0.0.9:443"}) == nil {
				_, _ = io.Copy(st, st)
			}
			_ = st.Close()
		}
		a, err := tunneltest.DialAgent(t, "ws://"+r.apiAddr, tunneltest.AgentOptions{Token: conn.AgentToken,
			Hello: protocol.Hello{ProtocolVersion: 1, AgentID: "behind-lb-agent", Hostname: "h", Version: "1.0.0", Tunnels: 1,
				Allowlist: protocol.Allowlist{Status: "empty", Mode: "enforce"}},
			Answer: echo})
		require.NoError(t, err)
		defer a.Close()
		dave := netip.MustParseAddrPort("198.51.100.10:40004") // no failures charged to him
		var c net.Conn
		var br *bufio.Reader
		testkit.WaitFor(t, 10*time.Second, "a CONNECT through the balancer answered 200", func() bool {
			c, err = lb.Dial("tcp", r.proxyAddr)
			require.NoError(t, err)
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			_, err = c.Write(proxyproto.AppendV2(nil, dave, front, nil))
			require.NoError(t, err)
			var resp *http.Response
			resp, br, err = testkit.Connect(c, conn.ID, r.adminKey(), "gitlab.corp.example:443")
			if err == nil && resp.StatusCode == http.StatusOK {
				return true
			}
			_ = c.Close()
			return false
		})
		defer c.Close()
		var sent, got bytes.Buffer
		for i := range 200 {
			msg := fmt.Appendf(nil, "request %d %s\n", i, strings.Repeat("x", i*37))
			sent.Write(msg)
			_, err := c.Write(msg)
			require.NoError(t, err)
			back := make([]byte, len(msg))
			_, err = io.ReadFull(br, back)
			require.NoError(t, err)
			got.Write(back)
		}
		require.NoError(t, c.(*net.TCPConn).CloseWrite())
		rest, err := io.ReadAll(br)
		require.NoError(t, err, "the agent's FIN reaches the client")
		assert.Empty(t, rest)
		assert.True(t, bytes.Equal(sent.Bytes(), got.Bytes()), "every byte back, in order")
	})
	t.Run("untrusted sender", func(t *testing.T) {
		direct := &net.Dialer{Timeout: 5 * time.Second}
		for name, header := range map[string][]byte{"v1": proxyproto.AppendV1(nil, carol, front), "v2": proxyproto.AppendV2(nil, carol, front, nil)} {
			line := exchangeVia(t, direct, r.apiAddr, header, health)
			assert.True(t, strings.HasPrefix(line, "HTTP/1.1 400"), "%s header from 127.0.0.1 is garbage: %q", name, line)
		}
	})

	testkit.WaitFor(t, 5*time.Second, "the relay's logs name the clients", func() bool {
		out := r.Output()
		return strings.Contains(out, "source=203.0.113.7") && strings.Contains(out, "remote=203.0.113.7:40001") &&
			strings.Contains(out, "remote=[2001:db8::8]:40002") && strings.Contains(out, "source=198.51.100.9")
	})
	out := r.Output()
	assert.Contains(t, out, "PROXY protocol: refused a connection from a trusted proxy")
	assert.NotContains(t, out, "source=127.0.0.2", "the balancer itself is never charged")
}
