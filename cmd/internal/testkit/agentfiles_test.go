package testkit

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/config"
)

// What WriteAgentConfig writes is a config the agent accepts, saying what
// the test asked for, with the token beside it where only its owner reads.
func TestWriteAgentConfig(t *testing.T) {
	for name, relays := range map[string][]string{
		"one relay":  {"ws://127.0.0.1:7001"},
		"two relays": {"ws://127.0.0.1:7001", "ws://127.0.0.1:7002"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := WriteAgentConfig(t, dir, AgentConfig{Relays: relays, Token: "pat_abcabcabcabcabca_czNjcmV0LS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0",
				StatusListen: "127.0.0.1:7070", Tunnels: 3, Allow: []string{"127.0.0.1:8080", "127.0.0.1:9090"},
				More: "agent_id: kit-agent\n"})
			assert.Equal(t, filepath.Join(dir, "agent.yaml"), path)
			cfg, err := config.Load(path, nil)
			require.NoError(t, err)
			var urls []string
			for _, u := range cfg.RelayURLs {
				urls = append(urls, u.String())
			}
			assert.Equal(t, relays, urls)
			assert.Equal(t, "127.0.0.1:7070", cfg.StatusListen)
			assert.Equal(t, 3, cfg.Tunnels)
			assert.Equal(t, "kit-agent", cfg.AgentID)
			require.Len(t, cfg.Allow, 1)
			assert.Equal(t, "127.0.0.1", cfg.Allow[0].IP)
			assert.Equal(t, []string{"8080", "9090"}, cfg.Allow[0].Ports)
			token, err := cfg.LoadToken(nil)
			require.NoError(t, err)
			assert.Equal(t, "pat_abcabcabcabcabca_czNjcmV0LS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0", token)
			fi, err := os.Stat(filepath.Join(dir, "agent.token"))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		})
	}
}

func TestAdminKey(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "admin.key"), []byte("pak_id_secret\n"), 0o600))
	assert.Equal(t, "pak_id_secret", AdminKey(t, dir))
}

func TestCredentialParts(t *testing.T) {
	assert.Equal(t, "s3cret_with_underscores", SecretOf("pat_id_s3cret_with_underscores"))
	assert.Equal(t, "not-a-credential", SecretOf("not-a-credential"))
	for token, want := range map[string]string{
		"pat_id_Abc": "pat_id_Bbc",
		"pat_id_xyz": "pat_id_Ayz",
		"pat_id_A_b": "pat_id_B_b",
	} {
		assert.Equal(t, want, WrongSecret(t, token), token)
	}
}
