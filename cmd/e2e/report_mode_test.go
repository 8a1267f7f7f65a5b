package e2e

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/resolve/dnstest"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// tripwire is a listener that must never be reached: it counts the
// connections it accepts and closes them.
type tripwire struct {
	addr     string
	port     string
	accepted atomic.Int32
}

func newTripwire(t *testing.T, host string) *tripwire {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	require.NoError(t, err)
	tw := &tripwire{addr: ln.Addr().String()}
	_, tw.port, _ = net.SplitHostPort(tw.addr)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tw.accepted.Add(1)
			_ = c.Close()
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return tw
}

// TestReportModeBinaries runs the real postern-relay and postern-agent
// (mode: report) and shows that report mode lifts only ALLOWLIST_MISSING:
// CONNECTs and live checks to an unsafe address, a deny rule, a name
// resolving to either, and an alias (CNAME) of a denied name are refused
// with TARGET_BLOCKED, and the listeners on those addresses never see a
// connection; a target that is merely not allowlisted is let through.
func TestReportModeBinaries(t *testing.T) {
	relayBin, agentBin := binaries(t)
	dir := t.TempDir()
	rp := startRelayProcess(t, relayBin, filepath.Join(dir, "relay"))
	apiAddr, proxyAddr, server := rp.apiAddr, rp.proxyAddr, rp.server
	admin := client.New(server, testkit.AdminKey(t, filepath.Join(dir, "relay")), nil)
	conn, err := admin.CreateConnection(t.Context(), "acme-jira", "acme")
	require.NoError(t, err)
	key, err := admin.CreateAPIKey(t.Context(), api.CreateAPIKeyRequest{Name: "product", Workspace: "acme"})
	require.NoError(t, err)
	product := client.New(server, key.Key, nil)

	allowed := testkit.EchoServer(t) // 127.0.0.1, named exactly by an ip rule
	_, okPort, _ := net.SplitHostPort(allowed)
	unsafe := newTripwire(t, "127.0.0.9") // loopback no rule names: always blocked
	denied := newTripwire(t, "127.0.0.1") // named exactly, and by a deny rule
	dnsAddr := dnstest.New(t, dnstest.NewZone(t,
		"new.postern.example. 0 IN A 127.0.0.1", // not allowlisted; its address passes
		"loop.postern.test. 0 IN A 127.0.0.9",
		"alias.postern.test. 0 IN CNAME secret.postern.test.",
		"secret.postern.test. 0 IN A 127.0.0.1",
	).Reply).Addr()

	cfgPath := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "agent.token"), []byte(conn.AgentToken), 0o600))
	require.NoError(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`relay_url: ws://%s
token_file: agent.token
status_listen: %s
audit_log: audit.jsonl
mode: report
dns:
  servers: [%q]
  timeout: 1s
allow:
  - host: "*.postern.test"
    ports: [%[4]s, %[5]s]
  - ip: 127.0.0.1
    ports: [%[5]s, %[6]s]
deny:
  - host: secret.postern.test
  - ip: 127.0.0.1
    ports: [%[6]s]
blocked:
  - 192.0.2.0/24
`, apiAddr, testkit.FreeAddr(t), dnsAddr, unsafe.port, okPort, denied.port)), 0o644))
	agentProc := start(t, agentBin, "run", "--config", cfgPath)
	waitStatus(t, product, conn.ID, func(s api.Status) bool { return s.TunnelStatus == "connected" })

	// check is the live check's reason: what enforce mode would answer,
	// which for a target no allow rule covers is ALLOWLIST_MISSING before
	// any lookup.
	refused := map[string]struct{ target, check string }{
		"loopback literal":               {"127.0.0.9:" + unsafe.port, ""},
		"ipv4-mapped loopback literal":   {"[::ffff:127.0.0.9]:" + unsafe.port, ""},
		"metadata literal":               {"169.254.169.254:80", ""},
		"deny rule":                      {"127.0.0.1:" + denied.port, ""},
		"allowed name resolving there":   {"loop.postern.test:" + unsafe.port, ""},
		"unlisted name to a denied port": {"new.postern.example:" + denied.port, string(protocol.AllowlistMissing)},
		"alias (CNAME) of a denied name": {"alias.postern.test:" + okPort, ""},
		"on the config's blocked list":   {"192.0.2.7:443", ""},
	}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			res := dialConnect(t, proxyAddr, conn.ID, key.Key, tc.target)
			assertRefused(t, res, http.StatusForbidden, protocol.TargetBlocked)
			e := auditEntry(t, filepath.Join(dir, "audit.jsonl"), func(e audit.Entry) bool { return e.RequestID == res.body.RequestID })
			assert.Equal(t, audit.Denied, e.Decision)
			assert.Equal(t, string(protocol.TargetBlocked), e.Reason)
			assert.Empty(t, e.Addr, "nothing was dialled")

			ck, err := product.Check(t.Context(), conn.ID, "http://"+tc.target+"/")
			require.NoError(t, err)
			assert.False(t, ck.Ready)
			assert.Equal(t, protocol.Reason(cmp.Or(tc.check, string(protocol.TargetBlocked))), ck.Reason, "%+v", ck.Steps)
		})
	}
	assert.Zero(t, unsafe.accepted.Load(), "report mode never reaches the unsafe address")
	assert.Zero(t, denied.accepted.Load(), "report mode never reaches the denied address")

	// What report mode is for: a target no allow rule covers is let
	// through and audited, while the live check says enforce would refuse.
	res := dialConnect(t, proxyAddr, conn.ID, key.Key, "new.postern.example:"+okPort)
	roundTrip(t, res, 1<<10)
	e := auditEntry(t, filepath.Join(dir, "audit.jsonl"), func(e audit.Entry) bool {
		return e.Target == "new.postern.example:"+okPort && e.Op == "dial"
	})
	assert.Equal(t, audit.ReportAllowed, e.Decision)
	assert.Equal(t, string(protocol.AllowlistMissing), e.Reason)
	ck, err := product.Check(context.Background(), conn.ID, "http://new.postern.example:"+okPort+"/")
	require.NoError(t, err)
	assert.Equal(t, protocol.AllowlistMissing, ck.Reason)
	require.NotEmpty(t, ck.Steps)
	assert.Contains(t, ck.Steps[0].Detail, "report mode")

	st, cli := runAgentStatus(t, agentBin, cfgPath)
	require.Equal(t, 0, cli.code, cli.stderr)
	assert.Equal(t, "report", st.Allowlist.Mode)
	assert.Equal(t, []string{"192.0.2.0/24"}, st.Allowlist.Blocked, "status lists the config's blocked list")
	human := runTool(t, agentBin, "status", "--config", cfgPath)
	assert.Contains(t, human.stdout, "blocked:   192.0.2.0/24")
	explain := runTool(t, agentBin, "validate", "--config", cfgPath, "--explain", "192.0.2.7:443")
	assert.Equal(t, 3, explain.code, explain.stderr)
	assert.Contains(t, explain.stdout, "rule: blocked cidr=192.0.2.0/24")
	assert.Equal(t, 0, runTool(t, agentBin, "validate", "--config", cfgPath).code)

	stop(t, agentProc)
	assert.Contains(t, agentProc.Output(), "report mode: would deny", "the waived refusal is logged")
	assert.Zero(t, unsafe.accepted.Load())
	assert.Zero(t, denied.accepted.Load())
}
