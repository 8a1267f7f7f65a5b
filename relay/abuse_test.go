package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/admin"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/store"
)

// withoutAuthLimits turns both auth failure limits off, and the pacing of
// tunnel handshakes, for tests that send many refused credentials on
// purpose.
func withoutAuthLimits(c *Config) {
	c.AuthFailuresPerSource = 0
	c.AuthFailuresPerCredential = 0
	withoutPacing(c)
}

// withoutPacing turns the pacing of tunnel handshakes off, for tests of
// what the relay does with each of a flood of tunnel requests (pacing has
// tests of its own).
func withoutPacing(c *Config) { c.TunnelHandshakesPerSecond = 0 }

// countingStore counts the store calls that read and that write.
type countingStore struct {
	store.Store
	reads, writes atomic.Int64
}

// countStore wraps the harness's store; use it as a newHarness option.
func (c *countingStore) wrap(cfg *Config) {
	c.Store = cfg.Store
	cfg.Store = c
}

func (c *countingStore) CreateConnection(ctx context.Context, conn store.Connection, t store.Token) error {
	c.writes.Add(1)
	return c.Store.CreateConnection(ctx, conn, t)
}

func (c *countingStore) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	c.reads.Add(1)
	return c.Store.GetConnection(ctx, id)
}

func (c *countingStore) ListConnections(ctx context.Context, ws string) ([]store.Connection, error) {
	c.reads.Add(1)
	return c.Store.ListConnections(ctx, ws)
}

func (c *countingStore) RevokeConnection(ctx context.Context, id string, at time.Time) (store.Connection, error) {
	c.writes.Add(1)
	return c.Store.RevokeConnection(ctx, id, at)
}

func (c *countingStore) RotateToken(ctx context.Context, t store.Token, until time.Time) error {
	c.writes.Add(1)
	return c.Store.RotateToken(ctx, t, until)
}

func (c *countingStore) GetToken(ctx context.Context, id string) (store.Token, error) {
	c.reads.Add(1)
	return c.Store.GetToken(ctx, id)
}

func (c *countingStore) MarkConnected(ctx context.Context, id string, at time.Time) error {
	c.writes.Add(1)
	return c.Store.MarkConnected(ctx, id, at)
}

func (c *countingStore) MarkSeen(ctx context.Context, id string, at time.Time) error {
	c.writes.Add(1)
	return c.Store.MarkSeen(ctx, id, at)
}

func (c *countingStore) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	c.writes.Add(1)
	return c.Store.CreateAPIKey(ctx, k)
}

func (c *countingStore) GetAPIKey(ctx context.Context, id string) (store.APIKey, error) {
	c.reads.Add(1)
	return c.Store.GetAPIKey(ctx, id)
}

func (c *countingStore) MarkAPIKeyUsed(ctx context.Context, id string, at time.Time) error {
	c.writes.Add(1)
	return c.Store.MarkAPIKeyUsed(ctx, id, at)
}

func (c *countingStore) CountAPIKeys(ctx context.Context) (int, error) {
	c.reads.Add(1)
	return c.Store.CountAPIKeys(ctx)
}

func (c *countingStore) snapshot() (reads, writes int64) { return c.reads.Load(), c.writes.Load() }

// requireRateLimited checks a 429 RATE_LIMITED answer with its Retry-After.
func requireRateLimited(t *testing.T, r answer, maxRetry int) {
	t.Helper()
	e := requireRefusal(t, r, http.StatusTooManyRequests, protocol.RateLimited)
	assert.Equal(t, protocol.ProviderRateLimited, e.ProviderErrorCode)
	assert.Equal(t, strconv.Itoa(e.RetryAfter), r.header.Get("Retry-After"))
	assert.GreaterOrEqual(t, e.RetryAfter, 1)
	assert.LessOrEqual(t, e.RetryAfter, maxRetry)
}

// dialerFrom dials from localIP, another loopback address standing for
// another source; "" is the default source.
func dialerFrom(t *testing.T, localIP string) *net.Dialer {
	t.Helper()
	if localIP == "" {
		return &net.Dialer{}
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	c, err := d.Dial("tcp", "127.0.0.1:1") // probes the bind, not the port
	if c != nil {
		_ = c.Close()
	}
	if err != nil && strings.Contains(err.Error(), "assign") {
		t.Skipf("cannot bind %s: %v", localIP, err)
	}
	return d
}

// from returns a view of the harness whose HTTP requests come from
// localIP ("" = unchanged).
func (h *harness) from(t *testing.T, localIP string) *harness {
	t.Helper()
	if localIP == "" {
		return h
	}
	tr := &http.Transport{DialContext: dialerFrom(t, localIP).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &harness{srv: h.srv, adminKey: h.adminKey, logs: h.logs,
		ep: endpoints{apiURL: h.ep.apiURL, proxyAddr: h.ep.proxyAddr, client: &http.Client{Transport: tr}}}
}

// connectFrom sends one CONNECT gitlab.corp.example:443 from localIP and
// returns the refusal.
func connectFrom(t *testing.T, h *harness, localIP, proxyAuth string) answer {
	t.Helper()
	c, err := dialerFrom(t, localIP).Dial("tcp", h.ep.proxyAddr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(waitFor)))
	req, err := http.NewRequest(http.MethodConnect, "http://gitlab.corp.example:443", nil)
	require.NoError(t, err)
	req.Host = "gitlab.corp.example:443"
	req.Header.Set("Proxy-Authorization", proxyAuth)
	require.NoError(t, req.Write(c))
	return readAnswer(t, bufio.NewReader(c), req)
}

func TestAuthFailuresAreRateLimitedPerSource(t *testing.T) {
	t.Parallel()
	// An attempt comes from 127.0.0.1, or from another loopback address
	// standing for another source.
	type attempt func(t *testing.T, h *harness, c api.Connection, from, cred string) answer
	tunnel := func(t *testing.T, h *harness, _ api.Connection, from, cred string) answer {
		return h.from(t, from).tunnelRequest(t, "Bearer "+cred)
	}
	apiCall := func(t *testing.T, h *harness, _ api.Connection, from, cred string) answer {
		return h.from(t, from).call(t, http.MethodGet, "/v1/connections", cred, nil)
	}
	proxy := func(t *testing.T, h *harness, c api.Connection, from, cred string) answer {
		return connectFrom(t, h, from, basicAuth(c.ID, cred))
	}
	tests := map[string]struct {
		try     attempt
		refused int
		reason  protocol.Reason
		good    func(h *harness, c api.Connection) string
	}{
		"agent token at /v1/tunnel":      {tunnel, http.StatusUnauthorized, protocol.AgentTokenInvalid, func(_ *harness, c api.Connection) string { return c.AgentToken }},
		"api key on the API":             {apiCall, http.StatusUnauthorized, protocol.APIAuthRequired, func(h *harness, _ api.Connection) string { return h.adminKey }},
		"api key in Proxy-Authorization": {proxy, http.StatusProxyAuthRequired, protocol.ProxyAuthRequired, func(h *harness, _ api.Connection) string { return h.adminKey }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cs := &countingStore{}
			h, c := newConnHarness(t, "", cs.wrap)
			good := tc.good(h, c)

			// Failures of mixed kinds all count against the address.
			for i := range 10 {
				var cred string
				switch i % 3 {
				case 0:
					cred = wrongSecret(t, good)
				case 1:
					s, err := secret.New(good[:3])
					require.NoError(t, err)
					cred = s.Display // unknown id
				default:
					cred = "garbage-" + strconv.Itoa(i)
				}
				r := tc.try(t, h, c, "", cred)
				requireRefusal(t, r, tc.refused, tc.reason)
			}
			h.srv.auth.FlushUses(t.Context()) // earlier uses of the admin key, written in the background
			reads, writes := cs.snapshot()
			for range 5 {
				requireRateLimited(t, tc.try(t, h, c, "", wrongSecret(t, good)), 6)
			}
			r2, w2 := cs.snapshot()
			assert.Equal(t, reads, r2, "a limited attempt reads nothing from the store")
			assert.Equal(t, writes, w2, "nor writes")

			// The limit is per address: another source is answered normally.
			requireRefusal(t, tc.try(t, h, c, "127.0.0.2", wrongSecret(t, good)), tc.refused, tc.reason)
		})
	}
}

// Limits hold back refused credentials, never correct ones: from an
// address over its limit, a key and a token this node verified pass, a
// key it never saw passes within the budget of store lookups, and wrong
// secrets stay refused.
func TestCorrectCredentialsPassALimitedSource(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		lookups   float64
		freshPass bool
	}{
		"with the default lookup budget": {DefaultAuthLookupsWhileLimited, true},
		"with no lookup budget":          {0, false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) { c.AuthLookupsWhileLimited = tc.lookups })
			c := h.createConnection(t, "gitlab", "") // the admin key is verified here
			a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), refuse(protocol.AllowlistMissing, 0))
			a.Close()

			for range 10 {
				h.call(t, http.MethodGet, "/v1/connections", wrongSecret(t, h.adminKey), nil)
			}
			requireRateLimited(t, h.call(t, http.MethodGet, "/v1/connections", wrongSecret(t, h.adminKey), nil), 6)

			// A key and a token that this node verified still work from
			// the limited address; their ids alone do not.
			decode[api.ConnectionList](t, h.call(t, http.MethodGet, "/v1/connections", h.adminKey, nil), http.StatusOK)
			h.firstTunnel(t, c, testHello("agent-1", 1), refuse(protocol.AllowlistMissing, 0))
			requireRefusal(t, h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil).reply(),
				http.StatusForbidden, protocol.AllowlistMissing)
			requireRateLimited(t, h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken)), 6)

			fresh := h.createKeyDirect(t, "default")
			r := h.call(t, http.MethodGet, "/v1/connections", fresh, nil)
			if tc.freshPass {
				decode[api.ConnectionList](t, r, http.StatusOK)
				requireRateLimited(t, h.call(t, http.MethodGet, "/v1/connections", wrongSecret(t, fresh), nil), 6)
			} else {
				requireRateLimited(t, r, 6)
			}
		})
	}
}

// createKeyDirect mints a workspace key without using the API.
func (h *harness) createKeyDirect(t *testing.T, workspace string) string {
	t.Helper()
	k, err := admin.CreateAPIKey(t.Context(), h.srv.store, api.CreateAPIKeyRequest{Name: "direct", Workspace: workspace})
	require.NoError(t, err)
	return h.remember(k.Key)
}

func TestAuthFailuresAreRateLimitedPerCredential(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.AuthFailuresPerSource = 1000 })
	for range 20 {
		requireRefusal(t, h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken)), http.StatusUnauthorized, protocol.AgentTokenInvalid)
	}
	r := h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken))
	requireRateLimited(t, r, 3) // one attempt per 60s/20
	assert.Contains(t, withoutRequestID(t, r).Message, "for this credential")

	unknown, err := secret.New(secret.AgentTokenPrefix)
	require.NoError(t, err)
	requireRefusal(t, h.tunnelRequest(t, "Bearer "+unknown.Display), http.StatusUnauthorized, protocol.AgentTokenInvalid)

	// The agent itself, from an address with no failures, is not locked
	// out by what others did with its token id.
	h.from(t, "127.0.0.3").firstTunnel(t, c, testHello("agent-1", 1), echo)
}

func TestWrongTokenFlood(t *testing.T) {
	t.Parallel()
	cs := &countingStore{}
	h, c := newConnHarness(t, "", cs.wrap, withoutPacing)
	// Registered first: the Welcome comes before the relay registers the
	// session and records the connection connected, so a tunnel count of
	// zero right after it proves nothing.
	a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)
	a.Close()
	h.waitTunnels(t, c.ID, 0)
	// The session's last write (its last-seen time) comes before the
	// broker forgets it; only then is the store quiet.
	require.Eventually(t, func() bool { return len(h.srv.broker.All()) == 0 }, waitFor, pollEvery)
	h.srv.auth.FlushUses(t.Context()) // the admin key's use, written in the background
	reads, writes := cs.snapshot()

	const attempts, workers = 10_000, 16
	start := time.Now()
	creds := make([]string, attempts)
	for i := range creds {
		if i%2 == 0 {
			creds[i] = wrongSecret(t, c.AgentToken)
			continue
		}
		s, err := secret.New(secret.AgentTokenPrefix)
		require.NoError(t, err)
		creds[i] = s.Display // unknown id
	}
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	var next atomic.Int64
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			local := map[int]int{}
			defer func() {
				mu.Lock()
				for k, v := range local {
					statuses[k] += v
				}
				mu.Unlock()
			}()
			for i := next.Add(1) - 1; i < attempts; i = next.Add(1) - 1 {
				cred := creds[i]
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, h.ep.apiURL+protocol.TunnelPath, nil)
				if err != nil {
					local[-1]++
					continue
				}
				req.Header.Set("Authorization", "Bearer "+cred)
				resp, err := client.Do(req)
				if err != nil {
					local[-1]++
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				local[resp.StatusCode]++
			}
		})
	}
	wg.Wait()

	t.Logf("answers: %v", statuses)
	assert.Zero(t, statuses[-1], "every attempt got an answer")
	assert.Zero(t, statuses[http.StatusOK]+statuses[http.StatusSwitchingProtocols], "no wrong token succeeded")
	assert.Equal(t, attempts, statuses[http.StatusUnauthorized]+statuses[http.StatusTooManyRequests], "only refusals")
	admitted := statuses[http.StatusUnauthorized]
	// Check-then-charge lets at most one in-flight attempt per worker
	// past a limit that is being reached, and the source's bucket refills
	// one attempt every 6 s (10 a minute) while the flood runs, which on
	// a loaded machine takes a while. Unknown ids from the limited source
	// reach the store within the node's lookup budget; wrong secrets of
	// the real token never do again once the store has named its hash.
	took := time.Since(start)
	refilled := int(took/(6*time.Second)) + 1
	lookups := int(DefaultAuthLookupsWhileLimited*(took.Seconds()+1)) + 1
	assert.LessOrEqual(t, admitted, 10+workers+refilled+lookups, "all but the first few and the lookup budget were rate limited")
	r2, w2 := cs.snapshot()
	assert.Equal(t, writes, w2, "refused tokens write nothing to the store")
	assert.LessOrEqual(t, r2-reads, int64(2*(10+workers+refilled)+lookups),
		"a bounded number of store reads: at most two per attempt admitted under the limit, one per lookup of the budget")
	assert.Equal(t, "disconnected", h.status(t, c.ID, "").TunnelStatus, "no wrong token brought a tunnel up")

	// The real agent still connects from the flooded address.
	h.firstTunnel(t, c, testHello("agent-1", 1), echo)
}

// countingVerify counts secret comparisons and the hashes compared with.
type countingVerify struct {
	mu     sync.Mutex
	calls  int
	hashes map[int]int // hash length -> calls
}

func (v *countingVerify) verify(hash, sec []byte) bool {
	v.mu.Lock()
	v.calls++
	if v.hashes == nil {
		v.hashes = map[int]int{}
	}
	v.hashes[len(hash)]++
	v.mu.Unlock()
	return secret.Verify(hash, sec)
}

func (v *countingVerify) take() (int, map[int]int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n, h := v.calls, v.hashes
	v.calls, v.hashes = 0, nil
	return n, h
}

// Unknown and wrong credentials must be indistinguishable: one answer,
// and the same work. The work is checked by counting secret comparisons
// rather than timing them, which would be flaky on a shared machine.
func TestUnknownAndWrongCredentialsTakeOnePath(t *testing.T) {
	t.Parallel()
	cv := &countingVerify{}
	cs := &countingStore{}
	h := newHarnessVerifying(t, cv.verify, withoutAuthLimits, cs.wrap)
	c := h.createConnection(t, "gitlab", "")
	h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken)) // first refusal starts status tracking
	cv.take()
	// The admin key's use is written in the background; write it now, so
	// that no write the refusals below did not cause lands among them.
	h.srv.auth.FlushUses(t.Context())

	type path struct {
		send func(t *testing.T, cred string) answer
		good string
	}
	paths := map[string]path{
		"agent token": {func(t *testing.T, cred string) answer { return h.tunnelRequest(t, "Bearer "+cred) }, c.AgentToken},
		"api key": {func(t *testing.T, cred string) answer {
			return h.call(t, http.MethodGet, "/v1/connections", cred, nil)
		}, h.adminKey},
		"proxy key": {func(t *testing.T, cred string) answer {
			return h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, cred), nil).reply()
		}, h.adminKey},
	}
	const n = 200
	for name, p := range paths {
		t.Run(name, func(t *testing.T) {
			var want api.Error
			for kind, mint := range map[string]func() string{
				"unknown id": func() string {
					s, err := secret.New(p.good[:3])
					require.NoError(t, err)
					return s.Display
				},
				"wrong secret": func() string { return wrongSecret(t, p.good) },
			} {
				r0, w0 := cs.snapshot()
				for i := range n {
					r := p.send(t, mint())
					got := withoutRequestID(t, r)
					if want.Reason == "" {
						want = got
					}
					require.Equal(t, want, got, "%s attempt %d answers like every other refusal", kind, i)
					require.Empty(t, r.header.Get("Retry-After"))
				}
				// One comparison against the stored (or a dummy) hash, one
				// in the failure bookkeeping of ratelimit.go.
				calls, byLen := cv.take()
				assert.Equal(t, 2*n, calls, "%s: exactly two secret comparisons per attempt", kind)
				assert.Equal(t, map[int]int{32: 2 * n}, byLen, "%s: always against a full-size hash", kind)
				r1, w1 := cs.snapshot()
				assert.Equal(t, int64(n), r1-r0, "%s: one store read per attempt", kind)
				assert.Equal(t, w0, w1, "%s: no store write", kind)
			}
		})
	}
}

func TestProxyRatePerKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.ProxyRatePerKey = 0.25 // one request per 4 s, so no refill during the test
		c.ProxyBurstPerKey = 3
	})
	c := h.createConnection(t, "gitlab", "")
	h.firstTunnel(t, c, testHello("agent-1", 1), refuse(protocol.AllowlistMissing, 0))
	key := h.createKey(t, "default")

	for range 3 {
		r := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, key), nil).reply()
		requireRefusal(t, r, http.StatusForbidden, protocol.AllowlistMissing)
	}
	r := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, key), nil).reply()
	requireRateLimited(t, r, 4)
	assert.Contains(t, withoutRequestID(t, r).Message, "proxy rate")

	// Plain http:// forwarding shares the key's budget.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://gitlab.corp.example/", nil)
	require.NoError(t, err)
	req.Header.Set("Proxy-Authorization", basicAuth(c.ID, key))
	raw, err := net.Dial("tcp", h.ep.proxyAddr)
	require.NoError(t, err)
	defer raw.Close()
	require.NoError(t, req.WriteProxy(raw))
	requireRateLimited(t, readAnswer(t, bufio.NewReader(raw), req), 4)

	// Other keys have their own budget, and rate limiting is no auth failure.
	requireRefusal(t, h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil).reply(),
		http.StatusForbidden, protocol.AllowlistMissing)
	decode[api.ConnectionList](t, h.call(t, http.MethodGet, "/v1/connections", key, nil), http.StatusOK)
}

// rawExchange writes msg on a fresh connection and returns what the relay
// answered before it closed the connection (or the deadline passed).
func rawExchange(t *testing.T, addr string, msg []byte) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(waitFor)))
	go func() { _, _ = c.Write(msg) }() // the relay may stop reading early
	out, err := io.ReadAll(c)
	return string(out), err
}

// An 8 MiB header is refused without the relay buffering it. Not
// parallel: it measures the process's allocations.
func TestHugeHeaderIsRefused(t *testing.T) {
	h, _, _ := serveHarness(t)
	big := bytes.Repeat([]byte("a"), 8<<20)
	for name, addr := range map[string]string{
		"api":   strings.TrimPrefix(h.ep.apiURL, "http://"),
		"proxy": h.ep.proxyAddr,
	} {
		t.Run(name, func(t *testing.T) {
			msg := slices.Concat([]byte("GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Big: "), big, []byte("\r\n\r\n"))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			out, _ := rawExchange(t, addr, msg)
			runtime.ReadMemStats(&after)
			assert.True(t, strings.HasPrefix(out, "HTTP/1.1 431 "), "answer: %.80q", out)
			grew := after.TotalAlloc - before.TotalAlloc
			assert.Less(t, grew, uint64(2<<20), "the relay allocated %d bytes for an 8 MiB header", grew)
		})
	}
	decode[map[string]string](t, h.call(t, http.MethodGet, "/healthz", "", nil), http.StatusOK)
}

func TestRandomBytesIntoTunnelEndpoint(t *testing.T) {
	t.Parallel()
	h, _, _ := serveHarness(t, func(c *Config) { c.HandshakeTimeout = time.Second })
	c := h.createConnection(t, "gitlab", "")
	addr := strings.TrimPrefix(h.ep.apiURL, "http://")
	noise := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	oneLine := func(b []byte) []byte {
		return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r"), nil), []byte("\n"), nil)
	}
	upgrade := "GET " + protocol.TunnelPath + " HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer " + c.AgentToken +
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: " + protocol.Subprotocol + "\r\n\r\n"

	tests := map[string]struct {
		request []byte // sent first; the answer must start with want
		want    string
		then    []byte // sent after the answer
	}{
		// Small enough that the relay reads all of it, so its close is
		// a clean FIN rather than a reset that could eat the answer.
		"instead of a request": {request: slices.Concat(noise(2000), []byte("\r\n\r\n")), want: "HTTP/1.1 400 "},
		"as the token": {request: slices.Concat([]byte("GET "+protocol.TunnelPath+" HTTP/1.1\r\nHost: r\r\nConnection: close\r\nAuthorization: Bearer "),
			oneLine(noise(512)), []byte("\r\n\r\n")), want: "HTTP/1.1 4"},
		"after the upgrade": {request: []byte(upgrade), want: "HTTP/1.1 101 ", then: noise(64 << 10)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer conn.Close()
			require.NoError(t, conn.SetDeadline(time.Now().Add(waitFor)))
			_, err = conn.Write(tc.request)
			require.NoError(t, err)
			br := bufio.NewReader(conn)
			status, err := br.ReadString('\n')
			require.NoError(t, err)
			assert.True(t, strings.HasPrefix(status, tc.want), "answer: %q", status)
			start := time.Now()
			if tc.then != nil {
				go func() { _, _ = conn.Write(tc.then) }()
			}
			_, err = io.Copy(io.Discard, br)
			var ne net.Error
			assert.False(t, errors.As(err, &ne) && ne.Timeout(), "the relay must hang up, not wait: %v", err)
			assert.Less(t, time.Since(start), 3*time.Second)
		})
	}
	assert.Empty(t, h.srv.broker.Sessions(c.ID), "noise brought no tunnel up")
	assert.Equal(t, "never_connected", h.status(t, c.ID, "").TunnelStatus)
	h.firstTunnel(t, c, testHello("agent-1", 1), echo)
}

func TestSlowlorisIsCutAtHeaderTimeout(t *testing.T) {
	t.Parallel()
	const headerTimeout = 500 * time.Millisecond
	h, _, _ := serveHarness(t, func(c *Config) { c.HeaderTimeout = headerTimeout })
	targets := map[string]string{
		"api":   strings.TrimPrefix(h.ep.apiURL, "http://"),
		"proxy": h.ep.proxyAddr,
	}
	const perListener = 100
	var wg sync.WaitGroup
	cut := make(chan time.Duration, 2*perListener)
	for _, addr := range targets {
		for range perListener {
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
			wg.Go(func() {
				start := time.Now()
				_ = c.SetDeadline(start.Add(waitFor))
				if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: "); err != nil {
					return
				}
				for {
					time.Sleep(50 * time.Millisecond)
					if _, err := c.Write([]byte("a")); err != nil {
						break
					}
				}
				// The write side fails once the relay hung up; reading
				// shows the relay said nothing.
				out, _ := io.ReadAll(c)
				if len(out) == 0 {
					cut <- time.Since(start)
				}
			})
		}
	}

	// Meanwhile a normal client is served promptly, again and again.
	deadline := time.Now().Add(2 * headerTimeout)
	served := 0
	for time.Now().Before(deadline) {
		start := time.Now()
		decode[map[string]string](t, h.call(t, http.MethodGet, "/healthz", "", nil), http.StatusOK)
		assert.Less(t, time.Since(start), headerTimeout, "a normal request waits for no slow client")
		served++
		time.Sleep(20 * time.Millisecond)
	}
	assert.Greater(t, served, 5)

	wg.Wait()
	close(cut)
	n := 0
	for d := range cut {
		n++
		assert.GreaterOrEqual(t, d, headerTimeout-50*time.Millisecond)
		assert.Less(t, d, headerTimeout+2*time.Second, "cut at the header timeout")
	}
	assert.Equal(t, 2*perListener, n, "every slow client was cut off without an answer")
}

// A canary credential must not reach any log line, response or error,
// whatever happens to it.
func TestCanarySecretsStayHidden(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.AuthFailuresPerSource = 12 })
	key := h.createKey(t, "default")
	canaries := []string{secretPart(c.AgentToken), secretPart(key), secretPart(h.adminKey)}
	var seen bytes.Buffer
	record := func(r answer) {
		_ = r.header.Write(&seen)
		seen.Write(r.body)
	}

	a := h.firstTunnel(t, c, testHello("agent-1", 1), byHost(map[string]answerFunc{"ok.corp.example": echo}))
	ok := h.connect(t, "ok.corp.example:443", basicAuth(c.ID, key), []byte("ping"))
	require.Equal(t, http.StatusOK, ok.resp.StatusCode)
	_ = ok.resp.Header.Write(&seen)
	record(h.connect(t, "blocked.corp.example:443", basicAuth(c.ID, key), nil).reply())
	record(h.connect(t, "gitlab.corp.example", basicAuth(c.ID, key), nil).reply())
	record(h.connect(t, "gitlab.corp.example:443", basicAuth("conn_0000000000000000", key), nil).reply())

	// Wrong secrets are canaries too: a typo of a real secret is most
	// of that secret.
	for i := range 3 {
		for _, wrong := range []string{wrongSecret(t, c.AgentToken), wrongSecret(t, key), c.AgentToken + "x", key[:len(key)-1]} {
			canaries = append(canaries, secretPart(wrong))
			switch i {
			case 0:
				record(h.tunnelRequest(t, "Bearer "+wrong))
			case 1:
				record(h.call(t, http.MethodGet, "/v1/connections", wrong, nil))
			default:
				record(h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, wrong), nil).reply())
			}
		}
	}
	record(h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken))) // over the limit now
	record(h.call(t, http.MethodGet, "/v1/connections/"+c.ID+"/status", key, nil))
	record(h.call(t, http.MethodGet, "/v1/connections/"+c.ID, key, nil))
	record(h.call(t, http.MethodGet, "/v1/connections", h.adminKey, nil))
	record(h.call(t, http.MethodPost, "/v1/connections/"+c.ID+"/revoke", h.adminKey, nil))
	h.waitTunnels(t, c.ID, 0)
	a.Close()
	record(h.tunnelRequest(t, "Bearer "+c.AgentToken))
	record(h.call(t, http.MethodGet, "/v1/connections/"+c.ID+"/status", h.adminKey, nil))
	record(h.connect(t, "ok.corp.example:443", basicAuth(c.ID, key), nil).reply())

	events, err := json.Marshal(h.srv.events.Kept())
	require.NoError(t, err)
	seen.Write(events)
	logs := h.logs.String()
	require.Contains(t, seen.String(), string(protocol.RateLimited), "the run reached the rate limit")
	require.Contains(t, seen.String(), string(protocol.AgentTokenRevoked), "and the revocation")
	for i, canary := range canaries {
		assert.NotContains(t, seen.String(), canary, "canary %d in a response or event", i)
		assert.NotContains(t, logs, canary, "canary %d in the logs", i)
	}
}
