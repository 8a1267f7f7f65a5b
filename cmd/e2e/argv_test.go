package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
)

// A database password on the command line is readable by every local
// user: the relay says so at start, without printing it. The same URL from
// POSTERN_DATABASE_URL or the config file draws no warning.
func TestDatabasePasswordInArgvWarns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries")
	}
	relayBin, _ := testkit.Binaries(t)
	const pass = "argv-canary-pw"
	// Nothing listens on port 1: the relay warns, fails to open the store
	// and exits.
	dbURL := "postgres://postern:" + pass + "@127.0.0.1:1/relay?sslmode=disable&connect_timeout=2"
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("database: "+dbURL+"\n"), 0o600))
	const warning = "--database carries a password"

	tests := map[string]struct {
		args []string
		env  string
		warn bool
	}{
		"flag with password":       {args: []string{"--database", dbURL}, warn: true},
		"flag with password param": {args: []string{"--database", "postgres://postern@127.0.0.1:1/relay?connect_timeout=2&password=" + pass}, warn: true},
		"flag without password":    {args: []string{"--database", "postgres://postern@127.0.0.1:1/relay?sslmode=disable&connect_timeout=2"}},
		"environment":              {env: dbURL},
		"config file":              {args: []string{"--config", cfgFile}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(relayBin, append([]string{"serve", "--data", filepath.Join(dir, name), "--listen", "127.0.0.1:0",
				"--proxy-listen", "127.0.0.1:0"}, tc.args...)...)
			cmd.Env = append(os.Environ(), "POSTERN_DATABASE_URL="+tc.env)
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "no database there: the relay exits\n%s", out)
			assert.Equal(t, tc.warn, strings.Contains(string(out), warning), "output:\n%s", out)
			assert.NotContains(t, string(out), pass, "the password is never printed")
		})
	}
}
