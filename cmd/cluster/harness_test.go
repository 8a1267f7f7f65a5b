package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/faultlink"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m).Run()) }

// urlEnv names the PostgreSQL server the tests create their databases on.
const urlEnv = "POSTERN_TEST_POSTGRES_URL"

// heartbeat is the nodes' Health period; presence leases last three.
const heartbeat = 500 * time.Millisecond

// freshDatabase creates a database for one test and drops it when the test
// ends, after every process that used it.
func freshDatabase(t *testing.T) string {
	t.Helper()
	raw := os.Getenv(urlEnv)
	if raw == "" {
		t.Skipf("PostgreSQL not configured: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", urlEnv)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, raw)
	if err != nil {
		t.Skipf("PostgreSQL at %s does not answer: %v", urlEnv, err)
	}
	defer admin.Close(context.Background())
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "postern_cluster_" + hex.EncodeToString(b)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, raw); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(ctx)
		}
	})
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}

// relayNode is one relay process of the cluster and its addresses.
type relayNode struct {
	id                string
	api, proxy, peer  string
	dir               string
	proc              *testkit.Process
	extraEnv, extraFl []string
	extraYAML         string          // more relay.yaml
	link              *faultlink.Link // between the node and PostgreSQL, when a test puts one there
}

// cluster is n relay nodes on one fresh database.
type cluster struct {
	t        *testing.T
	db       string
	key      string
	relayBin string
	agentBin string
	nodes    []*relayNode
	adminKey string
}

func newCluster(t *testing.T, n int) *cluster { return newClusterWith(t, n, nil) }

// newClusterWith is newCluster with configure called on each node before
// it starts, given the database URL.
func newClusterWith(t *testing.T, n int, configure func(i int, nd *relayNode, db string)) *cluster {
	t.Helper()
	c := &cluster{t: t, db: freshDatabase(t)}
	c.relayBin, c.agentBin = testkit.Binaries(t)
	dir := t.TempDir()
	c.key = filepath.Join(dir, "cluster.key")
	require.NoError(t, os.WriteFile(c.key, []byte(strings.Repeat("k3y", 16)+"\n"), 0o600))
	for i := range n {
		nd := &relayNode{id: fmt.Sprintf("node-%c", 'a'+i), dir: filepath.Join(dir, fmt.Sprint(i)),
			api: testkit.FreeAddr(t), proxy: testkit.FreeAddr(t), peer: testkit.FreeAddr(t)}
		require.NoError(t, os.MkdirAll(nd.dir, 0o700))
		if configure != nil {
			configure(i, nd, c.db)
		}
		c.nodes = append(c.nodes, nd)
	}
	for i := range c.nodes {
		c.start(i)
	}
	raw, err := os.ReadFile(filepath.Join(c.nodes[0].dir, "admin.key"))
	require.NoError(t, err, "the first node bootstraps the admin key")
	c.adminKey = strings.TrimSpace(string(raw))
	return c
}

// start starts node i and waits until it is ready.
func (c *cluster) start(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	cfg := filepath.Join(nd.dir, "relay.yaml")
	require.NoError(c.t, os.WriteFile(cfg, []byte(fmt.Sprintf(
		"heartbeat_interval: %s\ndrain_timeout: 10s\n%s", heartbeat, nd.extraYAML)), 0o600))
	args := append([]string{"serve", "--config", cfg, "--data", nd.dir, "--node-id", nd.id,
		"--listen", nd.api, "--proxy-listen", nd.proxy, "--peer-listen", nd.peer,
		"--peer-advertise", "ws://" + nd.peer, "--cluster-key-file", c.key, "--log-level", "debug"}, nd.extraFl...)
	cmd := exec.Command(c.relayBin, args...)
	cmd.Env = append(os.Environ(), append([]string{"POSTERN_DATABASE_URL=" + c.db}, nd.extraEnv...)...)
	nd.proc = testkit.StartCmd(c.t, nd.id, cmd)
	testkit.WaitFor(c.t, 15*time.Second, nd.id+" ready", func() bool {
		return testkit.GetOK(http.DefaultClient, "http://"+nd.api+"/readyz")
	})
}

// stop stops node i gracefully (SIGTERM) and waits for it to exit.
func (c *cluster) stop(i int) {
	c.t.Helper()
	require.NoError(c.t, c.nodes[i].proc.Stop(30*time.Second), c.nodes[i].id)
}

// kill ends node i at once (SIGKILL), as a crash would.
func (c *cluster) kill(i int) {
	c.t.Helper()
	c.nodes[i].proc.Kill()
}

// client is an API client on node i.
func (c *cluster) client(i int) *client.Client {
	return client.New("http://"+c.nodes[i].api, c.adminKey, nil)
}

// createConnection creates a connection through node 0 and returns it
// with its agent token.
func (c *cluster) createConnection(name string) api.Connection {
	c.t.Helper()
	conn, err := c.client(0).CreateConnection(c.t.Context(), name, "")
	require.NoError(c.t, err)
	return conn
}

// startAgent runs an agent with token that allows the loopback targets
// given, dialling the relay URLs of the nodes given, in that order.
func (c *cluster) startAgent(token string, targets []string, tunnels int, nodes ...int) *testkit.Process {
	c.t.Helper()
	dir := c.t.TempDir()
	tokenFile := filepath.Join(dir, "agent.token")
	require.NoError(c.t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
	var ports []string
	for _, target := range targets {
		_, port, err := net.SplitHostPort(target)
		require.NoError(c.t, err)
		ports = append(ports, port)
	}
	var urls []string
	for _, i := range nodes {
		urls = append(urls, "    - ws://"+c.nodes[i].api)
	}
	yaml := fmt.Sprintf("relay_url:\n%s\ntoken_file: %s\ntunnels: %d\nstatus_listen: %s\nallow:\n  - ip: 127.0.0.1\n    ports: [%s]\n",
		strings.Join(urls, "\n"), tokenFile, tunnels, testkit.FreeAddr(c.t), strings.Join(ports, ", "))
	cfg := filepath.Join(dir, "agent.yaml")
	require.NoError(c.t, os.WriteFile(cfg, []byte(yaml), 0o600))
	return testkit.Start(c.t, "agent", c.agentBin, "run", "--config", cfg)
}

// status reads a connection's status from node i.
func (c *cluster) status(i int, connID string) (api.Status, error) {
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
	defer cancel()
	return c.client(i).Status(ctx, connID, "")
}

// tunnelNodes lists the node of every tunnel the status shows.
func tunnelNodes(st api.Status) []string {
	var out []string
	for _, a := range st.Agents {
		for _, s := range a.Sessions {
			out = append(out, s.RelayNode)
		}
	}
	return out
}

// roundTrip opens a CONNECT to the echo target through node i's proxy and
// runs one exchange of n bytes.
func (c *cluster) roundTrip(i int, connID, target string, n int64) error {
	conn, err := c.open(i, connID, target)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := testkit.Exchange(conn, n); err != nil {
		return fmt.Errorf("through %s: %w", c.nodes[i].id, err)
	}
	return nil
}

// open asks node i's proxy for a tunnel to target; an answer other than
// 200 is an error naming its reason.
func (c *cluster) open(i int, connID, target string) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", c.nodes[i].proxy, 2*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	resp, br, err := testkit.Connect(conn, connID, c.adminKey, target)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		_ = conn.Close()
		return nil, fmt.Errorf("CONNECT through %s: %s %s", c.nodes[i].id, resp.Status, resp.Header.Get("Postern-Reason"))
	}
	return &testkit.BufferedConn{Conn: conn, R: br}, nil
}

// waitTunnels waits until node i's status of the connection shows one
// tunnel on each node named, and no other.
func (c *cluster) waitTunnels(i int, connID string, nodes ...string) api.Status {
	c.t.Helper()
	var st api.Status
	testkit.WaitFor(c.t, 15*time.Second, fmt.Sprintf("tunnels on %v seen from %s", nodes, c.nodes[i].id), func() bool {
		var err error
		st, err = c.status(i, connID)
		got := tunnelNodes(st)
		slices.Sort(got)
		return err == nil && slices.Equal(got, slices.Sorted(slices.Values(nodes)))
	})
	return st
}

// connectStatus sends a CONNECT through node i and returns the answer's
// status and Postern-Reason.
func (c *cluster) connectStatus(i int, connID, target string) (int, string) {
	c.t.Helper()
	conn, err := net.DialTimeout("tcp", c.nodes[i].proxy, 2*time.Second)
	require.NoError(c.t, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	resp, _, err := testkit.Connect(conn, connID, c.adminKey, target)
	require.NoError(c.t, err)
	return resp.StatusCode, resp.Header.Get("Postern-Reason")
}

// hostOf is the host:port of a database URL.
func hostOf(t *testing.T, db string) string {
	u, err := url.Parse(db)
	require.NoError(t, err)
	return u.Host
}

// withHost is the database URL with another host:port.
func withHost(t *testing.T, db, host string) string {
	u, err := url.Parse(db)
	require.NoError(t, err)
	u.Host = host
	return u.String()
}
