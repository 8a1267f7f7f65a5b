// Package clusterkit runs a cluster of real postern-relay processes on a
// fresh PostgreSQL database for tests and benchmarks: nodes started and
// stopped one by one, agents that dial chosen nodes, and the product's
// requests through any node.
package clusterkit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
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

// URLEnv names the PostgreSQL server the tests create their databases on.
const URLEnv = "POSTERN_TEST_POSTGRES_URL"

// Heartbeat is the nodes' Health period; presence leases last three.
const Heartbeat = 500 * time.Millisecond

// FreshDatabase creates a database for one test and drops it when the test
// ends, after every process that used it.
func FreshDatabase(t testing.TB) string {
	t.Helper()
	raw := os.Getenv(URLEnv)
	if raw == "" {
		t.Skipf("PostgreSQL not configured: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", URLEnv)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, raw)
	if err != nil {
		t.Skipf("PostgreSQL at %s does not answer: %v", URLEnv, err)
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

// Node is one relay process of the cluster and its addresses.
type Node struct {
	ID               string
	API, Proxy, Peer string // listen addresses
	Dir              string // data directory
	Proc             *testkit.Process
	// Set before the node starts (NewWith's configure):
	ExtraEnv, ExtraFlags []string
	ExtraYAML            string          // more relay.yaml
	Link                 *faultlink.Link // between the node and PostgreSQL, when a test puts one there
}

// Cluster is n relay nodes on one fresh database.
type Cluster struct {
	T        testing.TB
	DB       string // the database URL
	Key      string // the cluster key file
	RelayBin string
	AgentBin string
	Nodes    []*Node
	AdminKey string
	// TLS, when set, is the certificate every node serves on all three
	// listeners (peer links are wss://), and the pool that trusts it.
	TLS *TLS
}

// TLS is a cluster's certificate.
type TLS struct {
	CertFile, KeyFile string
	Pool              *x509.CertPool
}

func (c *Cluster) scheme(plain string) string {
	if c.TLS == nil {
		return plain
	}
	return plain + "s"
}

func (c *Cluster) httpClient() *http.Client {
	if c.TLS == nil {
		return http.DefaultClient
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.TLS.Pool}}}
}

func New(t testing.TB, n int) *Cluster { return NewWith(t, n, nil) }

// NewTLS is New with every listener of every node on TLS.
func NewTLS(t testing.TB, n int) *Cluster {
	certFile, keyFile, pool := testkit.SelfSignedCert(t, t.TempDir())
	return newCluster(t, n, &TLS{CertFile: certFile, KeyFile: keyFile, Pool: pool}, nil)
}

// NewWith is New with configure called on each node before
// it starts, given the database URL.
func NewWith(t testing.TB, n int, configure func(i int, nd *Node, db string)) *Cluster {
	return newCluster(t, n, nil, configure)
}

func newCluster(t testing.TB, n int, tlsCert *TLS, configure func(i int, nd *Node, db string)) *Cluster {
	t.Helper()
	c := &Cluster{T: t, DB: FreshDatabase(t), TLS: tlsCert}
	c.RelayBin, c.AgentBin = testkit.Binaries(t)
	dir := t.TempDir()
	c.Key = filepath.Join(dir, "cluster.key")
	require.NoError(t, os.WriteFile(c.Key, []byte(strings.Repeat("k3y", 16)+"\n"), 0o600))
	for i := range n {
		nd := &Node{ID: fmt.Sprintf("node-%c", 'a'+i), Dir: filepath.Join(dir, fmt.Sprint(i)),
			API: testkit.FreeAddr(t), Proxy: testkit.FreeAddr(t), Peer: testkit.FreeAddr(t)}
		require.NoError(t, os.MkdirAll(nd.Dir, 0o700))
		if configure != nil {
			configure(i, nd, c.DB)
		}
		c.Nodes = append(c.Nodes, nd)
	}
	for i := range c.Nodes {
		c.Start(i)
	}
	c.AdminKey = testkit.AdminKey(t, c.Nodes[0].Dir) // the first node bootstraps it
	return c
}

// Start starts node i and waits until it is ready.
func (c *Cluster) Start(i int) {
	c.T.Helper()
	nd := c.Nodes[i]
	cfg := filepath.Join(nd.Dir, "relay.yaml")
	require.NoError(c.T, os.WriteFile(cfg, []byte(fmt.Sprintf(
		"heartbeat_interval: %s\ndrain_timeout: 10s\n%s", Heartbeat, nd.ExtraYAML)), 0o600))
	args := []string{"serve", "--config", cfg, "--data", nd.Dir, "--node-id", nd.ID,
		"--listen", nd.API, "--proxy-listen", nd.Proxy, "--peer-listen", nd.Peer,
		"--peer-advertise", c.scheme("ws") + "://" + nd.Peer, "--cluster-key-file", c.Key, "--log-level", "debug"}
	if c.TLS != nil {
		args = append(args, "--tls-cert", c.TLS.CertFile, "--tls-key", c.TLS.KeyFile)
	}
	args = append(args, nd.ExtraFlags...)
	cmd := exec.Command(c.RelayBin, args...)
	cmd.Env = append(os.Environ(), append([]string{"POSTERN_DATABASE_URL=" + c.DB}, nd.ExtraEnv...)...)
	nd.Proc = testkit.StartCmd(c.T, nd.ID, cmd)
	testkit.WaitFor(c.T, 30*time.Second, nd.ID+" ready", func() bool {
		return testkit.GetOK(c.httpClient(), c.scheme("http")+"://"+nd.API+"/readyz")
	})
}

// Stop stops node i gracefully (SIGTERM) and waits for it to exit.
func (c *Cluster) Stop(i int) {
	c.T.Helper()
	require.NoError(c.T, c.Nodes[i].Proc.Stop(30*time.Second), c.Nodes[i].ID)
}

// Kill ends node i at once (SIGKILL), as a crash would.
func (c *Cluster) Kill(i int) {
	c.T.Helper()
	c.Nodes[i].Proc.Kill()
}

// Client is an API client on node i.
func (c *Cluster) Client(i int) *client.Client {
	return client.New(c.scheme("http")+"://"+c.Nodes[i].API, c.AdminKey, c.httpClient())
}

// CreateConnection creates a connection through node 0 and returns it
// with its agent token.
func (c *Cluster) CreateConnection(name string) api.Connection {
	c.T.Helper()
	conn, err := c.Client(0).CreateConnection(c.T.Context(), name, "")
	require.NoError(c.T, err)
	return conn
}

// StartAgent runs an agent with token that allows the loopback targets
// given, dialling the relay URLs of the nodes given, in that order.
func (c *Cluster) StartAgent(token string, targets []string, tunnels int, nodes ...int) *testkit.Process {
	c.T.Helper()
	var urls []string
	for _, i := range nodes {
		urls = append(urls, c.scheme("ws")+"://"+c.Nodes[i].API)
	}
	more := ""
	if c.TLS != nil {
		more = "ca_file: " + c.TLS.CertFile + "\n"
	}
	cfg := testkit.WriteAgentConfig(c.T, c.T.TempDir(), testkit.AgentConfig{Relays: urls, Token: token,
		StatusListen: testkit.FreeAddr(c.T), Tunnels: tunnels, Allow: targets, More: more})
	return testkit.Start(c.T, "agent", c.AgentBin, "run", "--config", cfg)
}

// Status reads a connection's status from node i.
func (c *Cluster) Status(i int, connID string) (api.Status, error) {
	ctx, cancel := context.WithTimeout(c.T.Context(), 5*time.Second)
	defer cancel()
	return c.Client(i).Status(ctx, connID, "")
}

// TunnelNodes lists the node of every tunnel the status shows.
func TunnelNodes(st api.Status) []string {
	var out []string
	for _, a := range st.Agents {
		for _, s := range a.Sessions {
			out = append(out, s.RelayNode)
		}
	}
	return out
}

// RoundTrip opens a CONNECT to the echo target through node i's proxy and
// runs one exchange of n bytes.
func (c *Cluster) RoundTrip(i int, connID, target string, n int64) error {
	conn, err := c.Open(i, connID, target)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := testkit.Exchange(conn, n); err != nil {
		return fmt.Errorf("through %s: %w", c.Nodes[i].ID, err)
	}
	return nil
}

// Open asks node i's proxy for a tunnel to target; an answer other than
// 200 is an error naming its reason.
func (c *Cluster) Open(i int, connID, target string) (net.Conn, error) {
	return c.OpenAs(i, connID, c.AdminKey, target)
}

// OpenAs is Open with API key key.
func (c *Cluster) OpenAs(i int, connID, key, target string) (net.Conn, error) {
	conn, err := c.dialProxy(i)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	resp, br, err := testkit.Connect(conn, connID, key, target)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		_ = conn.Close()
		return nil, fmt.Errorf("CONNECT through %s: %s %s: %s", c.Nodes[i].ID, resp.Status, resp.Header.Get("Postern-Reason"), bytes.TrimSpace(body))
	}
	return &testkit.BufferedConn{Conn: conn, R: br}, nil
}

// WaitTunnels waits until node i's status of the connection shows one
// tunnel on each node named, and no other.
func (c *Cluster) WaitTunnels(i int, connID string, nodes ...string) api.Status {
	c.T.Helper()
	var st api.Status
	testkit.WaitFor(c.T, 15*time.Second, fmt.Sprintf("tunnels on %v seen from %s", nodes, c.Nodes[i].ID), func() bool {
		var err error
		st, err = c.Status(i, connID)
		got := TunnelNodes(st)
		slices.Sort(got)
		return err == nil && slices.Equal(got, slices.Sorted(slices.Values(nodes)))
	})
	return st
}

// ConnectStatus sends a CONNECT through node i and returns the answer's
// status and Postern-Reason.
func (c *Cluster) ConnectStatus(i int, connID, target string) (int, string) {
	c.T.Helper()
	conn, err := c.dialProxy(i)
	require.NoError(c.T, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	resp, _, err := testkit.Connect(conn, connID, c.AdminKey, target)
	require.NoError(c.T, err)
	return resp.StatusCode, resp.Header.Get("Postern-Reason")
}

// HostOf is the host:port of a database URL.
func HostOf(t testing.TB, db string) string {
	u, err := url.Parse(db)
	require.NoError(t, err)
	return u.Host
}

// WithHost is the database URL with another host:port.
func WithHost(t testing.TB, db, host string) string {
	u, err := url.Parse(db)
	require.NoError(t, err)
	u.Host = host
	return u.String()
}

// dialProxy connects to node i's proxy listener, over TLS when the
// cluster has it.
func (c *Cluster) dialProxy(i int) (net.Conn, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	if c.TLS != nil {
		return tls.DialWithDialer(d, "tcp", c.Nodes[i].Proxy, &tls.Config{RootCAs: c.TLS.Pool})
	}
	return d.Dial("tcp", c.Nodes[i].Proxy)
}
