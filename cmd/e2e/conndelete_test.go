package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// TestConnectionDeleteAndSameNameThroughBinaries: with the real relay and
// CLI, a second connection of the same name in a workspace is created with
// a warning on stderr; a connection in use is not deleted, and the error
// names the command that revokes it; once revoked it is deleted, and then
// listed nowhere, shown as not found, and refused by the proxy as an
// unknown connection at once, although the proxy had just read its record.
func TestConnectionDeleteAndSameNameThroughBinaries(t *testing.T) {
	relayBin, _ := binaries(t)
	dir := t.TempDir()
	rp := startRelayProcess(t, relayBin, filepath.Join(dir, "relay"))
	env := append(os.Environ(), "POSTERN_SERVER="+rp.server, "POSTERN_ADMIN_KEY=")
	cli := func(args ...string) cliResult {
		t.Helper()
		return runToolEnv(t, env, relayBin, append(args, "--admin-key-file", filepath.Join(dir, "relay", "admin.key"))...)
	}
	first, second := createTwoOfAName(t, cli)

	res := cli("connections", "delete", first)
	assert.Equal(t, 1, res.code)
	assert.Equal(t, "error: CONNECTION_NOT_REVOKED: revoke the connection first: postern-relay connections revoke "+first+"\n", res.stderr)
	assert.Empty(t, res.stdout)

	res = cli("api-keys", "create", "product", "--workspace", "acme", "--json")
	require.Zero(t, res.code, res.stderr)
	var key api.APIKey
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &key))
	res = cli("connections", "revoke", first)
	require.Zero(t, res.code, res.stderr)
	// The proxy reads the revoked record now, and would keep it a while.
	assertRefused(t, dialConnect(t, rp.proxyAddr, first, key.Key, "gitlab.acme.example:443"), http.StatusForbidden, protocol.ConnectionRevoked)

	res = cli("connections", "delete", first)
	require.Zero(t, res.code, res.stderr)
	assert.Equal(t, "Deleted connection "+first+" (acme-gitlab).\n", res.stdout)
	assert.Empty(t, res.stderr)
	assertGone(t, cli, first, second)

	gone := dialConnect(t, rp.proxyAddr, first, key.Key, "gitlab.acme.example:443")
	never := dialConnect(t, rp.proxyAddr, "conn_0000000000000000", key.Key, "gitlab.acme.example:443")
	assertRefused(t, gone, http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
	gone.body.RequestID, never.body.RequestID = "", ""
	assert.Equal(t, never.body, gone.body, "a deleted connection looks like one that never was")
}

// createTwoOfAName creates two connections named acme-gitlab in workspace
// acme, the first with --json, and checks that only the second warns, on
// stderr; it returns their ids.
func createTwoOfAName(t *testing.T, cli func(args ...string) cliResult) (first, second string) {
	t.Helper()
	res := cli("connections", "create", "acme-gitlab", "--workspace", "acme", "--json")
	require.Zero(t, res.code, res.stderr)
	assert.Empty(t, res.stderr, "the first of a name warns of nothing")
	var c api.Connection
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &c))

	res = cli("connections", "create", "acme-gitlab", "--workspace", "acme")
	require.Zero(t, res.code, res.stderr)
	assert.Equal(t, `warning: a connection named "acme-gitlab" already exists in workspace acme (id `+c.ID+
		`); names are labels, the id is what the product uses`+"\n", res.stderr)
	m := regexp.MustCompile(`(?m)^id:\s+(conn_\w+)$`).FindStringSubmatch(res.stdout)
	require.NotNil(t, m, "stdout keeps the connection and its token:\n%s", res.stdout)
	assert.Regexp(t, `(?m)^agent token: pat_\S+$`, res.stdout)
	assert.NotContains(t, res.stdout, "warning")
	return c.ID, m[1]
}

// assertGone checks that the CLI lists connection id nowhere (but still
// lists kept) and shows and deletes it as not found.
func assertGone(t *testing.T, cli func(args ...string) cliResult, id, kept string) {
	t.Helper()
	res := cli("connections", "list")
	require.Zero(t, res.code, res.stderr)
	assert.NotContains(t, res.stdout, id)
	assert.Contains(t, res.stdout, kept)
	notFound := `error: CONNECTION_NOT_FOUND: no connection "` + id + `"` + "\n"
	for _, cmd := range []string{"show", "delete"} {
		res = cli("connections", cmd, id)
		assert.Equal(t, 1, res.code, cmd)
		assert.Equal(t, notFound, res.stderr, cmd)
		assert.Empty(t, res.stdout, cmd)
	}
}
