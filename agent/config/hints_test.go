package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Common slips get a message that says how to write the value instead.
func TestHintsForCommonSlips(t *testing.T) {
	relay := "relay_url: wss://relay.postern.example"
	tests := map[string]struct {
		data []byte
		want string
	}{
		"relay url without scheme": {
			data: yml("relay_url: 127.0.0.1:8080"),
			want: `config.yaml:1: relay_url: "127.0.0.1:8080" has no scheme; write wss://127.0.0.1:8080 (or ws://127.0.0.1:8080 to a loopback relay, for testing)`,
		},
		"port range with a colon": {
			data: yml(relay, "allow:", "  - host: db.corp", "    ports: [9000:9001]"),
			want: `config.yaml:4: allow[0].ports[0]: "9000:9001" is not a port range; write "9000-9001" (with a dash, in quotes)`,
		},
		"host written as a URL": {
			data: yml(relay, "allow:", "  - host: https://gitlab.corp/group/repo", "    ports: [443]"),
			want: `config.yaml:3: allow[0]: host "https://gitlab.corp" is a URL; drop the scheme https:// (and any path): write host: "gitlab.corp"`,
		},
		"port error on the ports line": {
			data: yml(relay, "allow:", "  - host: db.corp", "", "    ports: [0]"),
			want: `config.yaml:5: allow[0]: ports[0] "0": bad rule: port is outside 1-65535`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := parse("config.yaml", "config.yaml", tt.data, noEnv, fixedHost("h"))
			require.Error(t, err)
			assert.Equal(t, []string{tt.want}, problemsOf(t, err))
		})
	}
}

func TestWarnings(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tok, []byte("pat_x_y"), 0o640))
	c, err := parse("config.yaml", "config.yaml", yml("relay_url: wss://r.example", "token_file: "+tok,
		"allow:", "  - host: localhost", "    ports: [80]"), noEnv, fixedHost("h"))
	require.NoError(t, err)
	assert.Equal(t, []string{
		`config.yaml:4: allow[0]: host "localhost" is a loopback name, and loopback is always blocked; to reach a service on the agent's own machine, use an ip rule such as ip: 127.0.0.1`,
		"token_file " + tok + " has mode 0640, so other users can read the agent token and the agent will refuse it; run: chmod 600 " + tok,
	}, c.Warnings())

	require.NoError(t, os.Chmod(tok, 0o600))
	c, err = parse("config.yaml", "config.yaml", yml("relay_url: wss://r.example", "token_file: "+tok,
		"allow:", "  - ip: 127.0.0.1", "    ports: [80]", "  - host: localhost", "    ports: [80]"), noEnv, fixedHost("h"))
	require.NoError(t, err)
	assert.Empty(t, c.Warnings(), "an ip rule for loopback opens it, and a private token file is fine")
}
