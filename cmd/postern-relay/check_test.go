package main

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// checkRelay answers POST /v1/connections/{id}/check with the outcome
// named by the body's base_url, so each answer proves what was sent.
func checkRelay(t *testing.T, outcomes map[string]any) *harness {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/connections/{id}/check", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		b, _ := io.ReadAll(r.Body)
		assert.NoError(t, json.Unmarshal(b, &body))
		assert.Equal(t, "/v1/connections/conn_1/check", r.URL.Path)
		switch out := outcomes[body["base_url"].(string)].(type) {
		case api.Check:
			writeJSON(w, http.StatusOK, out)
		case api.Error:
			writeJSON(w, out.Reason.Info().HTTPStatus, out)
		default:
			t.Errorf("unexpected base_url %v", body["base_url"])
		}
	})
	return serveHarness(t, mux)
}

func TestConnectionsCheck(t *testing.T) {
	refused := api.Check{
		Reason: protocol.ConnectRefused, ProviderErrorCode: protocol.ProviderBaseURLUnreachable,
		Steps: []api.CheckStep{
			{Step: "allowlist", OK: true, Detail: "allowed by allow host=*.corp.example ports=443"},
			{Step: "dns", OK: true, MS: 3, Detail: "10.0.0.7 (server 10.0.0.2:53, NOERROR)"},
			{Step: "tcp", MS: 1, Reason: protocol.ConnectRefused, Detail: "dial 10.0.0.7:443: connection refused"},
		},
	}
	limited := api.Check{
		Reason: protocol.UpstreamRateLimited, ProviderErrorCode: protocol.ProviderRateLimited, RetryAfter: 30,
		Steps: []api.CheckStep{{Step: "http", MS: 9, Reason: protocol.UpstreamRateLimited, Detail: "HTTP 429 Too Many Requests\x1b[2J"}},
	}
	ready := api.Check{Ready: true, Steps: []api.CheckStep{
		{Step: "allowlist", OK: true},
		{Step: "http", OK: true, MS: 20, Detail: "HTTP 401 Unauthorized: reachable, authentication required"},
	}}
	h := checkRelay(t, map[string]any{
		"https://gitlab.corp.example": refused,
		"https://jira.corp.example":   limited,
		"https://ok.corp.example":     ready,
		"https://gone.corp.example":   api.Error{Reason: protocol.AgentOffline, Message: "no agent tunnel is up", RequestID: "r1"},
	})

	tests := map[string]struct {
		baseURL string
		out     string
		err     string
	}{
		"refused": {
			baseURL: "https://gitlab.corp.example",
			out: "PASS allowlist 0ms allowed by allow host=*.corp.example ports=443\n" +
				"PASS dns 3ms 10.0.0.7 (server 10.0.0.2:53, NOERROR)\n" +
				"FAIL tcp 1ms CONNECT_REFUSED: dial 10.0.0.7:443: connection refused\n" +
				"ready: no (CONNECT_REFUSED)\n",
			err: "not ready: CONNECT_REFUSED",
		},
		"rate limited, control characters cleaned": {
			baseURL: "https://jira.corp.example",
			out: "FAIL http 9ms UPSTREAM_RATE_LIMITED: HTTP 429 Too Many Requests?[2J\n" +
				"ready: no (UPSTREAM_RATE_LIMITED, retry after 30s)\n",
			err: "not ready: UPSTREAM_RATE_LIMITED",
		},
		"ready": {
			baseURL: "https://ok.corp.example",
			out: "PASS allowlist 0ms\n" +
				"PASS http 20ms HTTP 401 Unauthorized: reachable, authentication required\n" +
				"ready: yes\n",
		},
		"check could not run": {
			baseURL: "https://gone.corp.example",
			err:     "AGENT_OFFLINE: no agent tunnel is up",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, _, err := h.run(t, "connections", "check", "conn_1", "--base-url", tc.baseURL)
			assert.Equal(t, tc.out, out)
			if tc.err == "" {
				assert.NoError(t, err)
			} else {
				assert.EqualError(t, err, tc.err, "main exits 1 with this")
			}

			out, _, err = h.run(t, "connections", "check", "conn_1", "--base-url", tc.baseURL, "--json")
			if tc.out == "" {
				assert.Empty(t, out)
				return
			}
			var got api.Check
			decodeOne(t, out, &got)
			assert.Equal(t, tc.err == "", got.Ready)
			assert.Equal(t, tc.err == "", err == nil, "--json exits 1 when not ready too")
		})
	}
	_, _, err := h.run(t, "connections", "check", "conn_1")
	assert.ErrorContains(t, err, `required flag(s) "base-url" not set`)
}
