package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

const adminTestKey = "pak_abcdefghijklmnop_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeRelay implements the admin routes of the relay API in memory.
type fakeRelay struct {
	mu    sync.Mutex
	conns []api.Connection
	// lastBody is the JSON body of the last request.
	lastBody map[string]any
	lastPath string
}

func (f *fakeRelay) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/connections", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateConnectionRequest
		f.decode(r, &req)
		if req.Workspace == "" {
			req.Workspace = "default"
		}
		f.mu.Lock()
		c := api.Connection{ID: "conn_" + req.Name, Name: req.Name, Workspace: req.Workspace, CreatedAt: t0}
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		c.AgentToken = "pat_tok_for_" + req.Name
		writeJSON(w, http.StatusCreated, c)
	})
	mux.HandleFunc("GET /v1/connections", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeJSON(w, http.StatusOK, api.ConnectionList{Connections: append([]api.Connection{}, f.conns...)})
	})
	mux.HandleFunc("GET /v1/connections/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.withConn(w, r, func(c *api.Connection) { writeJSON(w, http.StatusOK, *c) })
	})
	mux.HandleFunc("POST /v1/connections/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		f.withConn(w, r, func(c *api.Connection) {
			if c.RevokedAt == nil {
				c.RevokedAt = new(t0.Add(time.Hour))
			}
			writeJSON(w, http.StatusOK, *c)
		})
	})
	mux.HandleFunc("POST /v1/connections/{id}/tokens", func(w http.ResponseWriter, r *http.Request) {
		f.withConn(w, r, func(c *api.Connection) {
			writeJSON(w, http.StatusOK, api.TokenResponse{
				AgentToken: "pat_rotated_" + c.ID, PreviousValidUntil: t0.Add(24 * time.Hour),
			})
		})
	})
	mux.HandleFunc("POST /v1/api-keys", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateAPIKeyRequest
		f.decode(r, &req)
		writeJSON(w, http.StatusCreated, api.APIKey{
			ID: "key1", Name: req.Name, Workspace: req.Workspace, Admin: req.Admin,
			Key: "pak_new_key", CreatedAt: t0,
		})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+adminTestKey {
			writeJSON(w, http.StatusUnauthorized, api.Error{
				Reason: protocol.APIAuthRequired, Message: "missing or wrong API key", RequestID: "req1",
			})
			return
		}
		f.mu.Lock()
		f.lastPath = r.URL.Path
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	})
}

func (f *fakeRelay) decode(r *http.Request, v any) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.lastBody = nil
	_ = json.Unmarshal(b, &f.lastBody)
	f.mu.Unlock()
	_ = json.Unmarshal(b, v)
}

// withConn runs fn on the connection named in the path, under the lock,
// or answers CONNECTION_NOT_FOUND.
func (f *fakeRelay) withConn(w http.ResponseWriter, r *http.Request, fn func(c *api.Connection)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.conns {
		if f.conns[i].ID == r.PathValue("id") {
			fn(&f.conns[i])
			return
		}
	}
	writeJSON(w, http.StatusNotFound, api.Error{
		Reason: protocol.ConnectionNotFound, Message: "no connection " + r.PathValue("id"), RequestID: "req2",
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// harness runs admin commands against one fake relay.
type harness struct {
	relay *fakeRelay
	srv   *httptest.Server
	env   map[string]string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	f := &fakeRelay{}
	h := serveHarness(t, f.handler())
	h.relay = f
	return h
}

// serveHarness serves handler as the relay the commands talk to, named by
// the environment together with the admin key.
func serveHarness(t *testing.T, handler http.Handler) *harness {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return &harness{srv: srv, env: map[string]string{
		envServer:   srv.URL,
		envAdminKey: adminTestKey,
	}}
}

// adminEnv is the commands' view of the harness: its environment and a
// client of its server.
func (h *harness) adminEnv() adminEnv {
	return adminEnv{getenv: func(k string) string { return h.env[k] }, httpClient: h.srv.Client()}
}

// run executes args under a root shaped like main's and returns stdout,
// stderr and the error main would print.
func (h *harness) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	e := h.adminEnv()
	return execute(t, args, e.connectionsCmd(), e.apiKeysCmd())
}

// execute runs args under a root shaped like main's, with cmds as its
// commands, and returns stdout, stderr and the error main would print.
func execute(t *testing.T, args []string, cmds ...*cobra.Command) (string, string, error) {
	t.Helper()
	root := &cobra.Command{Use: "postern-relay", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(cmds...)
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return stdout.String(), stderr.String(), err
}

// decodeOne checks out is exactly one JSON document and decodes it.
func decodeOne(t *testing.T, out string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	require.NoError(t, dec.Decode(v), out)
	var extra json.RawMessage
	require.ErrorIs(t, dec.Decode(&extra), io.EOF, "more than one JSON document")
}

func TestConnectionsHuman(t *testing.T) {
	h := newHarness(t)

	out, _, err := h.run(t, "connections", "create", "gitlab", "--workspace", "acme")
	require.NoError(t, err)
	assert.Equal(t, "id:          conn_gitlab\n"+
		"name:        gitlab\n"+
		"workspace:   acme\n"+
		"created:     2025-06-01T12:00:00Z\n"+
		"agent token: pat_tok_for_gitlab\n"+
		"\nThe agent token is shown only once: store it now and put it in the agent's config.\n", out)
	assert.Equal(t, map[string]any{"name": "gitlab", "workspace": "acme"}, h.relay.lastBody)

	_, _, err = h.run(t, "connections", "create", "jira")
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"name": "jira"}, h.relay.lastBody, "no --workspace leaves the default to the relay")

	out, _, err = h.run(t, "connections", "revoke", "conn_jira")
	require.NoError(t, err)
	assert.Contains(t, out, "state:     revoked\n")
	assert.Contains(t, out, "revoked:   2025-06-01T13:00:00Z\n")

	out, _, err = h.run(t, "connections", "list")
	require.NoError(t, err)
	assert.Equal(t, ""+
		"ID           NAME    WORKSPACE  CREATED               STATE\n"+
		"conn_gitlab  gitlab  acme       2025-06-01T12:00:00Z  active\n"+
		"conn_jira    jira    default    2025-06-01T12:00:00Z  revoked\n", out)

	out, _, err = h.run(t, "connections", "show", "conn_gitlab")
	require.NoError(t, err)
	assert.Equal(t, "id:        conn_gitlab\n"+
		"name:      gitlab\n"+
		"workspace: acme\n"+
		"created:   2025-06-01T12:00:00Z\n"+
		"state:     active\n", out)

	out, _, err = h.run(t, "connections", "rotate-token", "conn_gitlab")
	require.NoError(t, err)
	assert.Contains(t, out, "agent token:          pat_rotated_conn_gitlab\n")
	assert.Contains(t, out, "previous valid until: 2025-06-02T12:00:00Z\n")
	assert.Contains(t, out, "shown only once")
	assert.Equal(t, "/v1/connections/conn_gitlab/tokens", h.relay.lastPath)
}

func TestConnectionsListEmpty(t *testing.T) {
	h := newHarness(t)
	out, _, err := h.run(t, "connections", "list")
	require.NoError(t, err)
	assert.Equal(t, "No connections.\n", out)

	out, _, err = h.run(t, "connections", "list", "--json")
	require.NoError(t, err)
	var list api.ConnectionList
	decodeOne(t, out, &list)
	assert.NotNil(t, list.Connections, "an empty list is [], not null")
}

func TestConnectionsJSON(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name string
		args []string
		into func() any
		want any
	}{
		{
			name: "create",
			args: []string{"connections", "create", "gitlab", "--json"},
			into: func() any { return &api.Connection{} },
			want: &api.Connection{ID: "conn_gitlab", Name: "gitlab", Workspace: "default", CreatedAt: t0, AgentToken: "pat_tok_for_gitlab"},
		},
		{
			name: "list",
			args: []string{"connections", "list", "--json"},
			into: func() any { return &api.ConnectionList{} },
			want: &api.ConnectionList{Connections: []api.Connection{{ID: "conn_gitlab", Name: "gitlab", Workspace: "default", CreatedAt: t0}}},
		},
		{
			name: "show",
			args: []string{"connections", "show", "conn_gitlab", "--json"},
			into: func() any { return &api.Connection{} },
			want: &api.Connection{ID: "conn_gitlab", Name: "gitlab", Workspace: "default", CreatedAt: t0},
		},
		{
			name: "rotate-token",
			args: []string{"connections", "rotate-token", "conn_gitlab", "--json"},
			into: func() any { return &api.TokenResponse{} },
			want: &api.TokenResponse{AgentToken: "pat_rotated_conn_gitlab", PreviousValidUntil: t0.Add(24 * time.Hour)},
		},
		{
			name: "revoke",
			args: []string{"connections", "revoke", "conn_gitlab", "--json"},
			into: func() any { return &api.Connection{} },
			want: &api.Connection{ID: "conn_gitlab", Name: "gitlab", Workspace: "default", CreatedAt: t0, RevokedAt: new(t0.Add(time.Hour))},
		},
	}
	// Sequential: each step depends on the ones before it.
	for _, tc := range tests {
		out, stderr, err := h.run(t, tc.args...)
		require.NoError(t, err, tc.name)
		assert.Empty(t, stderr, tc.name)
		got := tc.into()
		decodeOne(t, out, got)
		assert.Equal(t, tc.want, got, tc.name)
	}
}

func TestAPIKeysCreate(t *testing.T) {
	tests := map[string]struct {
		args     []string
		wantBody map[string]any
		wantOut  []string
		wantErr  string
	}{
		"admin": {
			args:     []string{"api-keys", "create", "ops", "--admin"},
			wantBody: map[string]any{"name": "ops", "admin": true},
			wantOut:  []string{"id:      key1\n", "scope:   admin (all workspaces)\n", "key:     pak_new_key\n", "shown only once"},
		},
		"workspace": {
			args:     []string{"api-keys", "create", "ci", "--workspace", "acme"},
			wantBody: map[string]any{"name": "ci", "workspace": "acme"},
			wantOut:  []string{"workspace: acme\n", "key:       pak_new_key\n"},
		},
		"both":            {args: []string{"api-keys", "create", "x", "--admin", "--workspace", "acme"}, wantErr: "exactly one of --workspace W or --admin is required"},
		"neither":         {args: []string{"api-keys", "create", "x"}, wantErr: "exactly one of --workspace W or --admin is required"},
		"admin false":     {args: []string{"api-keys", "create", "x", "--admin=false"}, wantErr: "exactly one of --workspace W or --admin is required"},
		"empty workspace": {args: []string{"api-keys", "create", "x", "--workspace", ""}, wantErr: "--workspace must not be empty"},
		"no name":         {args: []string{"api-keys", "create", "--admin"}, wantErr: "accepts 1 arg(s), received 0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			out, _, err := h.run(t, tc.args...)
			if tc.wantErr != "" {
				require.EqualError(t, err, tc.wantErr)
				assert.Empty(t, out)
				assert.Nil(t, h.relay.lastBody, "nothing may reach the relay")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantBody, h.relay.lastBody)
			for _, want := range tc.wantOut {
				assert.Contains(t, out, want)
			}
		})
	}
}

func TestAPIKeysCreateJSON(t *testing.T) {
	h := newHarness(t)
	out, _, err := h.run(t, "api-keys", "create", "ci", "--workspace", "acme", "--json")
	require.NoError(t, err)
	var key api.APIKey
	decodeOne(t, out, &key)
	assert.Equal(t, api.APIKey{ID: "key1", Name: "ci", Workspace: "acme", Key: "pak_new_key", CreatedAt: t0}, key)
}

func TestAPIErrors(t *testing.T) {
	h := newHarness(t)
	for name, args := range map[string][]string{
		"show":   {"connections", "show", "nope"},
		"revoke": {"connections", "revoke", "nope"},
		"rotate": {"connections", "rotate-token", "nope", "--json"},
	} {
		t.Run(name, func(t *testing.T) {
			out, _, err := h.run(t, args...)
			var apiErr *api.Error
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, "CONNECTION_NOT_FOUND: no connection nope", err.Error())
			assert.Empty(t, out, "nothing on stdout when the command fails")
		})
	}
}

func TestAdminKeySources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	goodFile := write("good.key", "\n  "+adminTestKey+"\r\n")
	wrongFile := write("wrong.key", "pak_wrong")
	emptyFile := write("empty.key", " \n\t")
	bigFile := write("big.key", strings.Repeat("a", maxKeyFileSize+1))

	tests := map[string]struct {
		envKey string
		// args go after "connections list"; parentArgs between the two.
		args, parentArgs []string
		wantErr          string // substring; "" = success
	}{
		"env":                 {envKey: adminTestKey},
		"env with whitespace": {envKey: " " + adminTestKey + "\n"},
		"file, whitespace":    {args: []string{"--admin-key-file", goodFile}},
		"file on parent":      {parentArgs: []string{"--admin-key-file", goodFile}},
		"file wins over env":  {envKey: "pak_wrong", args: []string{"--admin-key-file", goodFile}},
		"wrong key from file": {envKey: adminTestKey, args: []string{"--admin-key-file", wrongFile}, wantErr: "the relay refused the API key from --admin-key-file " + wrongFile + " (unknown, wrong, revoked or expired): API_AUTH_REQUIRED: missing or wrong API key"},
		"wrong key from env":  {envKey: "pak_wrong", wantErr: "the relay refused the API key from $POSTERN_ADMIN_KEY (unknown, wrong, revoked or expired): API_AUTH_REQUIRED"},
		"neither":             {wantErr: "no admin key: pass --admin-key-file FILE or set POSTERN_ADMIN_KEY"},
		"empty file":          {args: []string{"--admin-key-file", emptyFile}, wantErr: "is empty"},
		"missing file":        {args: []string{"--admin-key-file", filepath.Join(dir, "nope")}, wantErr: "no such file"},
		"oversized file":      {args: []string{"--admin-key-file", bigFile}, wantErr: "not a key"},
		"key as flag refused": {envKey: adminTestKey, args: []string{"--admin-key", adminTestKey}, wantErr: "unknown flag: --admin-key"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			h.env[envAdminKey] = tc.envKey
			args := append(append(append([]string{"connections"}, tc.parentArgs...), "list"), tc.args...)
			out, _, err := h.run(t, args...)
			if tc.wantErr == "" {
				require.NoError(t, err)
				assert.Equal(t, "No connections.\n", out)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.NotContains(t, err.Error(), adminTestKey, "the key must never be echoed")
			assert.Empty(t, out)
		})
	}
}

func TestServerSources(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == envServer {
				return v
			}
			return ""
		}
	}
	tests := map[string]struct {
		flag, env string
		want      string
		wantErr   bool
	}{
		"default":      {want: "http://127.0.0.1:8080"},
		"env":          {env: "https://relay.example", want: "https://relay.example"},
		"flag":         {flag: "https://a.example:8443", env: "https://relay.example", want: "https://a.example:8443"},
		"no scheme":    {flag: "relay.example:8080", wantErr: true},
		"other scheme": {flag: "ftp://relay.example", wantErr: true},
		"no host":      {flag: "http://", wantErr: true},
		"bad env":      {env: "::", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := resolveServer(tc.flag, env(tc.env))
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestServerFlagIsUsed(t *testing.T) {
	h := newHarness(t)
	h.env[envServer] = "http://127.0.0.1:1" // nothing listens there
	out, _, err := h.run(t, "connections", "list", "--server", h.srv.URL)
	require.NoError(t, err)
	assert.Equal(t, "No connections.\n", out)

	_, _, err = h.run(t, "connections", "list")
	require.Error(t, err, "without --server the env's address is used")
	assert.Contains(t, err.Error(), "127.0.0.1:1")
}

func TestHumanOutputCleansControlCharacters(t *testing.T) {
	h := newHarness(t)
	_, _, err := h.run(t, "connections", "create", "evil\x1b[2J\tname")
	require.NoError(t, err)
	out, _, err := h.run(t, "connections", "list")
	require.NoError(t, err)
	assert.NotContains(t, out, "\x1b")
	assert.Contains(t, out, "evil?[2J?name")
	assert.Equal(t, 2, strings.Count(out, "\n"), "header and one row: %q", out)

	out, _, err = h.run(t, "connections", "list", "--json")
	require.NoError(t, err)
	var list api.ConnectionList
	decodeOne(t, out, &list)
	assert.Equal(t, "evil\x1b[2J\tname", list.Connections[0].Name, "--json keeps the exact value")
}

func TestUnexpectedServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "<html>gateway</html>", http.StatusBadGateway)
	}))
	defer srv.Close()
	e := adminEnv{getenv: func(k string) string {
		return map[string]string{envServer: srv.URL, envAdminKey: adminTestKey}[k]
	}}
	cmd := e.connectionsCmd()
	cmd.SetArgs([]string{"list"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	err := cmd.ExecuteContext(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "502 Bad Gateway")
	var apiErr *api.Error
	assert.False(t, errors.As(err, &apiErr))
}
