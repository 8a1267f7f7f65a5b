package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// eventsRelay serves GET /v1/events: the first stream sends two events and
// hangs up, the second (which must resume after the second) sends one,
// then every later request is refused with an API error.
type eventsRelay struct {
	mu      sync.Mutex
	lastIDs []string
	queries []string
}

func (f *eventsRelay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.lastIDs = append(f.lastIDs, r.Header.Get("Last-Event-ID"))
	f.queries = append(f.queries, r.URL.RawQuery)
	n := len(f.lastIDs)
	f.mu.Unlock()
	ev := func(id, typ, from, to, reason string) string {
		data, _ := json.Marshal(api.Event{
			ID: id, Type: typ, ConnectionID: "conn_1", Workspace: "acme", Time: t0,
			From: from, To: to, Reason: protocol.Reason(reason), ProviderErrorCode: "PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED",
		})
		return fmt.Sprintf("id: %s\nevent: %s\ndata: %s\n\n", id, typ, data)
	}
	switch n {
	case 1:
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, ": hello\n\n"+ev("1", "tunnel", "never_connected", "connected", "")+ev("2", "tunnel", "connected", "disconnected", "AGENT_OFFLINE"))
	case 2:
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, ev("3", "auth", "active", "failing", "AGENT_AUTH_FAILED\x1b[2J"))
	default:
		writeJSON(w, http.StatusUnauthorized, api.Error{Reason: "API_AUTH_REQUIRED", Message: "API key is unknown, wrong or revoked", RequestID: "r1"})
	}
}

func runEvents(t *testing.T, f *eventsRelay, args ...string) (string, string, error) {
	t.Helper()
	return execute(t, append([]string{"events"}, args...), serveHarness(t, f).adminEnv().eventsCmd())
}

func TestEventsCommandHuman(t *testing.T) {
	f := &eventsRelay{}
	out, errOut, err := runEvents(t, f, "--connection", "conn_1")
	require.Error(t, err, "a refused key ends the command")
	assert.Contains(t, err.Error(), "API_AUTH_REQUIRED")

	assert.Equal(t, "2025-06-01T12:00:00Z conn_1 acme tunnel: never_connected -> connected  [event 1]\n"+
		"2025-06-01T12:00:00Z conn_1 acme tunnel: connected -> disconnected  AGENT_OFFLINE (PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED)  [event 2]\n"+
		"2025-06-01T12:00:00Z conn_1 acme auth: active -> failing  AGENT_AUTH_FAILED?[2J (PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED)  [event 3]\n", out,
		"each line ends with the id --last-event-id resumes after")
	assert.NotContains(t, out, "\x1b", "control characters from the relay never reach the terminal")
	assert.Contains(t, errOut, "resuming after 2")

	f.mu.Lock()
	defer f.mu.Unlock()
	assert.Equal(t, []string{"", "2", "3"}, f.lastIDs, "each reconnect resumes after the last event")
	for _, q := range f.queries {
		assert.Equal(t, "connection_id=conn_1", q)
	}
}

func TestEventsCommandJSON(t *testing.T) {
	out, _, err := runEvents(t, &eventsRelay{}, "--json", "--last-event-id", "0")
	require.Error(t, err)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 3, out)
	for i, l := range lines {
		var e api.Event
		require.NoError(t, json.Unmarshal([]byte(l), &e), "line %d is one JSON object", i+1)
		assert.Equal(t, fmt.Sprint(i+1), e.ID)
		assert.Equal(t, "conn_1", e.ConnectionID)
	}
}

func TestWebhookSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	good := write("good", "  s3cret-s3cret-s3cret-s3cret\n", 0o600)
	open := write("open", "s3cret-s3cret-s3cret-s3cret", 0o644)
	huge := write("huge", strings.Repeat("x", maxSecretFileSize+1), 0o600)
	tests := map[string]struct {
		cfg  []webhookConfig
		want string // error text; empty for success
	}{
		"secret read and trimmed": {cfg: []webhookConfig{{URL: "https://h.example/in", SecretFile: good, Workspace: "acme"}}},
		"no secret_file":          {cfg: []webhookConfig{{URL: "https://h.example/in"}}, want: "webhooks[0]: secret_file is required"},
		"missing file":            {cfg: []webhookConfig{{URL: "https://h.example/in", SecretFile: filepath.Join(dir, "nope")}}, want: "no such file"},
		"world-readable":          {cfg: []webhookConfig{{URL: "https://h.example/in", SecretFile: open}}, want: "chmod 600"},
		"too large":               {cfg: []webhookConfig{{URL: "https://h.example/in", SecretFile: huge}}, want: "larger than"},
		"every bad entry at once": {cfg: []webhookConfig{{SecretFile: open}, {}}, want: "webhooks[1]"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			hooks, err := loadWebhooks(tt.cfg)
			if tt.want != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.want)
				assert.NotContains(t, err.Error(), "s3cret")
				return
			}
			require.NoError(t, err)
			require.Len(t, hooks, 1)
			assert.Equal(t, "s3cret-s3cret-s3cret-s3cret", string(hooks[0].Secret))
			assert.Equal(t, "acme", hooks[0].Workspace)
		})
	}
}

func TestServeConfigWebhooksKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "relay.yaml")
	require.NoError(t, os.WriteFile(p, []byte("webhooks:\n  - url: https://h.example/in\n    secret_file: /etc/postern/hook.secret\n    workspace: acme\n"), 0o600))
	var cfg serveConfig
	require.NoError(t, loadServeConfig(p, &cfg))
	assert.Equal(t, []webhookConfig{{URL: "https://h.example/in", SecretFile: "/etc/postern/hook.secret", Workspace: "acme"}}, cfg.Webhooks)

	require.NoError(t, os.WriteFile(p, []byte("webhooks:\n  - url: https://h.example/in\n    secret: inline\n"), 0o600))
	err := loadServeConfig(p, &serveConfig{})
	require.Error(t, err, "an inline secret is an unknown key")
	assert.Contains(t, err.Error(), "secret")
}
