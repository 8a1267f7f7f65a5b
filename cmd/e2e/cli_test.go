package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
)

// TestCLIMistypedCommandIsAnError: a word that names no command, at any
// level of either binary, exits 2 with the nearest command suggested; a
// group alone still prints its help and exits 0.
func TestCLIMistypedCommandIsAnError(t *testing.T) {
	relayBin, agentBin := binaries(t)
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{relayBin, []string{"connections", "lst"},
			`error: unknown command "lst" for "postern-relay connections"; did you mean list?` + "\n" +
				"Run 'postern-relay connections --help' for its commands.\n"},
		{relayBin, []string{"conections", "list"},
			`error: unknown command "conections" for "postern-relay"; did you mean connections?` + "\n" +
				"Run 'postern-relay --help' for its commands.\n"},
		{relayBin, []string{"api-keys", "xyzzy"},
			`error: unknown command "xyzzy" for "postern-relay api-keys"` + "\n" +
				"Run 'postern-relay api-keys --help' for its commands.\n"},
		{agentBin, []string{"stauts"},
			`error: unknown command "stauts" for "postern-agent"; did you mean start or status?` + "\n" +
				"Run 'postern-agent --help' for its commands.\n"},
	} {
		res := runToolEnv(t, os.Environ(), tc.bin, tc.args...)
		assert.Equal(t, 2, res.code, "%v", tc.args)
		assert.Equal(t, tc.want, res.stderr, "%v", tc.args)
		assert.Empty(t, res.stdout, "%v: no help on stdout for a typo", tc.args)
	}
	res := runToolEnv(t, os.Environ(), relayBin, "connections")
	assert.Zero(t, res.code, "a group alone shows its help")
	assert.Contains(t, res.stdout, "rotate-token")
}

// TestCLIVersionOfAPlainBuild: a plain `go build` of a checkout (no
// -ldflags; -buildvcs=true because this machine's GOFLAGS may turn VCS
// stamping off) prints the version and revision the toolchain recorded,
// not "dev (commit none)".
func TestCLIVersionOfAPlainBuild(t *testing.T) {
	binaries(t) // -short skips, as for every binary test
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("git rev-parse HEAD: %v: a build outside a checkout records no VCS revision", err)
	}
	rev := strings.TrimSpace(string(head))[:12]
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	require.NoError(t, err)
	if fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git")); err != nil || !fi.IsDir() {
		t.Skip("this checkout is a git worktree (.git is a file), where the Go toolchain records no VCS revision")
	}
	bin := filepath.Join(t.TempDir(), "postern-agent")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "github.com/postern/postern/cmd/postern-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)
	version := string(runCLI(t, nil, bin, "version"))
	assert.NotContains(t, version, "dev (commit none")
	assert.Regexp(t, `^postern-agent v\S+ \(commit `+rev+`(-dirty)?, built 20\d\d-\d\d-\d\dT`, version)
}

// TestCLITokenFileCAFileAndEventIDs: against a relay serving TLS from a
// private CA, the admin CLI needs --ca-file; connections create and
// rotate-token write the agent token to a 0600 --token-file (never over an
// existing one without --force) that an agent runs with; events shows
// each event's id.
func TestCLITokenFileCAFileAndEventIDs(t *testing.T) {
	relayBin, agentBin := binaries(t)
	dir := t.TempDir()
	certFile, keyFile, _ := testkit.SelfSignedCert(t, dir)
	apiAddr := testkit.FreeAddr(t)
	relayProc := start(t, relayBin, "serve", "--data", filepath.Join(dir, "relay"),
		"--listen", apiAddr, "--proxy-listen", testkit.FreeAddr(t), "--tls-cert", certFile, "--tls-key", keyFile)
	server := "https://" + apiAddr
	env := []string{"POSTERN_SERVER=" + server, "POSTERN_ADMIN_KEY="}
	admin := []string{"--admin-key-file", filepath.Join(dir, "relay", "admin.key")}
	testkit.WaitFor(t, 20*time.Second, "relay up over TLS", func() bool {
		require.False(t, relayProc.Exited(), relayProc.Output())
		_, err := os.Stat(filepath.Join(dir, "relay", "admin.key"))
		return err == nil && runToolEnv(t, append(os.Environ(), env...), relayBin,
			append([]string{"connections", "list", "--ca-file", certFile}, admin...)...).code == 0
	})

	untrusted := runToolEnv(t, append(os.Environ(), env...), relayBin, append([]string{"connections", "list"}, admin...)...)
	assert.Equal(t, 1, untrusted.code)
	assert.Contains(t, untrusted.stderr, "certificate signed by unknown authority")
	admin = append(admin, "--ca-file", certFile)

	tokenPath := filepath.Join(dir, "agent", "agent.token")
	require.NoError(t, os.Mkdir(filepath.Dir(tokenPath), 0o700))
	out := string(runCLI(t, env, relayBin, append([]string{"connections", "create", "acme", "--token-file", tokenPath}, admin...)...))
	assert.Contains(t, out, "agent token: written to "+tokenPath+" (mode 0600)\n")
	assert.Contains(t, out, "The token belongs in the agent's token_file: set `token_file: "+tokenPath+"` in agent.yaml")
	token := readToken(t, tokenPath)
	assert.NotContains(t, out, testkit.SecretOf(token), "the token is in the file, not on the terminal")

	again := runToolEnv(t, append(os.Environ(), env...), relayBin, append([]string{"connections", "create", "acme2", "--token-file", tokenPath}, admin...)...)
	assert.Equal(t, 1, again.code)
	assert.Equal(t, "error: --token-file "+tokenPath+" exists; pass --force to replace it\n", again.stderr)
	assert.Equal(t, token, readToken(t, tokenPath), "the existing file is untouched")
	var list api.ConnectionList
	require.NoError(t, json.Unmarshal(runCLI(t, env, relayBin, append([]string{"connections", "list", "--json"}, admin...)...), &list))
	require.Len(t, list.Connections, 1, "a refused --token-file issues no token")
	connID := list.Connections[0].ID

	events := start(t, relayBin, append([]string{"events", "--server", server}, admin...)...)
	out = string(runCLI(t, env, relayBin, append([]string{"connections", "rotate-token", connID, "--token-file", tokenPath, "--force"}, admin...)...))
	assert.Regexp(t, `agent token:\s+written to `+regexp.QuoteMeta(tokenPath)+` \(mode 0600\)\n`, out)
	assert.Contains(t, out, "Tokens issued before it stop working at ", "the overlap is still said")
	rotated := readToken(t, tokenPath)
	assert.NotEqual(t, token, rotated)

	// The test kit writes a config with a token file beside it; this agent
	// reads the one --token-file wrote instead.
	cfg := testkit.WriteAgentConfig(t, t.TempDir(), testkit.AgentConfig{Relays: []string{"wss://" + apiAddr},
		StatusListen: testkit.FreeAddr(t), Allow: []string{"127.0.0.1:9"}, More: "ca_file: " + certFile + "\n"})
	cfgText, err := os.ReadFile(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfg, []byte(strings.ReplaceAll(string(cfgText), "token_file: agent.token", "token_file: "+tokenPath)), 0o600))
	start(t, agentBin, "run", "--config", cfg)
	testkit.WaitFor(t, 20*time.Second, "agent connected with the rotated token from --token-file", func() bool {
		res := runToolEnv(t, append(os.Environ(), env...), relayBin, append([]string{"connections", "status", connID}, admin...)...)
		return strings.Contains(res.stdout, "connected") && !strings.Contains(res.stdout, "never_connected")
	})
	testkit.WaitFor(t, 10*time.Second, "events shows the tunnel event with its id", func() bool {
		return strings.Contains(events.Output(), connID) && strings.Contains(events.Output(), "-> connected  [event ")
	})
}

// readToken reads a token file and checks it is private.
func readToken(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "token file mode")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	token := strings.TrimSuffix(string(data), "\n")
	require.True(t, strings.HasPrefix(token, "pat_"), "one token, one line: %q", data)
	return token
}
