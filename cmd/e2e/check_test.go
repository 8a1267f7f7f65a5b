package e2e

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// provider is a self-hosted service inside the customer network.
func provider(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/auth":
		w.WriteHeader(http.StatusUnauthorized)
	case "/limited":
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	default:
		_, _ = io.WriteString(w, "ok")
	}
}

func startProvider(t *testing.T, useTLS bool) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(provider))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	return srv, u.Port()
}

// requireCheckRefused checks a check that could not run.
func requireCheckRefused(t *testing.T, err error, reason protocol.Reason) {
	t.Helper()
	var apiErr *api.Error
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, reason, apiErr.Reason)
	assert.Equal(t, reason.Info().ProviderErrorCode, apiErr.ProviderErrorCode)
	assert.NotEmpty(t, apiErr.Message)
}

// TestLiveCheck runs POST /v1/connections/{id}/check through a real relay
// and a real agent against real targets on loopback, with the product's
// workspace key.
func TestLiveCheck(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	product := client.New("http://"+f.relay.apiAddr, f.key, nil)
	_, webPort := startProvider(t, false)
	_, tlsPort := startProvider(t, true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refusedPort := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	require.NoError(t, ln.Close())
	web := "http://jira.postern.test:" + webPort

	_, err = product.Check(ctx, f.conn.ID, web+"/auth")
	requireCheckRefused(t, err, protocol.AgentNeverConnected)

	rules := fmt.Sprintf("allow:\n  - ip: 127.0.0.1\n    ports: [%s, %s, %s]\n  - host: jira.postern.test\n    ports: [%s, %s]\n",
		webPort, tlsPort, refusedPort, webPort, refusedPort)
	ta := startAgent(t, f.relay, f.conn.AgentToken, rules, map[string]string{"jira.postern.test": "127.0.0.1"})
	waitStatus(t, f.relay.admin, f.conn.ID, func(s api.Status) bool { return s.TunnelStatus == "connected" })

	tests := map[string]struct {
		baseURL string
		ready   bool
		reason  protocol.Reason
		retry   int
		steps   []string
		detail  string // in the last step
	}{
		"provider answers 401": {
			baseURL: web + "/auth", ready: true, steps: []string{"allowlist", "dns", "tcp", "http"},
			detail: "HTTP 401 Unauthorized: reachable, authentication required",
		},
		"provider answers 429": {
			baseURL: web + "/limited", reason: protocol.UpstreamRateLimited, retry: 30,
			steps: []string{"allowlist", "dns", "tcp", "http"}, detail: "HTTP 429 Too Many Requests",
		},
		"refused port": {
			baseURL: "http://jira.postern.test:" + refusedPort, reason: protocol.ConnectRefused,
			steps: []string{"allowlist", "dns", "tcp"}, detail: "dial 127.0.0.1:" + refusedPort,
		},
		"self-signed certificate": {
			baseURL: "https://127.0.0.1:" + tlsPort, reason: protocol.TLSFailed,
			steps: []string{"allowlist", "tcp", "tls"}, detail: "verify error: x509: certificate signed by unknown authority",
		},
		"not allowlisted": {
			baseURL: "https://gitlab.other.example", reason: protocol.AllowlistMissing, steps: []string{"allowlist"},
		},
		"metadata address": {
			baseURL: "http://169.254.169.254/latest", reason: protocol.TargetBlocked, steps: []string{"allowlist"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ck, err := product.Check(ctx, f.conn.ID, tc.baseURL)
			require.NoError(t, err, "a check that ran answers 200 whatever its verdict")
			assert.Equal(t, tc.ready, ck.Ready)
			assert.Equal(t, tc.reason, ck.Reason)
			assert.Equal(t, tc.reason.Info().ProviderErrorCode, ck.ProviderErrorCode)
			assert.Equal(t, tc.retry, ck.RetryAfter)
			names := make([]string, len(ck.Steps))
			for i, s := range ck.Steps {
				names[i] = s.Step
			}
			require.Equal(t, tc.steps, names)
			last := ck.Steps[len(ck.Steps)-1]
			assert.Equal(t, tc.ready, last.OK)
			assert.Equal(t, tc.reason, last.Reason)
			assert.Contains(t, last.Detail, tc.detail)
			if len(names) > 1 && names[1] == "dns" {
				assert.Equal(t, "127.0.0.1 (hosts file)", ck.Steps[1].Detail)
			}
		})
	}

	t.Run("bad base_url", func(t *testing.T) {
		_, err := product.Check(ctx, f.conn.ID, "ftp://jira.postern.test")
		requireCheckRefused(t, err, protocol.BadTarget)
	})
	t.Run("another workspace's key", func(t *testing.T) {
		other, err := f.relay.admin.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: "other", Workspace: "globex"})
		require.NoError(t, err)
		_, err = client.New("http://"+f.relay.apiAddr, other.Key, nil).Check(ctx, f.conn.ID, web)
		requireCheckRefused(t, err, protocol.ConnectionNotFound)
	})
	t.Run("agent stopped", func(t *testing.T) {
		ta.stop(t)
		waitStatus(t, f.relay.admin, f.conn.ID, func(s api.Status) bool { return s.TunnelStatus == "disconnected" })
		_, err := product.Check(ctx, f.conn.ID, web)
		requireCheckRefused(t, err, protocol.AgentOffline)
	})
	t.Run("revoked", func(t *testing.T) {
		_, err := f.relay.admin.RevokeConnection(ctx, f.conn.ID)
		require.NoError(t, err)
		_, err = product.Check(ctx, f.conn.ID, web)
		requireCheckRefused(t, err, protocol.ConnectionRevoked)
		assert.True(t, strings.Contains(err.Error(), "revoked"))
	})
}
