package client

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

func TestCheck(t *testing.T) {
	tests := map[string]struct {
		status  int
		body    string
		id      string
		path    string
		want    api.Check
		wantErr protocol.Reason
	}{
		"ready": {
			status: 200, id: "c1", path: "/v1/connections/c1/check",
			body: `{"ready":true,"steps":[{"step":"allowlist","ok":true,"ms":0,"detail":"allowed by allow ip=10.0.0.7 ports=443"},` +
				`{"step":"http","ok":true,"ms":12,"detail":"HTTP 401 Unauthorized: reachable, authentication required"}]}`,
			want: api.Check{Ready: true, Steps: []api.CheckStep{
				{Step: "allowlist", OK: true, Detail: "allowed by allow ip=10.0.0.7 ports=443"},
				{Step: "http", OK: true, MS: 12, Detail: "HTTP 401 Unauthorized: reachable, authentication required"},
			}},
		},
		"not ready is not an error": {
			status: 200, id: "c/1", path: "/v1/connections/c%2F1/check",
			body: `{"ready":false,"reason":"UPSTREAM_RATE_LIMITED","provider_error_code":"PROVIDER_RATE_LIMITED","retry_after":30,` +
				`"steps":[{"step":"http","ok":false,"ms":4,"reason":"UPSTREAM_RATE_LIMITED","detail":"HTTP 429"}]}`,
			want: api.Check{Reason: protocol.UpstreamRateLimited, ProviderErrorCode: protocol.ProviderRateLimited, RetryAfter: 30,
				Steps: []api.CheckStep{{Step: "http", MS: 4, Reason: protocol.UpstreamRateLimited, Detail: "HTTP 429"}}},
		},
		"check could not run": {
			status: 502, id: "c1", path: "/v1/connections/c1/check",
			body:    `{"reason":"AGENT_OFFLINE","provider_error_code":"PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED","message":"no tunnel","request_id":"r1"}`,
			wantErr: protocol.AgentOffline,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv, rec := fakeRelay(t, tc.status, tc.body)
			got, err := New(srv.URL, testKey, srv.Client()).Check(t.Context(), tc.id, "https://gitlab.corp:8443/api")
			assert.Equal(t, "POST", rec.method)
			assert.Equal(t, tc.path, rec.path)
			assert.Equal(t, map[string]any{"base_url": "https://gitlab.corp:8443/api"}, rec.body)
			assert.Equal(t, "Bearer "+testKey, rec.auth)
			if tc.wantErr != "" {
				var apiErr *api.Error
				require.ErrorAs(t, err, &apiErr)
				assert.Equal(t, tc.wantErr, apiErr.Reason)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
