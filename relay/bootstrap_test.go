package relay

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/secret"
)

// readKeyFile checks that the admin key file is its owner's alone, and
// returns what it holds and the key in it.
func readKeyFile(t *testing.T, path string) (raw []byte, key string) {
	t.Helper()
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	raw, err = os.ReadFile(path)
	require.NoError(t, err)
	return raw, strings.TrimSpace(string(raw))
}

func TestBootstrapWritesAdminKeyOnce(t *testing.T) {
	t.Parallel()
	h := newBareHarness(t, secret.Verify)
	dir := t.TempDir()

	path, err := h.srv.Bootstrap(t.Context(), dir)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, AdminKeyFile), path)

	raw, key := readKeyFile(t, path)
	require.True(t, strings.HasPrefix(key, secret.APIKeyPrefix+"_"), "admin.key holds an API key")
	h.remember(key)

	// The key is an admin key: it may create connections and keys.
	decode[api.Connection](t, h.call(t, http.MethodPost, "/v1/connections", key, `{"name":"first"}`), http.StatusCreated)
	decode[api.APIKey](t, h.call(t, http.MethodPost, "/v1/api-keys", key, `{"name":"ws","workspace":"acme"}`), http.StatusCreated)

	// The log names the file, never the key.
	logs := h.logs.String()
	assert.Contains(t, logs, path)
	assert.NotContains(t, logs, secretPart(key))

	// A second run finds keys and leaves the file alone.
	again, err := h.srv.Bootstrap(t.Context(), dir)
	require.NoError(t, err)
	assert.Empty(t, again)
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, raw, after)
}

func TestBootstrapKeepsExistingStoreLocked(t *testing.T) {
	t.Parallel()
	h := newHarness(t) // the store already has the harness's admin key
	dir := t.TempDir()
	path, err := h.srv.Bootstrap(t.Context(), dir)
	require.NoError(t, err)
	assert.Empty(t, path)
	_, err = os.Stat(filepath.Join(dir, AdminKeyFile))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestBootstrapReportsUnwritableDir(t *testing.T) {
	t.Parallel()
	h := newBareHarness(t, secret.Verify)
	_, err := h.srv.Bootstrap(t.Context(), filepath.Join(t.TempDir(), "missing", "dir"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bootstrap admin key")
	n, err := h.srv.store.CountAPIKeys(t.Context())
	require.NoError(t, err)
	assert.Zero(t, n, "no key may exist that nobody can read")
}

func TestBootstrapTightensExistingFile(t *testing.T) {
	t.Parallel()
	h := newBareHarness(t, secret.Verify)
	dir := t.TempDir()
	path := filepath.Join(dir, AdminKeyFile)
	require.NoError(t, os.WriteFile(path, []byte("stale contents from an earlier install, much longer than any key\n"), 0o644))

	got, err := h.srv.Bootstrap(t.Context(), dir)
	require.NoError(t, err)
	require.Equal(t, path, got)
	raw, key := readKeyFile(t, path)
	h.remember(key)
	assert.NotContains(t, string(raw), "stale")
	decode[api.ConnectionList](t, h.call(t, http.MethodGet, "/v1/connections", key, nil), http.StatusOK)
}
