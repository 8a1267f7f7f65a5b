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

	"github.com/postern/postern/cmd/internal/clusterkit"
	"github.com/postern/postern/cmd/internal/testkit"
)

// cli runs postern-relay with args against node i's API with the admin
// key, and returns its output.
func cli(c *clusterkit.Cluster, i int, args ...string) (string, error) {
	keyFile := filepath.Join(c.T.TempDir(), "admin.key")
	require.NoError(c.T, os.WriteFile(keyFile, []byte(c.AdminKey+"\n"), 0o600))
	ctx, cancel := context.WithTimeout(c.T.Context(), 10*time.Second)
	defer cancel()
	args = append(args, "--server", "http://"+c.Nodes[i].API, "--admin-key-file", keyFile)
	out, err := exec.CommandContext(ctx, c.RelayBin, args...).CombinedOutput()
	return string(out), err
}

// nodes list shows every node, its tunnels and which one answered.
func TestNodesList(t *testing.T) {
	c := clusterkit.New(t, 3)
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("gitlab")
	c.StartAgent(conn.AgentToken, []string{target}, 2, 0, 1)
	c.WaitTunnels(2, conn.ID, "node-a", "node-b")

	out, err := cli(c, 1, "nodes", "list")
	require.NoError(t, err, out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	assert.Regexp(t, `^NODE\s+PEER\s+SESSIONS\s+DRAINING\s+LEASE AGE\s+STARTED`, lines[0])
	assert.Regexp(t, `^node-a\s+ws://`+c.Nodes[0].Peer+`\s+1\s+no\s+\d`, lines[1])
	assert.Regexp(t, `^node-b \(this node\)\s+ws://`+c.Nodes[1].Peer+`\s+1\s+no\s+\d`, lines[2])
	assert.Regexp(t, `^node-c\s+ws://`+c.Nodes[2].Peer+`\s+0\s+no\s+\d`, lines[3])

	c.Stop(2)
	out, err = cli(c, 0, "nodes", "list", "--json")
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
	c := clusterkit.NewWith(t, 2, func(i int, nd *clusterkit.Node, _ string) {
		if i == 1 {
			other := filepath.Join(nd.Dir, "other.key")
			require.NoError(t, os.WriteFile(other, []byte(strings.Repeat("x", 48)), 0o600))
			nd.ExtraFlags = append(nd.ExtraFlags, "--cluster-key-file", other)
		}
	})
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("jira")
	c.StartAgent(conn.AgentToken, []string{target}, 1, 0)
	c.WaitTunnels(1, conn.ID, "node-a")

	status, reason := c.ConnectStatus(1, conn.ID, target)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, "RELAY_UNAVAILABLE", reason)
	testkit.WaitFor(t, 5*time.Second, "node A logs the refused peer link", func() bool {
		return strings.Contains(c.Nodes[0].Proc.Output(), "peer link refused: wrong cluster key")
	})
	assert.NotContains(t, c.Nodes[0].Proc.Output(), strings.Repeat("x", 48), "the presented key is never logged")
}
