package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
)

func TestHelloCarriesIdentityAndAllowlistSummary(t *testing.T) {
	host, err := os.Hostname()
	require.NoError(t, err)
	tests := map[string]struct {
		rules      string
		tunnels    int
		wantStatus string
		wantMode   string
		wantCount  int
		wantAllow  []protocol.RuleSpec
		wantDeny   []protocol.RuleSpec
	}{
		"configured enforce": {
			rules: `
allow:
  - host: GitLab.Corp.Example.
    ports: [443]
  - cidr: 10.20.0.0/16
    ports: [443, "8000-8100"]
deny:
  - cidr: 10.20.5.0/24
`,
			tunnels:    2,
			wantStatus: "configured",
			wantMode:   "enforce",
			wantCount:  3,
			wantAllow: []protocol.RuleSpec{
				{Host: "gitlab.corp.example", Ports: []string{"443"}},
				{CIDR: "10.20.0.0/16", Ports: []string{"443", "8000-8100"}},
			},
			wantDeny: []protocol.RuleSpec{{CIDR: "10.20.5.0/24"}},
		},
		"empty list": {
			rules:      "allow: []\n",
			tunnels:    1,
			wantStatus: "empty",
			wantMode:   "enforce",
		},
		"report mode": {
			rules: `
mode: report
allow:
  - ip: 10.0.0.7
    ports: [8080]
`,
			tunnels:    1,
			wantStatus: "configured",
			wantMode:   "report",
			wantCount:  1,
			wantAllow:  []protocol.RuleSpec{{IP: "10.0.0.7", Ports: []string{"8080"}}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			relay := testkit.NewRelay(t, time.Second)
			cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\nagent_id: agent-7\ntunnels: %d\n%s",
				relay.URL(), tc.tunnels, tc.rules))
			runAgent(t, Options{Config: cfg, Version: "9.8.7"})

			for range tc.tunnels {
				s := relay.Session(t)
				h := s.Hello
				assert.Equal(t, "Bearer "+testkit.Token, s.Auth)
				assert.Equal(t, protocol.Version, h.ProtocolVersion)
				assert.Equal(t, "agent-7", h.AgentID)
				assert.Equal(t, host, h.Hostname)
				assert.Equal(t, "9.8.7", h.Version)
				assert.Equal(t, tc.tunnels, h.Tunnels)
				assert.False(t, h.StartedAt.IsZero())
				sum := h.Allowlist
				assert.Equal(t, tc.wantStatus, sum.Status)
				assert.Equal(t, tc.wantMode, sum.Mode)
				assert.Equal(t, tc.wantCount, sum.Count)
				assert.Equal(t, cfg.Rules.SHA256(), sum.SHA256)
				assert.Len(t, sum.SHA256, 64)
				assert.False(t, sum.LoadedAt.IsZero())
				assert.Equal(t, tc.wantAllow, stripLines(sum.Allow))
				assert.Equal(t, tc.wantDeny, stripLines(sum.Deny))
			}
		})
	}
}

// stripLines makes an empty rule list nil so expectations can leave it out.
func stripLines(in []protocol.RuleSpec) []protocol.RuleSpec {
	if len(in) == 0 {
		return nil
	}
	return in
}

func TestHealthIsReportedEveryInterval(t *testing.T) {
	relay := testkit.NewRelay(t, 200*time.Millisecond)
	cfg := testkit.ParseConfig(t, "relay_url: "+relay.URL()+"\ntunnels: 2\nallow:\n  - host: a.example\n    ports: [443]\n")
	a := runAgent(t, Options{Config: cfg, Version: "1.0.0"})
	s1, s2 := relay.Session(t), relay.Session(t)

	for _, s := range []*tunneltest.RelaySession{s1, s2} {
		require.Eventually(t, func() bool { return len(s.Healths()) >= 3 }, testkit.WaitTimeout, 10*time.Millisecond,
			"tunnel %d: Health must arrive every heartbeat without any traffic", s.ID)
	}
	require.Eventually(t, func() bool { return a.TunnelsUp() == 2 }, testkit.WaitTimeout, 10*time.Millisecond)
	var hs []protocol.Health
	require.Eventually(t, func() bool {
		hs = s1.Healths()
		return hs[len(hs)-1].TunnelsUp == 2
	}, testkit.WaitTimeout, 10*time.Millisecond, "health counts both tunnels")
	last := hs[len(hs)-1]
	assert.Equal(t, "1.0.0", last.Version)
	assert.Equal(t, 0, last.ActiveStreams)
	assert.Empty(t, last.Errors)
	assert.Equal(t, cfg.Rules.SHA256(), last.Allowlist.SHA256)
	assert.Equal(t, "configured", last.Allowlist.Status)
	for i := 1; i < len(hs); i++ {
		assert.False(t, hs[i].Time.Before(hs[i-1].Time), "health times go forward")
	}
}

func TestHealthCountsStreamsBytesAndErrors(t *testing.T) {
	relay := testkit.NewRelay(t, 200*time.Millisecond)
	tg := testkit.NewTarget(t, "127.0.0.1:0", testkit.ReplyAfterEOF)
	cfg := testkit.ParseConfig(t, fmt.Sprintf(`relay_url: %s
tunnels: 1
allow:
  - ip: 127.0.0.1
    ports: [%d]
`, relay.URL(), tg.Port()))
	runAgent(t, Options{Config: cfg})
	s := relay.Session(t)

	res, st := s.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
	require.True(t, res.OK, "%+v", res)
	_, err := io.WriteString(st, "ping")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		hs := s.Healths()
		return len(hs) > 0 && hs[len(hs)-1].ActiveStreams == 1
	}, testkit.WaitTimeout, 10*time.Millisecond, "an open stream shows in active_streams")

	for _, req := range []protocol.Request{
		testkit.DialRequest("10.1.2.3", 443),
		testkit.DialRequest("unlisted.example", 443),
		testkit.DialRequest("0x7f.0.0.1", 443),
	} {
		res, _ := s.Dial(t, req)
		require.False(t, res.OK)
	}
	require.NoError(t, st.Close())
	got, err := io.ReadAll(st)
	require.NoError(t, err)
	require.Equal(t, "pong:ping", string(got))

	// Wait for reports built after everything above, then the counters
	// must add up exactly: errors are reported once and then reset.
	seen := len(s.Healths())
	require.Eventually(t, func() bool { return len(s.Healths()) >= seen+3 }, testkit.WaitTimeout, 10*time.Millisecond)
	hs := s.Healths()
	total := map[protocol.Reason]int{}
	for _, h := range hs {
		for r, n := range h.Errors {
			total[r] += n
		}
	}
	assert.Equal(t, map[protocol.Reason]int{protocol.AllowlistMissing: 2, protocol.BadTarget: 1}, total)
	last := hs[len(hs)-1]
	assert.Empty(t, last.Errors, "error counts reset after each report")
	assert.Equal(t, 0, last.ActiveStreams)
	assert.Equal(t, uint64(len("ping")), last.BytesIn, "bytes from the relay to the target")
	assert.Equal(t, uint64(len("pong:ping")), last.BytesOut, "bytes from the target to the relay")
}

func TestReconnectsWhenRelayDropsATunnel(t *testing.T) {
	relay := testkit.NewRelay(t, time.Second)
	tg := testkit.NewTarget(t, "127.0.0.1:0", testkit.Echo)
	cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 2\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n",
		relay.URL(), tg.Port()))
	a := runAgent(t, Options{Config: cfg})
	s1, s2 := relay.Session(t), relay.Session(t)
	require.Eventually(t, func() bool { return a.TunnelsUp() == 2 }, testkit.WaitTimeout, 10*time.Millisecond)

	require.NoError(t, s1.Close())
	s3 := relay.Session(t)
	assert.Equal(t, s1.Hello.AgentID, s3.Hello.AgentID, "the replacement is the same agent")
	require.Eventually(t, func() bool { return a.TunnelsUp() == 2 }, testkit.WaitTimeout, 10*time.Millisecond)
	assert.False(t, s2.Closed(), "the other tunnel is untouched")

	for _, s := range []*tunneltest.RelaySession{s2, s3} {
		res, st := s.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
		require.True(t, res.OK, "%+v", res)
		assert.Equal(t, "hi", testkit.RoundTrip(t, st, "hi"))
	}
}

func TestFirstConnectRetriesUntilRelayListens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens yet

	logs := &testkit.LogSink{}
	cfg := testkit.ParseConfig(t, "relay_url: ws://"+addr+"\ntunnels: 1\nallow: []\n")
	runAgent(t, Options{Config: cfg, Logger: logs.Logger(), BackoffBase: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond})
	require.Eventually(t, func() bool { return len(logs.Find("tunnel down; reconnecting")) >= 3 },
		testkit.WaitTimeout, 10*time.Millisecond, "the agent keeps retrying a relay that is not there")

	ln, err = net.Listen("tcp", addr)
	require.NoError(t, err)
	relay := tunneltest.NewRelay(t, tunneltest.RelayOptions{Token: testkit.Token, Heartbeat: time.Second, Listener: ln})
	s := relay.Session(t)
	assert.Equal(t, "Bearer "+testkit.Token, s.Auth)
}

// A revoked agent keeps trying, slowly (RevokedPause, minutes by default;
// a millisecond here), logs the refusal once with its reason and the wait,
// then quietly, and its status says why no tunnel is up.
func TestTokenRefusalIsRetried(t *testing.T) {
	// The first three tunnel requests are refused as revoked.
	var refuse atomic.Int32
	refuse.Store(3)
	relay := tunneltest.NewRelay(t, tunneltest.RelayOptions{Heartbeat: time.Second, Authorize: func(r *http.Request) *protocol.Error {
		if tunneltest.BearerToken(r) != testkit.Token {
			return protocol.Errorf(protocol.AgentTokenInvalid, "unknown agent token")
		}
		if n := refuse.Load(); n > 0 && refuse.CompareAndSwap(n, n-1) {
			return protocol.Errorf(protocol.AgentTokenRevoked, "the connection was revoked")
		}
		return nil
	}})
	logs := &testkit.LogSink{}
	cfg := testkit.ParseConfig(t, "relay_url: "+relay.URL()+"\ntunnels: 1\nallow: []\n")
	runAgent(t, Options{Config: cfg, Logger: logs.Logger()})

	relay.Session(t)
	assert.GreaterOrEqual(t, relay.Requests(), 4)
	refusals := logs.Find("relay says this agent's connection was revoked; retrying slowly in case it is restored")
	require.Len(t, refusals, 3)
	assert.Equal(t, slog.LevelError, refusals[0].Level, "the first refusal is an error")
	assert.Equal(t, slog.LevelDebug, refusals[2].Level, "the same refusal again is quiet")
	assert.NotEmpty(t, refusals[0].Attrs["retry_in"])
	for _, r := range refusals {
		assert.Equal(t, string(protocol.AgentTokenRevoked), r.Attrs["reason"])
		assert.Equal(t, "the connection was revoked", r.Attrs["message"])
		assert.NotContains(t, fmt.Sprint(r.Attrs), "s3cr3t", "the token never appears in logs")
	}
}

func TestRelayRedirectIsNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		http.Error(w, "should never be asked", http.StatusTeapot)
	}))
	t.Cleanup(other.Close)
	var asked atomic.Int32
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Redirect(w, r, other.URL+protocol.TunnelPath, http.StatusFound)
	}))
	t.Cleanup(redirector.Close)

	logs := &testkit.LogSink{}
	cfg := testkit.ParseConfig(t, "relay_url: ws://"+redirector.Listener.Addr().String()+"\ntunnels: 1\nallow: []\n")
	runAgent(t, Options{Config: cfg, Logger: logs.Logger()})

	require.Eventually(t, func() bool { return asked.Load() >= 3 }, testkit.WaitTimeout, 10*time.Millisecond,
		"the agent keeps retrying its configured relay")
	assert.Zero(t, elsewhere.Load(), "the redirect target must never get a request (nor the token)")
	var found bool
	for _, r := range logs.Find("relay refused the tunnel; will keep retrying") {
		found = found || strings.Contains(r.Attrs["message"], "redirects are never followed")
	}
	assert.True(t, found, "the log tells the operator the relay URL redirects")
}

func TestRelayNoticesEndTheTunnel(t *testing.T) {
	tests := map[string]struct {
		typ     protocol.FrameType
		notice  any
		wantErr string
		// streamsEnd: a revocation cuts live streams. After a GoAway,
		// protocol/spec.md 6.4 says the agent SHOULD let them finish, so
		// this test does not hold it to cutting them.
		streamsEnd bool
	}{
		"revoked": {protocol.FrameRevoked, protocol.Revoked{Message: "revoked by admin"}, "revoked by admin", true},
		"goaway":  {protocol.FrameGoAway, protocol.GoAway{Reason: "draining"}, "goaway", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			relay := testkit.NewRelay(t, time.Second)
			tg := testkit.NewTarget(t, "127.0.0.1:0", testkit.Echo)
			logs := &testkit.LogSink{}
			cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 1\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n",
				relay.URL(), tg.Port()))
			const base = 80 * time.Millisecond
			runAgent(t, Options{Config: cfg, Logger: logs.Logger(), BackoffBase: base, BackoffMax: base})
			s1 := relay.Session(t)
			res, st := s1.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
			require.True(t, res.OK, "%+v", res)
			require.Equal(t, "x", testkit.RoundTrip(t, st, "x"))

			if !tc.streamsEnd {
				// Nothing in flight, so even a draining agent ends the
				// tunnel at once.
				assert.Equal(t, "y", testkit.Exchange(t, st, "y"))
			}
			sent := time.Now()
			s1.Notify(t, tc.typ, tc.notice)
			s1.WaitClosed(t) // the agent itself ends the tunnel
			if tc.streamsEnd {
				_, err := st.Read(make([]byte, 1))
				assert.Error(t, err, "streams on the ended tunnel end too")
				require.Eventually(t, func() bool { return tg.Ended.Load() == 1 }, testkit.WaitTimeout, 10*time.Millisecond,
					"the target connection is closed")
			}

			s2 := relay.Session(t)
			assert.GreaterOrEqual(t, time.Since(sent), base/2, "the reconnect waits for backoff")
			assert.Equal(t, s1.Hello.AgentID, s2.Hello.AgentID)
			var found bool
			for _, r := range logs.Find("tunnel down; reconnecting") {
				found = found || strings.Contains(r.Attrs["err"], tc.wantErr)
			}
			assert.True(t, found, "the log says why the tunnel ended")
		})
	}
}

// After a GoAway the agent dials a replacement tunnel at once, while the
// old tunnel keeps serving the stream that was open, so a relay restart
// loses nothing in flight.
func TestGoAwayDrainsOpenStreamsWhileReplacing(t *testing.T) {
	relay := testkit.NewRelay(t, time.Second)
	tg := testkit.NewTarget(t, "127.0.0.1:0", testkit.Echo)
	cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 1\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n",
		relay.URL(), tg.Port()))
	a := runAgent(t, Options{Config: cfg, BackoffBase: 20 * time.Millisecond, BackoffMax: 40 * time.Millisecond})
	s1 := relay.Session(t)
	res, st := s1.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
	require.True(t, res.OK, "%+v", res)
	require.Equal(t, "before", testkit.RoundTrip(t, st, "before"))

	s1.Notify(t, protocol.FrameGoAway, protocol.GoAway{Reason: "shutdown"})
	s2 := relay.Session(t) // the replacement arrives while s1 still serves
	assert.Equal(t, s1.Hello.AgentID, s2.Hello.AgentID)
	assert.False(t, s1.Closed(), "the old tunnel stays up while a stream is open")
	assert.Equal(t, "during", testkit.RoundTrip(t, st, "during"), "the open stream keeps flowing after GoAway")
	require.Eventually(t, func() bool { return a.TunnelsUp() == 1 }, testkit.WaitTimeout, 10*time.Millisecond,
		"the replacement counts as the slot's tunnel")

	// New streams go to the replacement.
	res2, st2 := s2.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
	require.True(t, res2.OK)
	assert.Equal(t, "new", testkit.Exchange(t, st2, "new"))

	// When the last old stream ends, the old tunnel closes.
	assert.Equal(t, "last", testkit.Exchange(t, st, "last"))
	s1.WaitClosed(t)
	assert.False(t, s2.Closed())
}

// Stopping the agent (Run's context ends) drains: the relay may open no
// new stream, the open one finishes, then Run returns. Force cuts it.
func TestStopDrainsOpenStreams(t *testing.T) {
	for _, force := range []bool{false, true} {
		t.Run(fmt.Sprintf("force=%v", force), func(t *testing.T) {
			relay := testkit.NewRelay(t, time.Second)
			tg := testkit.NewTarget(t, "127.0.0.1:0", testkit.Echo)
			cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 1\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n",
				relay.URL(), tg.Port()))
			opts := DefaultOptions()
			opts.Config, opts.Token, opts.Resolver = cfg, testkit.Token, testkit.NewResolver(t, "127.0.0.1:1", 0)
			opts.DrainTimeout = 30 * time.Second
			a, err := New(opts)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			defer func() { a.Force(); cancel(); <-done }()

			s1 := relay.Session(t)
			res, st := s1.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
			require.True(t, res.OK)
			require.Equal(t, "a", testkit.RoundTrip(t, st, "a"))

			cancel()
			require.Eventually(t, func() bool { return a.TunnelsUp() == 0 }, testkit.WaitTimeout, 5*time.Millisecond)
			// The agent's yamux go-away reaches the relay's reader shortly.
			require.Eventually(t, func() bool {
				st, err := s1.Open(t.Context())
				if err == nil {
					_ = st.Close()
				}
				return err != nil
			}, testkit.WaitTimeout, 5*time.Millisecond, "a stopping agent takes no new stream")
			if force {
				a.Force()
				requireRunEnds(t, done, "Force did not end the drain")
				return
			}
			assert.Equal(t, "b", testkit.RoundTrip(t, st, "b"), "the open stream keeps flowing while the agent stops")
			select {
			case err := <-done:
				done <- err // let the deferred cleanup see it too
				t.Fatalf("Run returned (%v) while a stream was open", err)
			default:
			}
			assert.Equal(t, "c", testkit.Exchange(t, st, "c"))
			requireRunEnds(t, done, "Run did not return after the last stream ended")
		})
	}
}

// requireRunEnds waits for Run's result on done, which must come without
// error; stuck says what did not happen if it never comes. The result goes
// back on done for the deferred cleanup, which waits for it too.
func requireRunEnds(t *testing.T, done chan error, stuck string) {
	t.Helper()
	select {
	case err := <-done:
		done <- err
		require.NoError(t, err)
	case <-time.After(testkit.WaitTimeout):
		t.Fatal(stuck)
	}
}

func TestSetPolicySwapsRulesWithoutDroppingTunnels(t *testing.T) {
	relay := testkit.NewRelay(t, time.Second)
	oldT := testkit.NewTarget(t, "127.0.0.1:0", testkit.Echo)
	newT := testkit.NewTarget(t, "127.0.0.1:0", testkit.Echo)
	rules := "relay_url: %s\ntunnels: 2\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n"
	cfg1 := testkit.ParseConfig(t, fmt.Sprintf(rules, relay.URL(), oldT.Port()))
	cfg2 := testkit.ParseConfig(t, fmt.Sprintf(rules, relay.URL(), newT.Port()))
	a := runAgent(t, Options{Config: cfg1})
	s1, s2 := relay.Session(t), relay.Session(t)

	res, inflight := s1.Dial(t, testkit.DialRequest("127.0.0.1", oldT.Port()))
	require.True(t, res.OK, "%+v", res)
	require.Equal(t, "before", testkit.RoundTrip(t, inflight, "before"))

	a.SetPolicy(policy.New(cfg2, time.Now()))
	assert.Equal(t, cfg2.Rules.SHA256(), a.Policy().Summary.SHA256)

	for _, s := range []*tunneltest.RelaySession{s1, s2} {
		res, _ := s.Dial(t, testkit.DialRequest("127.0.0.1", oldT.Port()))
		assert.False(t, res.OK, "new streams use the new rules")
		assert.Equal(t, protocol.TargetBlocked, res.Reason, "%+v", res)
		res, st := s.Dial(t, testkit.DialRequest("127.0.0.1", newT.Port()))
		require.True(t, res.OK, "%+v", res)
		assert.Equal(t, "new", testkit.RoundTrip(t, st, "new"))
	}
	assert.Equal(t, "after", testkit.RoundTrip(t, inflight, "after"), "the stream in flight keeps flowing")
	assert.Equal(t, int32(1), oldT.Accepted.Load())
	require.Eventually(t, func() bool {
		hs := s1.Healths()
		return len(hs) > 0 && hs[len(hs)-1].Allowlist.SHA256 == cfg2.Rules.SHA256()
	}, testkit.WaitTimeout, 10*time.Millisecond, "health reports the new rules")
	assert.False(t, s1.Closed())
	assert.False(t, s2.Closed())
	relay.NoNewSession(t)
	assert.Equal(t, 2, a.TunnelsUp())
}

// A relay that rate-limits the agent (429 with Retry-After) is not asked
// again before the pause it named, even with a much shorter backoff.
func TestRateLimitedTunnelWaitsRetryAfter(t *testing.T) {
	var asked atomic.Int32
	var times []time.Time
	var mu sync.Mutex
	limiter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"reason":"RATE_LIMITED","message":"too many failed attempts"}`)
	}))
	t.Cleanup(limiter.Close)
	cfg := testkit.ParseConfig(t, "relay_url: ws://"+limiter.Listener.Addr().String()+"\ntunnels: 1\nallow: []\n")
	runAgent(t, Options{Config: cfg, BackoffBase: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	require.Eventually(t, func() bool { return asked.Load() >= 2 }, 5*time.Second, 10*time.Millisecond)
	mu.Lock()
	gap := times[1].Sub(times[0])
	mu.Unlock()
	assert.GreaterOrEqual(t, gap, time.Second, "the agent honours Retry-After")
}

// A relay pacing handshakes (503 with Retry-After) chose when the agent
// should come back: the agent waits that, plus under a second of jitter,
// instead of its backoff, however long the backoff has grown.
func TestPacedTunnelComesBackAtItsSlotNotItsBackoff(t *testing.T) {
	var asked atomic.Int32
	pacer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"reason":"RELAY_UNAVAILABLE","message":"node is taking tunnel handshakes at 450 a second"}`)
	}))
	t.Cleanup(pacer.Close)
	cfg := testkit.ParseConfig(t, "relay_url: ws://"+pacer.Listener.Addr().String()+"\ntunnels: 1\nallow: []\n")
	a := runAgent(t, Options{Config: cfg, BackoffBase: time.Hour, BackoffMax: time.Hour})
	require.Eventually(t, func() bool { return asked.Load() >= 3 }, 15*time.Second, 10*time.Millisecond,
		"asked again at each Retry-After, not after an hour of backoff")
	st := a.Status()
	require.NotNil(t, st.Down)
	assert.Equal(t, "RELAY_UNAVAILABLE", string(st.Down.Reason))
	require.NotNil(t, st.Down.NextTryAt)
}
