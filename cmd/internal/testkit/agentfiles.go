package testkit

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// AgentConfig is an agent installation as the tests write it to disk: the
// config file and, beside it, the token file it names.
type AgentConfig struct {
	// Relays are the relay URLs the agent dials (ws://host:port), in
	// order. One is written as relay_url's plain value, more as a list.
	Relays []string
	// Token is written to agent.token, mode 0600, with a final newline.
	Token string
	// StatusListen is the agent's status endpoint; "" takes a free
	// loopback port, so that test agents never contend for the default
	// address (a taken status_listen stops postern-agent run).
	StatusListen string
	// Tunnels is how many tunnels the agent keeps; 0 leaves its default.
	Tunnels int
	// Allow are loopback targets (host:port) the allowlist admits: one
	// rule for 127.0.0.1 on their ports.
	Allow []string
	// More is further YAML, whole lines, appended as it is.
	More string
}

// WriteAgentConfig writes c into dir as agent.yaml and agent.token and
// returns the config file's path, for `postern-agent ... --config`.
func WriteAgentConfig(tb testing.TB, dir string, c AgentConfig) string {
	tb.Helper()
	require.NoError(tb, os.WriteFile(filepath.Join(dir, "agent.token"), []byte(c.Token+"\n"), 0o600))
	var b strings.Builder
	switch len(c.Relays) {
	case 0:
	case 1:
		fmt.Fprintf(&b, "relay_url: %s\n", c.Relays[0])
	default:
		quoted := make([]string, len(c.Relays))
		for i, u := range c.Relays {
			quoted[i] = fmt.Sprintf("%q", u)
		}
		fmt.Fprintf(&b, "relay_url: [%s]\n", strings.Join(quoted, ", "))
	}
	b.WriteString("token_file: agent.token\n")
	if c.StatusListen == "" {
		c.StatusListen = FreeAddr(tb)
	}
	fmt.Fprintf(&b, "status_listen: %s\n", c.StatusListen)
	if c.Tunnels != 0 {
		fmt.Fprintf(&b, "tunnels: %d\n", c.Tunnels)
	}
	if len(c.Allow) > 0 {
		ports := make([]string, len(c.Allow))
		for i, target := range c.Allow {
			_, port, err := net.SplitHostPort(target)
			require.NoError(tb, err, "allowed target %q", target)
			ports[i] = port
		}
		fmt.Fprintf(&b, "allow:\n  - ip: 127.0.0.1\n    ports: [%s]\n", strings.Join(ports, ", "))
	}
	b.WriteString(c.More)
	path := filepath.Join(dir, "agent.yaml")
	require.NoError(tb, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

// AdminKey is the admin key a relay bootstrapped into its data directory
// (admin.key); a relay that wrote none fails the test.
func AdminKey(tb testing.TB, dataDir string) string {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(dataDir, "admin.key"))
	require.NoError(tb, err, "the relay bootstraps an admin key in its data directory")
	return strings.TrimSpace(string(raw))
}
