package relay

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/admin"
	"github.com/postern/postern/relay/api"
)

// answerCheck answers a check with outcome.
func answerCheck(outcome protocol.CheckResult) answerFunc {
	return func(_ protocol.Request, st net.Conn) {
		_ = protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{OK: true, Addr: "10.20.0.7:443", Check: &outcome})
	}
}

func checkPath(connID string) string { return "/v1/connections/" + connID + "/check" }

func TestCheckPassesAgentOutcomeThrough(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	key := h.createKey(t, "acme")

	limited := protocol.CheckResult{
		Reason: protocol.UpstreamRateLimited, ProviderErrorCode: "SOMETHING_THE_AGENT_MADE_UP", RetryAfterSeconds: 30,
		Steps: []protocol.CheckStep{
			{Step: "allowlist", OK: true, Detail: "allowed by allow host=gitlab.corp.example ports=443"},
			{Step: "dns", OK: true, MS: 3, Detail: "10.20.0.7 (server 10.0.0.2:53, NOERROR)"},
			{Step: "tcp", OK: true, MS: 1, Detail: "connected to 10.20.0.7:443"},
			{Step: "tls", OK: true, MS: 12, Detail: "TLS 1.3, subject CN=gitlab.corp.example, verified"},
			{Step: "http", OK: false, MS: 20, Reason: protocol.UpstreamRateLimited, Detail: "HTTP 429 Too Many Requests"},
		},
	}
	ready := protocol.CheckResult{Ready: true, Steps: []protocol.CheckStep{{Step: "allowlist", OK: true}, {Step: "http", OK: true, Detail: "HTTP 401 Unauthorized"}}}
	flood := protocol.CheckResult{Reason: protocol.DNSNXDomain}
	for range 10 {
		flood.Steps = append(flood.Steps, protocol.CheckStep{Step: "dns", Reason: protocol.DNSNXDomain, Detail: strings.Repeat("x", 2000)})
	}
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), byHost(map[string]answerFunc{
		"gitlab.corp.example": answerCheck(limited),
		"jira.corp.example":   answerCheck(ready),
		"flood.corp.example":  answerCheck(flood),
		"old.corp.example":    refuse(protocol.UnsupportedOp, 0),
		"empty.corp.example": func(_ protocol.Request, st net.Conn) {
			_ = protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{OK: true})
		},
	}))
	h.waitTunnels(t, c.ID, 1)

	t.Run("not ready: reason, table provider code and retry_after", func(t *testing.T) {
		before := time.Now()
		r := h.call(t, http.MethodPost, checkPath(c.ID), key, api.CheckRequest{BaseURL: "https://gitlab.corp.example/api/v4"})
		got := decode[api.Check](t, r, http.StatusOK)
		assert.False(t, got.Ready)
		assert.Equal(t, protocol.UpstreamRateLimited, got.Reason)
		assert.Equal(t, protocol.ProviderRateLimited, got.ProviderErrorCode, "the provider code comes from the reason table")
		assert.Equal(t, 30, got.RetryAfter)
		require.Len(t, got.Steps, 5)
		assert.Equal(t, api.CheckStep{Step: "dns", OK: true, MS: 3, Detail: "10.20.0.7 (server 10.0.0.2:53, NOERROR)"}, got.Steps[1])
		assert.Equal(t, api.CheckStep{Step: "http", MS: 20, Reason: protocol.UpstreamRateLimited, Detail: "HTTP 429 Too Many Requests"}, got.Steps[4])

		req := a.NextRequest(t)
		assert.Equal(t, protocol.OpCheck, req.Op)
		assert.Equal(t, "gitlab.corp.example", req.Host)
		assert.Equal(t, 443, req.Port, "the port defaults by scheme")
		assert.Equal(t, "https://gitlab.corp.example/api/v4", req.BaseURL)
		assert.Equal(t, r.header.Get("Postern-Request-Id"), req.ID)
		assert.WithinRange(t, req.Deadline(), before.Add(admin.CheckTimeout-time.Second), time.Now().Add(admin.CheckTimeout+time.Second))
	})
	t.Run("ready", func(t *testing.T) {
		got := decode[api.Check](t, h.call(t, http.MethodPost, checkPath(c.ID), key,
			api.CheckRequest{BaseURL: "http://jira.corp.example:8080"}), http.StatusOK)
		assert.True(t, got.Ready)
		assert.Empty(t, got.Reason)
		assert.Empty(t, got.ProviderErrorCode)
		assert.Len(t, got.Steps, 2)
		assert.Equal(t, 8080, a.NextRequest(t).Port)
	})
	t.Run("body is bounded", func(t *testing.T) {
		got := decode[api.Check](t, h.call(t, http.MethodPost, checkPath(c.ID), key,
			api.CheckRequest{BaseURL: "https://flood.corp.example"}), http.StatusOK)
		assert.Len(t, got.Steps, admin.MaxCheckSteps)
		assert.Len(t, got.Steps[0].Detail, admin.MaxCheckDetail)
		assert.Equal(t, protocol.ProviderBaseURLUnreachable, got.ProviderErrorCode)
		a.NextRequest(t)
	})
	t.Run("agent without the operation", func(t *testing.T) {
		e := requireRefusal(t, h.call(t, http.MethodPost, checkPath(c.ID), key,
			api.CheckRequest{BaseURL: "https://old.corp.example"}), http.StatusBadGateway, protocol.UnsupportedOp)
		assert.Contains(t, e.Message, "does not support live checks")
		a.NextRequest(t)
	})
	t.Run("agent answers ok without outcome", func(t *testing.T) {
		requireRefusal(t, h.call(t, http.MethodPost, checkPath(c.ID), key,
			api.CheckRequest{BaseURL: "https://empty.corp.example"}), http.StatusBadGateway, protocol.ProtocolError)
		a.NextRequest(t)
	})
	t.Run("agent refusal passes through", func(t *testing.T) {
		requireRefusal(t, h.call(t, http.MethodPost, checkPath(c.ID), key,
			api.CheckRequest{BaseURL: "https://unknown.corp.example"}), http.StatusForbidden, protocol.AllowlistMissing)
		a.NextRequest(t)
	})
	h.waitReleased(t, c.ID)
}

func TestCheckRefusals(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	own := h.createKey(t, "acme")
	other := h.createKey(t, "globex")
	good := api.CheckRequest{BaseURL: "https://gitlab.corp.example"}

	tests := map[string]struct {
		connID string
		key    string
		body   any
		status int
		reason protocol.Reason
	}{
		"never connected":            {connID: c.ID, key: own, body: good, status: 502, reason: protocol.AgentNeverConnected},
		"admin key, never connected": {connID: c.ID, key: h.adminKey, body: good, status: 502, reason: protocol.AgentNeverConnected},
		"other workspace":            {connID: c.ID, key: other, body: good, status: 404, reason: protocol.ConnectionNotFound},
		"unknown connection":         {connID: "conn_nope", key: own, body: good, status: 404, reason: protocol.ConnectionNotFound},
		"no key":                     {connID: c.ID, body: good, status: 407, reason: protocol.ProxyAuthRequired},
		"no body":                    {connID: c.ID, key: own, status: 400, reason: protocol.InvalidRequest},
		"unknown field":              {connID: c.ID, key: own, body: `{"base_url":"https://x","follow":true}`, status: 400, reason: protocol.InvalidRequest},
		"empty base_url":             {connID: c.ID, key: own, body: api.CheckRequest{}, status: 400, reason: protocol.BadTarget},
		"ftp":                        {connID: c.ID, key: own, body: api.CheckRequest{BaseURL: "ftp://gitlab.corp.example"}, status: 400, reason: protocol.BadTarget},
		"no host":                    {connID: c.ID, key: own, body: api.CheckRequest{BaseURL: "https:///path"}, status: 400, reason: protocol.BadTarget},
		"bad port":                   {connID: c.ID, key: own, body: api.CheckRequest{BaseURL: "https://gitlab.corp.example:0"}, status: 400, reason: protocol.BadTarget},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			requireRefusal(t, h.call(t, http.MethodPost, checkPath(tc.connID), tc.key, tc.body), tc.status, tc.reason)
		})
	}

	t.Run("revoked", func(t *testing.T) {
		a := h.firstTunnel(t, c, testHello("agent-1", 1), answerCheck(protocol.CheckResult{Ready: true}))
		h.revoke(t, c.ID)
		requireRefusal(t, h.call(t, http.MethodPost, checkPath(c.ID), own, good), http.StatusForbidden, protocol.ConnectionRevoked)
		requireNoRequest(t, a, "a revoked connection's agent got a request")
	})
}

func TestCheckAgentThatNeverAnswers(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	gone := make(chan struct{})
	h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), func(_ protocol.Request, st net.Conn) {
		defer close(gone)
		_, _ = st.Read(make([]byte, 1)) // until the relay gives up
	})
	h.waitTunnels(t, c.ID, 1)

	// The API caller's own deadline ends the wait, and the stream with it.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.ep.apiURL+checkPath(c.ID),
		strings.NewReader(`{"base_url":"https://gitlab.corp.example"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+h.adminKey)
	_, err = h.ep.client.Do(req)
	require.Error(t, err)
	requireDone(t, gone, "the relay kept the check stream open after its caller left")
	h.waitReleased(t, c.ID)
}
