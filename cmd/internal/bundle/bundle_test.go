package bundle

import (
	"archive/zip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Read opens a bundle and returns its files by name.
func read(t *testing.T, path string) map[string]string {
	t.Helper()
	zr, err := zip.OpenReader(path)
	require.NoError(t, err)
	defer zr.Close()
	out := map[string]string{}
	for _, f := range zr.File {
		rc, err := f.Open()
		require.NoError(t, err)
		data, err := io.ReadAll(rc)
		require.NoError(t, err)
		rc.Close()
		out[f.Name] = string(data)
	}
	return out
}

func TestBundleScrubsSecretsAndListsItsFiles(t *testing.T) {
	const token = "pat_abcdefghijklmnop_0123456789abcdefghijABCDEFGHIJ-_xyzXYZ0123"
	const other = "pak_qrstuvwxyz234567_ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"
	b := New("postern-test", "1.0")
	b.Secret("hunter2-canary")
	b.Secret("abc") // too short to mean anything
	b.Add("config.yaml", []byte("password: hunter2-canary\nname: abc\n"))
	b.Add("logs.txt", []byte("token "+token+" and key "+other+"\n"))
	b.AddJSON("status.json", map[string]string{"note": "hunter2-canary inside"})
	b.Missing("heap.pprof", errors.New("agent not running"))
	path := filepath.Join(t.TempDir(), "bundle.zip")
	m, err := b.Write(path)
	require.NoError(t, err)

	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	files := read(t, path)
	assert.Len(t, files, 4)
	for name, data := range files {
		assert.NotContains(t, data, "hunter2-canary", name)
		assert.NotContains(t, data, "0123456789abcdefghij", name)
		assert.NotContains(t, data, "ZZZZZZZZZZ", name)
	}
	assert.Contains(t, files["config.yaml"], "name: abc")
	assert.Contains(t, files["logs.txt"], "pat_abcdefghijklmnop_[REDACTED]", "the id stays")
	assert.Contains(t, files["logs.txt"], "pak_qrstuvwxyz234567_[REDACTED]")

	var got Manifest
	require.NoError(t, json.Unmarshal([]byte(files["manifest.json"]), &got))
	assert.Equal(t, "postern-test", got.Program)
	assert.Equal(t, map[string]string{"heap.pprof": "agent not running"}, got.Missing)
	var names []string
	for _, f := range got.Files {
		names = append(names, f.Name)
		assert.Equal(t, len(files[f.Name]), f.Bytes)
		assert.Len(t, f.SHA256, 64)
	}
	assert.Equal(t, []string{"config.yaml", "logs.txt", "status.json"}, names)
	assert.Equal(t, m.Files, got.Files)
	assert.False(t, strings.Contains(files["manifest.json"], "hunter2"))
}

func TestRedactYAML(t *testing.T) {
	in := `# relay config
database: postgres://postern:db-canary-pass@db.internal:5432/postern
listen: :8080
webhooks:
  - url: https://hooks.example/x
    secret_file: /etc/postern/hook.secret
    secret: inline-canary
egress_proxy: http://proxyuser:proxy-canary@proxy:3128
token_file: /etc/postern/agent.token
`
	out, err := RedactYAML([]byte(in))
	require.NoError(t, err)
	s := string(out)
	for _, canary := range []string{"db-canary-pass", "inline-canary", "proxy-canary"} {
		assert.NotContains(t, s, canary)
	}
	for _, kept := range []string{"# relay config", "listen: :8080", "/etc/postern/hook.secret", "/etc/postern/agent.token",
		"postgres://postern:xxxxx@db.internal:5432/postern", "proxyuser"} {
		assert.Contains(t, s, kept)
	}
	_, err = RedactYAML([]byte("a: [unclosed"))
	assert.Error(t, err)
	assert.Equal(t, "db-canary-pass", URLPassword("postgres://postern:db-canary-pass@db/x"))
}

func TestTailLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	var b strings.Builder
	for i := range 1500 {
		b.WriteString(strings.Repeat("x", i%7) + "\n")
	}
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	got, err := TailLines(path, 1000)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
	assert.Len(t, lines, 1000)
	assert.Equal(t, strings.Repeat("x", 1499%7), lines[999])
	short, err := TailLines(path, 5000)
	require.NoError(t, err)
	assert.Equal(t, b.String(), string(short))
	_, err = TailLines(filepath.Join(t.TempDir(), "none"), 10)
	assert.Error(t, err)
}
