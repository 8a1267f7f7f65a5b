package relay

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/broker"
)

// A connection's tunnels beyond max_tunnels_per_connection are refused
// before the upgrade with 429 RATE_LIMITED, a message that says what to
// change and a Retry-After; a freed place is taken again, and other
// connections have places of their own.
func TestTunnelsPerConnectionAreCapped(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.MaxTunnelsPerConnection = 2 })
	first := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	h.connectAgent(t, c.AgentToken, testHello("agent-2", 1), echo)
	h.waitTunnels(t, c.ID, 2)

	_, refused, err := h.dialAgent(t, c.AgentToken, testHello("agent-3", 1), echo)
	require.Error(t, err)
	require.NotNil(t, refused, "refused before the upgrade: %v", err)
	assert.Equal(t, http.StatusTooManyRequests, refused.StatusCode)
	require.NotNil(t, refused.Refusal)
	assert.Equal(t, protocol.RateLimited, refused.Refusal.Reason)
	assert.Contains(t, refused.Refusal.Message, "already has 2 tunnels")
	assert.Contains(t, refused.Refusal.Message, "max_tunnels_per_connection")
	assert.Equal(t, 30*time.Second, refused.RetryAfter())
	assert.Contains(t, h.logs.String(), "agent tunnel refused: the connection holds as many tunnels as it may")

	other := h.createConnection(t, "other", "")
	h.firstTunnel(t, other, testHello("agent-1", 1), echo)

	first.Close()
	h.waitTunnels(t, c.ID, 1)
	require.Eventually(t, func() bool {
		a, _, err := h.dialAgent(t, c.AgentToken, testHello("agent-3", 1), echo)
		if err == nil {
			a.Close()
		}
		return err == nil
	}, waitFor, pollEvery, "the place the first tunnel held is free again")
}

// Tunnel handshakes over the node's pace are refused before the upgrade
// with 503 RELAY_UNAVAILABLE, a message naming the rate and a Retry-After
// that grows with each agent turned away, so a crowd comes back spread
// out; the metric counts both verdicts.
func TestTunnelHandshakesArePaced(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) {
		c.TunnelHandshakesPerSecond, c.TunnelHandshakeBurst = 0.01, 2
	})
	h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	h.connectAgent(t, c.AgentToken, testHello("agent-2", 1), echo)

	var waits []time.Duration
	for _, id := range []string{"agent-3", "agent-4"} {
		_, refused, err := h.dialAgent(t, c.AgentToken, testHello(id, 1), echo)
		require.Error(t, err)
		require.NotNil(t, refused, "refused before the upgrade: %v", err)
		assert.Equal(t, http.StatusServiceUnavailable, refused.StatusCode)
		require.NotNil(t, refused.Refusal)
		assert.Equal(t, protocol.RelayUnavailable, refused.Refusal.Reason)
		assert.Contains(t, refused.Refusal.Message, "taking tunnel handshakes at 0.01 a second")
		waits = append(waits, refused.RetryAfter())
	}
	assert.GreaterOrEqual(t, waits[0], 99*time.Second, "the first slot the schedule frees, 1/rate away")
	assert.Greater(t, waits[1], waits[0], "each agent turned away gets a later slot")
}

// requireGoAway waits for the relay's GoAway on a's control stream and
// for the tunnel to end after it (the relay lingers a second, skipping
// what the agent still sends, so the GoAway is not lost to a reset).
func requireGoAway(t *testing.T, a *fakeAgent) protocol.GoAway {
	t.Helper()
	for {
		select {
		case f, ok := <-a.Control():
			require.True(t, ok, "the tunnel ended without a GoAway")
			if f.Type != protocol.FrameGoAway {
				continue
			}
			var g protocol.GoAway
			require.NoError(t, f.Decode(protocol.FrameGoAway, &g))
			requireDone(t, a.Session.Done(), "the relay closes the tunnel after its GoAway")
			return g
		case <-time.After(waitFor):
			require.FailNow(t, "no GoAway")
		}
	}
}

// An agent whose Health breaks a bound is told which field in a GoAway,
// the relay logs it, and the tunnel ends.
func TestHealthOutOfBoundsEndsTheTunnel(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		health func() protocol.Health
		want   string
	}{
		"status outside its enum": {want: "health allowlist.status", health: func() protocol.Health {
			al := testAllowlist()
			al.Status = "owned-by-attacker"
			return protocol.Health{Allowlist: al}
		}},
		"mode outside its enum": {want: "health allowlist.mode", health: func() protocol.Health {
			al := testAllowlist()
			al.Mode = "open"
			return protocol.Health{Allowlist: al}
		}},
		"too many rules": {want: "rules, more than 1024", health: func() protocol.Health {
			al := testAllowlist()
			for i := range broker.MaxRules {
				al.Allow = append(al.Allow, protocol.RuleSpec{Host: fmt.Sprintf("h%d.example", i)})
			}
			return protocol.Health{Allowlist: al}
		}},
		"a made-up error reason": {want: "health errors", health: func() protocol.Health {
			return protocol.Health{Allowlist: testAllowlist(), Errors: map[protocol.Reason]int{"<script>": 1}}
		}},
		"a frame over the report limit": {want: "more than 1048576", health: func() protocol.Health {
			al := testAllowlist()
			al.LastError = strings.Repeat("x", broker.MaxReportBody)
			return protocol.Health{Allowlist: al}
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h, c := newConnHarness(t, "")
			a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)
			require.NoError(t, a.Session.Send(protocol.FrameHealth, tc.health(), waitFor))
			g := requireGoAway(t, a)
			assert.Equal(t, "protocol_error", g.Reason)
			assert.Contains(t, g.Message, tc.want)
			assert.LessOrEqual(t, len(g.Message), broker.MaxText)
			h.waitTunnels(t, c.ID, 0)
			assert.Contains(t, h.logs.String(), "agent tunnel closed: the agent broke a limit")
		})
	}
}

// A Hello out of bounds is answered with a GoAway that says why, in place
// of Welcome; the connection never counts as connected.
func TestHelloOutOfBoundsIsToldWhy(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	hello := testHello("agent-1", 1)
	hello.Allowlist.Mode = "yolo"
	_, _, err := h.dialAgent(t, c.AgentToken, hello, echo)
	var notice *tunnel.NoticeError
	require.True(t, errors.As(err, &notice), "got %v", err)
	assert.Equal(t, protocol.FrameGoAway, notice.Type)
	assert.Contains(t, notice.Message, "hello allowlist.mode")
	assert.Equal(t, "never_connected", h.status(t, c.ID, "").TunnelStatus)
	// The relay logs right after it sent the GoAway the agent just read.
	assert.Eventually(t, func() bool { return strings.Contains(h.logs.String(), "agent tunnel closed: the agent broke a limit") },
		waitFor, pollEvery, "the relay logs why it closed the tunnel")
}

// Health at the heartbeat's pace, with reloads between, never trips the
// pacer; a flood ends the tunnel with a GoAway rate_limited.
func TestHealthIsPaced(t *testing.T) {
	t.Parallel()
	const beat = 40 * time.Millisecond
	h, c := newConnHarness(t, "", func(c *Config) { c.HeartbeatInterval = beat })
	steady := h.firstTunnel(t, c, testHello("steady", 1), echo)
	report := protocol.Health{TunnelsUp: 1, Allowlist: testAllowlist()}
	// The steady agent reports every beat, and once more after a reload
	// every tenth, for as long as the test runs: a relay that hears
	// nothing for ten beats ends the tunnel.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(beat):
			}
			if steady.Session.Send(protocol.FrameHealth, report, waitFor) != nil {
				return
			}
			if i%10 == 0 && steady.Session.Send(protocol.FrameHealth, report, waitFor) != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		<-stopped
	}()
	time.Sleep(50 * beat)
	assert.Len(t, h.srv.broker.Sessions(c.ID), 1, "two seconds of heartbeats and reloads pass")

	flood := h.connectAgent(t, c.AgentToken, testHello("flood", 1), echo)
	h.waitTunnels(t, c.ID, 2)
	for range 200 {
		if flood.Session.Send(protocol.FrameHealth, protocol.Health{Allowlist: testAllowlist()}, waitFor) != nil {
			break
		}
	}
	g := requireGoAway(t, flood)
	assert.Equal(t, "rate_limited", g.Reason)
	assert.Contains(t, g.Message, "control frames faster than")
	h.waitTunnels(t, c.ID, 1)
	assert.Equal(t, "steady", h.srv.broker.Sessions(c.ID)[0].Hello.AgentID, "the steady agent's tunnel stays")
}

// Reasons an agent makes up reach the product (spec section 11) but
// share one metric series, OTHER; a malformed one becomes PROTOCOL_ERROR,
// and a long message is cut.
func TestAgentReasonsCannotAddMetricSeries(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	long := strings.Repeat("m", 50_000)
	// The agent answers evil-N.corp.example with the reason EVIL_N, and
	// lower.corp.example with one that is no reason code at all.
	h.firstTunnel(t, c, testHello("agent-1", 1), func(req protocol.Request, st net.Conn) {
		name := strings.TrimSuffix(req.Host, ".corp.example")
		reason := protocol.Reason(strings.ToUpper(strings.ReplaceAll(name, "-", "_")))
		if name == "lower" {
			reason = "evil lower\r\nX-Injected: 1"
		}
		_ = protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{Reason: reason, Message: long})
	})
	series := func() string {
		r := h.call(t, http.MethodGet, "/metrics", "", nil)
		require.Equal(t, http.StatusOK, r.status)
		return string(r.body)
	}
	before := strings.Count(series(), "\n")
	for i := range 20 {
		r := h.connect(t, "evil-"+strconv.Itoa(i)+".corp.example:443", basicAuth(c.ID, h.adminKey), nil).reply()
		assert.Equal(t, "EVIL_"+strconv.Itoa(i), r.header.Get("Postern-Reason"))
		e := decode[api.Error](t, r, http.StatusBadGateway)
		assert.LessOrEqual(t, len(e.Message), broker.MaxText)
	}
	r := h.connect(t, "lower.corp.example:443", basicAuth(c.ID, h.adminKey), nil).reply()
	requireRefusal(t, r, http.StatusBadGateway, protocol.ProtocolError)

	text := series()
	assert.NotContains(t, text, "EVIL")
	assert.Contains(t, text, `postern_relay_refusals_total{reason="OTHER"} 20`)
	assert.Contains(t, text, `postern_relay_refusals_total{reason="PROTOCOL_ERROR"} 1`)
	assert.LessOrEqual(t, strings.Count(text, "\n")-before, 2*3, "two series at most (OTHER, PROTOCOL_ERROR), with their HELP and TYPE")
}
