package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testKey = "pak_abcdefghijklmnop_secretsecretsecretsecretsecretsecretsec"

// recorded is what the fake relay saw.
type recorded struct {
	method, path, rawQuery, auth, contentType string
	body                                      map[string]any
}

// fakeRelay answers every request with status and body, and records it.
func fakeRelay(t *testing.T, status int, body string) (*httptest.Server, *recorded) {
	t.Helper()
	rec := &recorded{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.method, rec.path, rec.rawQuery = r.Method, r.URL.EscapedPath(), r.URL.RawQuery
		rec.auth, rec.contentType = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		b, _ := io.ReadAll(r.Body)
		if len(b) > 0 {
			assert.NoError(t, json.Unmarshal(b, &rec.body))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, rec
}

var created = time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)

func TestRoutes(t *testing.T) {
	connBody := `{"id":"c1","name":"gitlab","workspace":"acme","created_at":"2025-05-06T07:08:09Z","agent_token":"pat_x"}`
	tests := map[string]struct {
		status int
		body   string
		call   func(c *Client) (any, error)
		method string
		path   string
		query  string
		sent   map[string]any
		want   any
	}{
		"create connection": {
			status: 201, body: connBody,
			call:   func(c *Client) (any, error) { return c.CreateConnection(t.Context(), "gitlab", "acme") },
			method: "POST", path: "/v1/connections",
			sent: map[string]any{"name": "gitlab", "workspace": "acme"},
			want: api.Connection{ID: "c1", Name: "gitlab", Workspace: "acme", CreatedAt: created, AgentToken: "pat_x"},
		},
		"create connection default workspace": {
			status: 201, body: connBody,
			call:   func(c *Client) (any, error) { return c.CreateConnection(t.Context(), "gitlab", "") },
			method: "POST", path: "/v1/connections",
			sent: map[string]any{"name": "gitlab"},
			want: api.Connection{ID: "c1", Name: "gitlab", Workspace: "acme", CreatedAt: created, AgentToken: "pat_x"},
		},
		"list connections": {
			status: 200, body: `{"connections":[{"id":"c1","name":"n","workspace":"w","created_at":"2025-05-06T07:08:09Z"}]}`,
			call:   func(c *Client) (any, error) { return c.ListConnections(t.Context()) },
			method: "GET", path: "/v1/connections",
			want: api.ConnectionList{Connections: []api.Connection{{ID: "c1", Name: "n", Workspace: "w", CreatedAt: created}}},
		},
		"get connection": {
			status: 200, body: `{"id":"c1","name":"n","workspace":"w","created_at":"2025-05-06T07:08:09Z","revoked_at":"2025-05-06T07:08:09Z"}`,
			call:   func(c *Client) (any, error) { return c.GetConnection(t.Context(), "c1") },
			method: "GET", path: "/v1/connections/c1",
			want: api.Connection{ID: "c1", Name: "n", Workspace: "w", CreatedAt: created, RevokedAt: &created},
		},
		"get connection escapes id": {
			status: 200, body: `{"id":"a/b"}`,
			call:   func(c *Client) (any, error) { return c.GetConnection(t.Context(), "a/b?x") },
			method: "GET", path: "/v1/connections/a%2Fb%3Fx",
			want: api.Connection{ID: "a/b"},
		},
		"revoke connection": {
			status: 200, body: `{"id":"c1","revoked_at":"2025-05-06T07:08:09Z","created_at":"2025-05-06T07:08:09Z"}`,
			call:   func(c *Client) (any, error) { return c.RevokeConnection(t.Context(), "c1") },
			method: "POST", path: "/v1/connections/c1/revoke",
			want: api.Connection{ID: "c1", CreatedAt: created, RevokedAt: &created},
		},
		"delete connection": {
			status: 204,
			call:   func(c *Client) (any, error) { return nil, c.DeleteConnection(t.Context(), "a/b") },
			method: "DELETE", path: "/v1/connections/a%2Fb",
		},
		"rotate token": {
			status: 200, body: `{"agent_token":"pat_new","previous_valid_until":"2025-05-06T07:08:09Z"}`,
			call:   func(c *Client) (any, error) { return c.RotateToken(t.Context(), "c1", api.RotateTokenRequest{}) },
			method: "POST", path: "/v1/connections/c1/tokens",
			sent: map[string]any{},
			want: api.TokenResponse{AgentToken: "pat_new", PreviousValidUntil: created},
		},
		"rotate token expiring the previous": {
			status: 200, body: `{"agent_token":"pat_new","previous_valid_until":"2025-05-06T07:08:09Z"}`,
			call: func(c *Client) (any, error) {
				return c.RotateToken(t.Context(), "c1", api.RotateTokenRequest{ExpirePrevious: true})
			},
			method: "POST", path: "/v1/connections/c1/tokens",
			sent: map[string]any{"expire_previous": true},
			want: api.TokenResponse{AgentToken: "pat_new", PreviousValidUntil: created},
		},
		"list api keys": {
			status: 200,
			body: `{"api_keys":[{"id":"k1","name":"ops","admin":true,"created_at":"2025-05-06T07:08:09Z"},` +
				`{"id":"k2","name":"ci","workspace":"acme","admin":false,"created_at":"2025-05-06T07:08:09Z",` +
				`"expires_at":"2025-05-06T07:08:09Z","revoked_at":"2025-05-06T07:08:09Z"}]}`,
			call:   func(c *Client) (any, error) { return c.ListAPIKeys(t.Context()) },
			method: "GET", path: "/v1/api-keys",
			want: api.APIKeyList{APIKeys: []api.APIKey{
				{ID: "k1", Name: "ops", Admin: true, CreatedAt: created},
				{ID: "k2", Name: "ci", Workspace: "acme", CreatedAt: created, ExpiresAt: &created, RevokedAt: &created},
			}},
		},
		"revoke api key": {
			status: 200, body: `{"id":"k/1","name":"ci","admin":false,"created_at":"2025-05-06T07:08:09Z","revoked_at":"2025-05-06T07:08:09Z"}`,
			call:   func(c *Client) (any, error) { return c.RevokeAPIKey(t.Context(), "k/1") },
			method: "POST", path: "/v1/api-keys/k%2F1/revoke",
			want: api.APIKey{ID: "k/1", Name: "ci", CreatedAt: created, RevokedAt: &created},
		},
		"create api key with an expiry": {
			status: 201, body: `{"id":"k1","name":"ci","workspace":"acme","admin":false,"key":"pak_k","created_at":"2025-05-06T07:08:09Z","expires_at":"2025-05-06T07:08:09Z"}`,
			call: func(c *Client) (any, error) {
				return c.CreateAPIKey(t.Context(), api.CreateAPIKeyRequest{Name: "ci", Workspace: "acme", ExpiresAt: &created})
			},
			method: "POST", path: "/v1/api-keys",
			sent: map[string]any{"name": "ci", "workspace": "acme", "expires_at": "2025-05-06T07:08:09Z"},
			want: api.APIKey{ID: "k1", Name: "ci", Workspace: "acme", Key: "pak_k", CreatedAt: created, ExpiresAt: &created},
		},
		"create admin api key": {
			status: 201, body: `{"id":"k1","name":"ops","admin":true,"key":"pak_k","created_at":"2025-05-06T07:08:09Z"}`,
			call: func(c *Client) (any, error) {
				return c.CreateAPIKey(t.Context(), api.CreateAPIKeyRequest{Name: "ops", Admin: true})
			},
			method: "POST", path: "/v1/api-keys",
			sent: map[string]any{"name": "ops", "admin": true},
			want: api.APIKey{ID: "k1", Name: "ops", Admin: true, Key: "pak_k", CreatedAt: created},
		},
		"create scoped api key": {
			status: 201, body: `{"id":"k1","name":"ci","workspace":"acme","admin":false,"key":"pak_k","created_at":"2025-05-06T07:08:09Z"}`,
			call: func(c *Client) (any, error) {
				return c.CreateAPIKey(t.Context(), api.CreateAPIKeyRequest{Name: "ci", Workspace: "acme"})
			},
			method: "POST", path: "/v1/api-keys",
			sent: map[string]any{"name": "ci", "workspace": "acme"},
			want: api.APIKey{ID: "k1", Name: "ci", Workspace: "acme", Key: "pak_k", CreatedAt: created},
		},
		"status": {
			status: 200, body: `{"connection_id":"c1","ready":true,"tunnel_status":"connected","agents":[]}`,
			call:   func(c *Client) (any, error) { return c.Status(t.Context(), "c1", "") },
			method: "GET", path: "/v1/connections/c1/status",
			want: api.Status{ConnectionID: "c1", Ready: true, TunnelStatus: "connected", Agents: []api.Agent{}},
		},
		"status with base url": {
			status: 200, body: `{"connection_id":"c1","allowlist_status":"allowed"}`,
			call: func(c *Client) (any, error) {
				return c.Status(t.Context(), "c1", "https://gitlab.corp:443/x?y=1&z")
			},
			method: "GET", path: "/v1/connections/c1/status",
			query: "base_url=https%3A%2F%2Fgitlab.corp%3A443%2Fx%3Fy%3D1%26z",
			want:  api.Status{ConnectionID: "c1", AllowlistStatus: "allowed"},
		},
		"unknown fields ignored": {
			status: 200, body: `{"id":"c1","future_field":{"a":1}}`,
			call:   func(c *Client) (any, error) { return c.GetConnection(t.Context(), "c1") },
			method: "GET", path: "/v1/connections/c1",
			want: api.Connection{ID: "c1"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv, rec := fakeRelay(t, tc.status, tc.body)
			got, err := tc.call(New(srv.URL+"/", testKey, srv.Client()))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.method, rec.method)
			assert.Equal(t, tc.path, rec.path)
			assert.Equal(t, tc.query, rec.rawQuery)
			assert.Equal(t, "Bearer "+testKey, rec.auth)
			assert.Equal(t, tc.sent, rec.body)
			if tc.sent != nil {
				assert.Equal(t, "application/json", rec.contentType)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	big := `{"id":"` + strings.Repeat("x", MaxResponseSize) + `"}`
	tests := map[string]struct {
		status int
		body   string
		check  func(t *testing.T, err error)
	}{
		"api error": {
			status: 404,
			body:   `{"reason":"CONNECTION_NOT_FOUND","message":"no connection c1","request_id":"r1"}`,
			check: func(t *testing.T, err error) {
				var apiErr *api.Error
				require.ErrorAs(t, err, &apiErr)
				assert.Equal(t, protocol.ConnectionNotFound, apiErr.Reason)
				assert.Equal(t, "r1", apiErr.RequestID)
				assert.Equal(t, "CONNECTION_NOT_FOUND: no connection c1", err.Error())
			},
		},
		"api error with retry": {
			status: 503,
			body:   `{"reason":"RELAY_UNAVAILABLE","provider_error_code":"PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED","message":"store down","retry_after":5}`,
			check: func(t *testing.T, err error) {
				var apiErr *api.Error
				require.ErrorAs(t, err, &apiErr)
				assert.Equal(t, 5, apiErr.RetryAfter)
				assert.Equal(t, protocol.ProviderConnectivityBlocked, apiErr.ProviderErrorCode)
			},
		},
		"html error page": {
			status: 502,
			body:   `<html>bad gateway</html>`,
			check: func(t *testing.T, err error) {
				var ue *UnexpectedResponseError
				require.ErrorAs(t, err, &ue)
				assert.Equal(t, 502, ue.StatusCode)
				assert.Contains(t, err.Error(), "502 Bad Gateway")
			},
		},
		"json without reason": {
			status: 500,
			body:   `{"error":"boom"}`,
			check: func(t *testing.T, err error) {
				var ue *UnexpectedResponseError
				require.ErrorAs(t, err, &ue)
				assert.Contains(t, err.Error(), "500")
			},
		},
		"empty error body": {
			status: 401,
			check: func(t *testing.T, err error) {
				var ue *UnexpectedResponseError
				require.ErrorAs(t, err, &ue)
				assert.Equal(t, 401, ue.StatusCode)
			},
		},
		"bad success body": {
			status: 200,
			body:   `not json`,
			check: func(t *testing.T, err error) {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "decode answer")
			},
		},
		"oversized answer": {
			status: 200,
			body:   big,
			check: func(t *testing.T, err error) {
				require.ErrorIs(t, err, ErrResponseTooLarge)
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv, _ := fakeRelay(t, tc.status, tc.body)
			// The default client, so the redirect policy is the one New sets.
			_, err := New(srv.URL, testKey, nil).GetConnection(t.Context(), "c1")
			tc.check(t, err)
			assert.NotContains(t, err.Error(), testKey)
		})
	}
}

// TestDeleteRefused: a connection still in use comes back as the relay's
// reason, with the command that revokes it.
func TestDeleteRefused(t *testing.T) {
	srv, _ := fakeRelay(t, http.StatusConflict, `{"reason":"CONNECTION_NOT_REVOKED",`+
		`"message":"revoke the connection first: postern-relay connections revoke c1","request_id":"r1"}`)
	err := New(srv.URL, testKey, srv.Client()).DeleteConnection(t.Context(), "c1")
	var apiErr *api.Error
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, protocol.NotRevoked, apiErr.Reason)
	assert.Equal(t, "CONNECTION_NOT_REVOKED: revoke the connection first: postern-relay connections revoke c1", err.Error())
}

func TestRedirectNotFollowed(t *testing.T) {
	followed := false
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/connections", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		followed = true
		_, _ = io.WriteString(w, `{"id":"c1"}`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	_, err := New(srv.URL, testKey, nil).CreateConnection(t.Context(), "n", "")
	var ue *UnexpectedResponseError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, http.StatusTemporaryRedirect, ue.StatusCode)
	assert.False(t, followed, "the POST must not be resent to the redirect target")
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	_, err := New(addr, testKey, nil).ListConnections(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), addr)
	assert.NotContains(t, err.Error(), testKey)
}

func TestCanceledContext(t *testing.T) {
	srv, _ := fakeRelay(t, 200, `{}`)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := New(srv.URL, testKey, nil).ListConnections(ctx)
	require.ErrorIs(t, err, ctx.Err())
}

func TestClientHidesKey(t *testing.T) {
	c := New("https://relay.example", testKey, nil)
	var logBuf bytes.Buffer
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("using", "client", c)
	for name, out := range map[string]string{
		"%v":   fmt.Sprintf("%v", c),
		"%+v":  fmt.Sprintf("%+v", c),
		"%#v":  fmt.Sprintf("%#v", c),
		"%d":   fmt.Sprintf("%d", c),
		"slog": logBuf.String(),
	} {
		t.Run(name, func(t *testing.T) {
			assert.NotContains(t, out, testKey)
			assert.Contains(t, out, "https://relay.example")
		})
	}
}

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
