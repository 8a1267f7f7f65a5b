package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// credSite is a relay binary with its admin CLI, a connection in
// workspace acme and a byte echo target its agents may reach.
type credSite struct {
	relayBin, agentBin string
	dir                string
	server, proxyAddr  string
	keyFile            string
	conn               api.Connection
	target             string
	relay              *testkit.Process
}

func startCredSite(t *testing.T) *credSite {
	t.Helper()
	relayBin, agentBin := testkit.Binaries(t)
	dir := t.TempDir()
	apiAddr, proxyAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	// Every client here is 127.0.0.1, and the test presents refused
	// credentials on purpose: the limit per source would hold back the
	// good ones too. The rotation overlap is short so a token ends by time.
	cfg := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("auth_failures_per_source: -1\ntoken_overlap: 3s\n"), 0o600))
	s := &credSite{relayBin: relayBin, agentBin: agentBin, dir: dir, server: "http://" + apiAddr, proxyAddr: proxyAddr,
		keyFile: filepath.Join(dir, "relay", "admin.key")}
	s.relay = start(t, relayBin, "serve", "--config", cfg, "--data", filepath.Join(dir, "relay"),
		"--listen", apiAddr, "--proxy-listen", proxyAddr)
	require.Eventually(t, func() bool { return testkit.GetOK(http.DefaultClient, s.server+"/healthz") },
		20*time.Second, 50*time.Millisecond, "relay never became healthy:\n%s", s.relay.Output())
	s.cliJSON(t, &s.conn, "connections", "create", "acme-jira", "--workspace", "acme")
	s.target = testkit.Serve(t, byteEcho)
	return s
}

// byteEcho sends back every byte as it comes, so a test can see that a
// stream is still open at any moment.
func byteEcho(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	_, _ = io.Copy(c, c)
}

// cli runs an admin command with the admin key file.
func (s *credSite) cli(t *testing.T, args ...string) string {
	t.Helper()
	return string(runCLI(t, []string{"POSTERN_SERVER=" + s.server}, s.relayBin, append(args, "--admin-key-file", s.keyFile)...))
}

// cliJSON runs an admin command with --json and decodes its answer.
func (s *credSite) cliJSON(t *testing.T, into any, args ...string) {
	t.Helper()
	require.NoError(t, json.Unmarshal([]byte(s.cli(t, append(args, "--json")...)), into))
}

// agent starts the agent binary with token, as agent id name.
func (s *credSite) agent(t *testing.T, name, token string) *testkit.Process {
	t.Helper()
	dir := filepath.Join(s.dir, name)
	require.NoError(t, os.Mkdir(dir, 0o700))
	cfg := testkit.WriteAgentConfig(t, dir, testkit.AgentConfig{
		Relays: []string{strings.Replace(s.server, "http", "ws", 1)}, Token: token,
		StatusListen: testkit.FreeAddr(t), Allow: []string{s.target}, More: "agent_id: " + name + "\n",
	})
	return start(t, s.agentBin, "run", "--config", cfg)
}

// agents are the agent ids the relay has tunnels of, once the status
// matches want.
func (s *credSite) waitAgents(t *testing.T, c *client.Client, want ...string) {
	t.Helper()
	waitStatus(t, c, s.conn.ID, func(st api.Status) bool {
		var got []string
		for _, a := range st.Agents {
			got = append(got, a.AgentID)
		}
		return fmt.Sprint(got) == fmt.Sprint(want)
	})
}

// requireClosedBy requires an open CONNECT stream to end before deadline.
func requireClosedBy(t *testing.T, res connectResult, deadline time.Time, what string) {
	t.Helper()
	require.NoError(t, res.conn.SetReadDeadline(deadline))
	buf := make([]byte, 64)
	for {
		if _, err := res.br.Read(buf); err != nil {
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "%s still open at the deadline", what)
			return
		}
	}
}

// echoOnce sends a byte through an open CONNECT stream and reads it back.
func echoOnce(t *testing.T, res connectResult) {
	t.Helper()
	require.Equal(t, http.StatusOK, res.status, "%+v", res.body)
	require.NoError(t, res.conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := res.conn.Write([]byte("p"))
	require.NoError(t, err)
	b := make([]byte, 1)
	_, err = res.br.Read(b)
	require.NoError(t, err)
	require.NoError(t, res.conn.SetDeadline(time.Time{}))
}

func TestAPIKeyRevocationAndExpiryThroughBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries")
	}
	s := startCredSite(t)
	var product, short api.APIKey
	s.cliJSON(t, &product, "api-keys", "create", "product", "--workspace", "acme")
	productClient := client.New(s.server, product.Key, nil)
	s.agent(t, "agent-1", s.conn.AgentToken)
	s.waitAgents(t, productClient, "agent-1")
	s.cliJSON(t, &short, "api-keys", "create", "short", "--workspace", "acme", "--expires-in", "6s")
	require.NotNil(t, short.ExpiresAt)

	stream := dialConnect(t, s.proxyAddr, s.conn.ID, product.Key, s.target)
	echoOnce(t, stream)
	events := testkit.FollowEvents(t, s.server+"/v1/events", product.Key)
	kept := dialConnect(t, s.proxyAddr, s.conn.ID, short.Key, s.target)
	echoOnce(t, kept)

	start := time.Now()
	out := s.cli(t, "api-keys", "revoke", product.ID)
	assert.Regexp(t, `state:\s+revoked`, out)
	requireClosedBy(t, stream, start.Add(2*time.Second), "the revoked key's CONNECT stream")
	select {
	case <-events:
	case <-time.After(time.Until(start.Add(2 * time.Second))):
		t.Fatal("the revoked key's event stream still open 2 s after the revocation")
	}
	t.Logf("streams of the revoked key ended %v after the command started", time.Since(start))
	echoOnce(t, kept) // another key's stream goes on

	refused := dialConnect(t, s.proxyAddr, s.conn.ID, product.Key, s.target)
	assertRefused(t, refused, http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
	assert.Contains(t, refused.body.Message, "API key "+product.ID+" was revoked")
	_, err := productClient.ListConnections(t.Context())
	var apiErr *api.Error
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, protocol.APIAuthRequired, apiErr.Reason)
	assert.Contains(t, apiErr.Message, "was revoked")

	// The short key's stream ends when the key expires, and the key is
	// refused from then on, saying so.
	requireClosedBy(t, kept, short.ExpiresAt.Add(2*time.Second), "the expired key's CONNECT stream")
	expired := dialConnect(t, s.proxyAddr, s.conn.ID, short.Key, s.target)
	assertRefused(t, expired, http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
	assert.Contains(t, expired.body.Message, "API key "+short.ID+" expired at")

	admin := testkit.AdminKey(t, filepath.Dir(s.keyFile))
	human := s.cli(t, "api-keys", "list")
	var list api.APIKeyList
	s.cliJSON(t, &list, "api-keys", "list")
	require.Len(t, list.APIKeys, 3)
	for _, listing := range []string{human, s.cli(t, "api-keys", "list", "--json")} {
		for name, key := range map[string]string{"admin": admin, "product": product.Key, "short": short.Key} {
			assert.NotContains(t, listing, testkit.SecretOf(key), "the list shows the %s key's secret", name)
		}
	}
	assert.Regexp(t, product.ID+`\s+product\s+workspace acme\s+\S+\s+never\s+\S+\s+revoked`, human)
	assert.Regexp(t, short.ID+`\s+short\s+workspace acme\s+\S+\s+\S+\s+\S+\s+expired`, human)
	assert.Regexp(t, `\s+admin\s+\S+\s+never\s+\S+\s+active`, human)
	for _, k := range list.APIKeys {
		assert.NotNil(t, k.LastUsedAt, "key %s (%s) was used", k.ID, k.Name)
	}

	stop(t, s.relay)
	for _, key := range []string{product.Key, short.Key} {
		assert.NotContains(t, s.relay.Output(), testkit.SecretOf(key), "the relay's log leaks an API key")
	}
}

func TestAgentTokenRotationCutsTunnelsThroughBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries")
	}
	s := startCredSite(t)
	key := testkit.AdminKey(t, filepath.Dir(s.keyFile))
	admin := client.New(s.server, key, nil)
	old := s.agent(t, "agent-old", s.conn.AgentToken)
	s.waitAgents(t, admin, "agent-old")

	// --expire-previous: the old token's tunnels close at once and only
	// the new token connects.
	var rotated api.TokenResponse
	start := time.Now()
	s.cliJSON(t, &rotated, "connections", "rotate-token", s.conn.ID, "--expire-previous")
	s.waitAgents(t, admin)
	t.Logf("old token's tunnels closed %v after rotate-token --expire-previous started", time.Since(start))
	assert.Less(t, time.Since(start), 2*time.Second, "the old token's tunnels outlived the rotation")
	require.Eventually(t, func() bool { return strings.Contains(old.Output(), "expired at") }, 5*time.Second, 20*time.Millisecond,
		"the agent was not told its token expired:\n%s", old.Output())
	stop(t, old)
	s.agent(t, "agent-new", rotated.AgentToken)
	s.waitAgents(t, admin, "agent-new")

	// A plain rotation: the tunnel of the now previous token stays for the
	// overlap (3 s here), then closes by itself.
	var next api.TokenResponse
	s.cliJSON(t, &next, "connections", "rotate-token", s.conn.ID)
	assert.WithinDuration(t, time.Now().Add(3*time.Second), next.PreviousValidUntil, 2*time.Second)
	time.Sleep(time.Until(next.PreviousValidUntil.Add(-time.Second)))
	st, err := admin.Status(t.Context(), s.conn.ID, "")
	require.NoError(t, err)
	require.Len(t, st.Agents, 1, "the tunnel closed before its token expired")
	s.waitAgents(t, admin)
	s.agent(t, "agent-next", next.AgentToken)
	s.waitAgents(t, admin, "agent-next")
	res := dialConnect(t, s.proxyAddr, s.conn.ID, key, s.target)
	echoOnce(t, res)
}

func TestBootstrapAdminKeyRotationThroughBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries")
	}
	s := startCredSite(t)
	oldKey := testkit.AdminKey(t, filepath.Dir(s.keyFile))

	var r struct {
		New     api.APIKey `json:"new"`
		KeyFile string     `json:"key_file"`
		Revoked api.APIKey `json:"revoked"`
	}
	out := s.cli(t, "api-keys", "rotate-admin", "--json")
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	assert.NotContains(t, out, "pak_", "the new key is never printed")
	assert.Equal(t, s.keyFile, r.KeyFile)
	assert.True(t, r.New.Admin)
	assert.NotNil(t, r.Revoked.RevokedAt)
	assert.True(t, strings.HasPrefix(oldKey, "pak_"+r.Revoked.ID+"_"), "the key in use was revoked")

	newKey := testkit.AdminKey(t, filepath.Dir(s.keyFile))
	require.NotEqual(t, oldKey, newKey)
	assert.True(t, strings.HasPrefix(newKey, "pak_"+r.New.ID+"_"))
	fi, err := os.Stat(s.keyFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the new key file is private")

	_, err = client.New(s.server, oldKey, nil).ListConnections(t.Context())
	var apiErr *api.Error
	require.ErrorAs(t, err, &apiErr, "the old admin key still works")
	assert.Equal(t, protocol.APIAuthRequired, apiErr.Reason)
	assert.Contains(t, apiErr.Message, "was revoked")
	list, err := client.New(s.server, newKey, nil).ListConnections(t.Context())
	require.NoError(t, err)
	assert.Len(t, list.Connections, 1)
	assert.Contains(t, s.cli(t, "connections", "list"), s.conn.ID, "the CLI works with the rewritten key file")
}
