package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// validate names a token file that other users can read and says how to fix it.
func TestValidateWarnsAboutReadableTokenFile(t *testing.T) {
	t.Setenv("POSTERN_AGENT_TOKEN", "")
	require.NoError(t, os.Unsetenv("POSTERN_AGENT_TOKEN"))
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tok, []byte("pat_x_y\n"), 0o644))
	cfg := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("relay_url: wss://relay.example\ntoken_file: token\nagent_id: a\nallow:\n  - cidr: 10.0.0.0/8\n    ports: [443]\n"), 0o600))
	cmd := newValidateCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"--config", cfg})
	require.NoError(t, cmd.ExecuteContext(context.Background()))
	assert.Contains(t, out.String(), "warning: token_file "+tok+" has mode 0644, so other users can read the agent token and the agent will refuse it; run: chmod 600 "+tok+"\n")
}
