package e2e

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// readBundle opens a support bundle, checks that it holds exactly the
// files named (manifest.json and every file the manifest lists) and that
// no canary appears in any of them, gzip-compressed profiles included.
func readBundle(t *testing.T, path string, want []string, canaries ...string) map[string]string {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "a bundle is private")
	zr, err := zip.OpenReader(path)
	require.NoError(t, err)
	defer zr.Close()
	files := map[string]string{}
	var names []string
	for _, f := range zr.File {
		rc, err := f.Open()
		require.NoError(t, err)
		data, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		if gz, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
			if plain, err := io.ReadAll(gz); err == nil {
				data = append(data, plain...) // look inside a profile too
			}
		}
		files[f.Name] = string(data)
		names = append(names, f.Name)
	}
	sort.Strings(names)
	sort.Strings(want)
	assert.Equal(t, want, names, "the bundle's files; manifest: %s", files["manifest.json"])
	for name, data := range files {
		for _, c := range canaries {
			require.NotEmpty(t, c)
			assert.NotContains(t, data, c, "a secret in %s of the bundle", name)
		}
	}
	var m struct {
		Files []struct{ Name string } `json:"files"`
	}
	require.NoError(t, json.Unmarshal([]byte(files["manifest.json"]), &m))
	assert.Len(t, m.Files, len(want)-1, "the manifest lists every other file")
	return files
}

// TestRelayDiagBundle: postern-relay diag takes from a running node what
// support needs, and no secret: not the admin key, an API key, an agent
// token or a webhook's secret.
func TestRelayDiagBundle(t *testing.T) {
	relayBin, _ := binaries(t)
	dir := t.TempDir()
	const hookSecret = "whsec-canary-0123456789abcdef"
	secretFile := filepath.Join(dir, "hook.secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(hookSecret+"\n"), 0o600))
	apiAddr := testkit.FreeAddr(t)
	cfgFile := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(
		"listen: %s\nproxy_listen: %s\ndata: %s\nwebhooks:\n  - url: http://127.0.0.1:9/hook\n    secret_file: %s\n",
		apiAddr, testkit.FreeAddr(t), filepath.Join(dir, "data"), secretFile)), 0o600))
	server := "http://" + apiAddr
	serveRelay(t, relayBin, server, "--config", cfgFile)
	keyFile := filepath.Join(dir, "data", "admin.key")
	adminKey := testkit.AdminKey(t, filepath.Join(dir, "data"))
	c := client.New(server, adminKey, nil)
	conn, err := c.CreateConnection(t.Context(), "acme-gitlab", "acme")
	require.NoError(t, err)
	key, err := c.CreateAPIKey(t.Context(), api.CreateAPIKeyRequest{Name: "product", Workspace: "acme"})
	require.NoError(t, err)
	_, err = c.RotateToken(t.Context(), conn.ID, api.RotateTokenRequest{})
	require.NoError(t, err)

	out := filepath.Join(dir, "relay-diag.zip")
	listing := runCLI(t, []string{"POSTERN_SERVER=" + server}, relayBin, "diag", "--out", out, "--config", cfgFile, "--admin-key-file", keyFile)
	assert.Contains(t, string(listing), "Support bundle written to "+out)
	files := readBundle(t, out, []string{"manifest.json", "version.txt", "relay.yaml", "doctor.txt", "node.json", "relay.log",
		"audit.log", "goroutine.txt", "heap.pprof", "metrics.txt", "status.json"},
		testkit.SecretOf(adminKey), testkit.SecretOf(key.Key), testkit.SecretOf(conn.AgentToken), hookSecret)

	assert.Contains(t, files["relay.yaml"], secretFile, "the config, with paths")
	assert.Contains(t, files["doctor.txt"], "PASS /readyz")
	var info api.DiagInfo
	require.NoError(t, json.Unmarshal([]byte(files["node.json"]), &info))
	assert.Equal(t, api.Redacted, info.Config["webhooks"].([]any)[0].(map[string]any)["secret"])
	assert.Contains(t, files["relay.log"], "connection created")
	assert.Contains(t, files["audit.log"], "agent token rotated", "admins' actions")
	assert.Contains(t, files["audit.log"], "by_key=")
	assert.Contains(t, files["goroutine.txt"], "goroutine ", "the running node's stacks")
	assert.Contains(t, files["status.json"], conn.ID)
	assert.Contains(t, files["status.json"], "never_connected")
	assert.Contains(t, files["metrics.txt"], "postern_relay_tunnels")

	// Without an admin key the node's parts are not given.
	ws := runCLIFails(t, []string{"POSTERN_SERVER=" + server, "POSTERN_ADMIN_KEY=" + key.Key}, relayBin, "diag", "--out", filepath.Join(dir, "ws.zip"))
	assert.Contains(t, ws, "FORBIDDEN")
}

// runCLIFails runs a command that must fail and returns everything it
// printed.
func runCLIFails(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	res := runToolEnv(t, append(os.Environ(), env...), bin, args...)
	out := res.stdout + res.stderr
	require.NotZero(t, res.code, "%s %v succeeded: %s", filepath.Base(bin), args, out)
	return out
}

// checkAgentBundle runs postern-agent diag against a running agent and
// checks what the bundle holds: the running agent's status, logs and
// profiles, its config and doctor's checks, its audit lines with target
// in them, and none of the canaries.
func checkAgentBundle(t *testing.T, agentBin, cfgFile, target string, canaries ...string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "agent-diag.zip")
	listing := runCLI(t, nil, agentBin, "diag", "--config", cfgFile, "--out", out)
	assert.Contains(t, string(listing), "Attach it to your support request.")
	files := readBundle(t, out, []string{"manifest.json", "version.txt", "agent.yaml", "config.txt", "environment.txt",
		"status.json", "agent.log", "goroutine.txt", "heap.pprof", "doctor.txt", "doctor.json", "audit.jsonl"}, canaries...)
	assert.Contains(t, files["agent.yaml"], "egress_proxy: http://alice:xxxxx@", "the config, its password replaced")
	assert.Contains(t, files["status.json"], `"tunnels_up": 2`)
	assert.Contains(t, files["agent.log"], "agent starting", "the running agent's own log lines")
	assert.Contains(t, files["goroutine.txt"], "goroutine ")
	assert.Contains(t, files["audit.jsonl"], target)
	assert.Contains(t, files["doctor.txt"], "PASS")
}
