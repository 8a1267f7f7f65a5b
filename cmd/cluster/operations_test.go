package cluster

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
)

// cli runs postern-relay with args against node i's API with the admin
// key, and returns its output.
func (c *cluster) cli(i int, args ...string) (string, error) {
	keyFile := filepath.Join(c.t.TempDir(), "admin.key")
	require.NoError(c.t, os.WriteFile(keyFile, []byte(c.adminKey+"\n"), 0o600))
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	args = append(args, "--server", "http://"+c.nodes[i].api, "--admin-key-file", keyFile)
	out, err := exec.CommandContext(ctx, c.relayBin, args...).CombinedOutput()
	return string(out), err
}

// nodes list shows every node, its tunnels and which one answered.
func TestNodesList(t *testing.T) {
	c := newCluster(t, 3)
	target := testkit.EchoServer(t)
	conn := c.createConnection("gitlab")
	c.startAgent(conn.AgentToken, []string{target}, 2, 0, 1)
	c.waitTunnels(2, conn.ID, "node-a", "node-b")

	out, err := c.cli(1, "nodes", "list")
	require.NoError(t, err, out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	assert.Regexp(t, `^NODE\s+PEER\s+SESSIONS\s+DRAINING\s+LEASE AGE\s+STARTED`, lines[0])
	assert.Regexp(t, `^node-a\s+ws://`+c.nodes[0].peer+`\s+1\s+no\s+\d`, lines[1])
	assert.Regexp(t, `^node-b \(this node\)\s+ws://`+c.nodes[1].peer+`\s+1\s+no\s+\d`, lines[2])
	assert.Regexp(t, `^node-c\s+ws://`+c.nodes[2].peer+`\s+0\s+no\s+\d`, lines[3])

	c.stop(2)
	out, err = c.cli(0, "nodes", "list", "--json")
	require.NoError(t, err, out)
	assert.NotContains(t, out, "node-c", "a node that left is not listed")
}

// A relay on SQLite refuses the cluster flags with a reason and a fix.
func TestSQLiteRefusesClusterFlags(t *testing.T) {
	relayBin, _ := testkit.Binaries(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "cluster.key")
	require.NoError(t, os.WriteFile(key, []byte(strings.Repeat("k", 40)), 0o600))
	cmd := exec.Command(relayBin, "serve", "--data", dir, "--listen", testkit.FreeAddr(t), "--proxy-listen", testkit.FreeAddr(t),
		"--peer-listen", testkit.FreeAddr(t), "--peer-advertise", "ws://127.0.0.1:1", "--cluster-key-file", key)
	cmd.Env = append(os.Environ(), "POSTERN_DATABASE_URL=")
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "the relay must not start")
	assert.Contains(t, string(out), "share one PostgreSQL database")
	assert.Contains(t, string(out), "SQLite serves a single node")
}

// A node with another cluster key cannot open a peer link: the request
// it cannot forward is RELAY_UNAVAILABLE, never a wrong diagnosis, and the
// holder logs the refusal.
func TestWrongClusterKeyIsRefused(t *testing.T) {
	c := newClusterWith(t, 2, func(i int, nd *relayNode, _ string) {
		if i == 1 {
			other := filepath.Join(nd.dir, "other.key")
			require.NoError(t, os.WriteFile(other, []byte(strings.Repeat("x", 48)), 0o600))
			nd.extraFl = append(nd.extraFl, "--cluster-key-file", other)
		}
	})
	target := testkit.EchoServer(t)
	conn := c.createConnection("jira")
	c.startAgent(conn.AgentToken, []string{target}, 1, 0)
	c.waitTunnels(1, conn.ID, "node-a")

	status, reason := c.connectStatus(1, conn.ID, target)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, "RELAY_UNAVAILABLE", reason)
	testkit.WaitFor(t, 5*time.Second, "node A logs the refused peer link", func() bool {
		return strings.Contains(c.nodes[0].proc.Output(), "peer link refused: wrong cluster key")
	})
	assert.NotContains(t, c.nodes[0].proc.Output(), strings.Repeat("x", 48), "the presented key is never logged")
}
