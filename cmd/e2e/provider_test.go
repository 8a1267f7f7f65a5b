package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	pcheck "github.com/postern/postern/provider"
	pt "github.com/postern/postern/provider/providertest"
	"github.com/postern/postern/relay"
	"github.com/postern/postern/relay/api"
)

// selfHosted is a relay and an agent in process, fakes of GitHub
// Enterprise Server, GitLab self-managed and Jira Data Center behind the
// agent, and the real postern-relay binary to run `provider check`.
type selfHosted struct {
	bin, server, proxy, keyFile, caFile string
	conn, never                         string
	base                                map[string]string
	blocked, closed                     string
}

func startSelfHosted(t *testing.T) *selfHosted {
	t.Helper()
	relayBin, _ := testkit.Binaries(t)
	dir := t.TempDir()
	r := startRelay(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	conn, err := r.admin.CreateConnection(t.Context(), "corp", "")
	require.NoError(t, err)
	never, err := r.admin.CreateConnection(t.Context(), "never", "")
	require.NoError(t, err)

	names := []string{"github.corp.example", "gitlab.corp.example", "jira.corp.example", "blocked.corp.example", "closed.corp.example"}
	ca := pt.NewCA(t, names...)
	s := &selfHosted{bin: relayBin, server: "http://" + r.apiAddr, proxy: r.proxyAddr,
		keyFile: filepath.Join(dir, relay.AdminKeyFile), caFile: filepath.Join(dir, "ca.pem"),
		conn: conn.ID, never: never.ID, base: map[string]string{}}
	require.NoError(t, os.WriteFile(s.caFile, ca.PEM, 0o600))
	var ports []int
	for _, key := range []string{"github", "gitlab", "jira"} {
		srv := pt.StartServer(t, key, time.Now, ca)
		ports = append(ports, srv.Port())
		s.base[key] = "https://" + key + ".corp.example:" + strconv.Itoa(srv.Port())
	}
	s.base["jira"] += "/jira" // a context path, as Data Center installs often have
	closedPort, blockedPort := freePort(t), freePort(t)
	s.closed = "https://closed.corp.example:" + strconv.Itoa(closedPort)
	s.blocked = "https://blocked.corp.example:" + strconv.Itoa(blockedPort)
	// The host rule admits the blocked port; the exact-address rule that
	// lifts loopback does not, so the agent refuses it as unsafe.
	rules := fmt.Sprintf("allow:\n  - host: \"*.corp.example\"\n    ports: [%d, %d, %d, %d, %d]\n  - ip: 127.0.0.1\n    ports: [%d, %d, %d, %d]\n",
		ports[0], ports[1], ports[2], closedPort, blockedPort, ports[0], ports[1], ports[2], closedPort)
	hosts := map[string]string{}
	for _, n := range names {
		hosts[n] = "127.0.0.1"
	}
	startAgent(t, r, conn.AgentToken, rules, hosts)
	waitStatus(t, r.admin, conn.ID, func(st api.Status) bool { return st.TunnelStatus == "connected" })
	return s
}

func freePort(t *testing.T) int {
	_, p, err := net.SplitHostPort(testkit.FreeAddr(t))
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

// check runs the binary's `provider check --json` and returns the state;
// it fails the test if the credential shows in any output.
func (s *selfHosted) check(t *testing.T, key, base, conn, scenario string, scopes ...string) (pcheck.State, int) {
	t.Helper()
	args := []string{"provider", "check", "--provider", key, "--deployment-mode", "self-hosted", "--base-url", base,
		"--connection", conn, "--proxy", s.proxy, "--server", s.server, "--admin-key-file", s.keyFile,
		"--credential-env", "PROVIDER_TOKEN", "--ca-file", s.caFile, "--json"}
	for _, sc := range scopes {
		args = append(args, "--required-scopes", sc)
	}
	res := runToolEnv(t, append(os.Environ(), "PROVIDER_TOKEN="+pt.Credential(key, scenario)), s.bin, args...)
	assert.NotContains(t, res.stdout+res.stderr, pt.Canary, "the credential leaked")
	var st pcheck.State
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &st), "stdout %q stderr %q", res.stdout, res.stderr)
	return st, res.code
}

// TestProviderCheckSelfHosted produces every provider_error_code through a
// real relay and agent, for GitHub Enterprise Server, GitLab self-managed
// and Jira Data Center, and asserts it in the CLI's JSON.
func TestProviderCheckSelfHosted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the postern-relay binary")
	}
	s := startSelfHosted(t)
	scopes := map[string]string{"github": "repo", "gitlab": "read_api", "jira": "read:jira-work"}
	revoked := map[string]string{"github": pcheck.CodeAuthFailed, "gitlab": pcheck.CodeTokenRevoked, "jira": pcheck.CodeAuthFailed}
	for _, key := range []string{"github", "gitlab", "jira"} {
		rows := []struct {
			name, base, conn, scenario, code string
			reason                           protocol.Reason
		}{
			{"ready", s.base[key], s.conn, pt.OK, "", ""},
			{"bad credential", s.base[key], s.conn, pt.Bad, pcheck.CodeAuthFailed, ""},
			{"revoked", s.base[key], s.conn, pt.Revoked, revoked[key], ""},
			{"missing scope", s.base[key], s.conn, pt.NoScope, pcheck.CodeScopeMissing, ""},
			{"forbidden", s.base[key], s.conn, pt.Forbidden, pcheck.CodePermissionMissing, ""},
			{"rate limited", s.base[key], s.conn, pt.Limited, pcheck.CodeRateLimited, ""},
			{"not allowlisted", "https://" + key + ".other.example", s.conn, pt.OK, pcheck.CodeConnectivityBlocked, protocol.AllowlistMissing},
			{"no agent ever", s.base[key], s.never, pt.OK, pcheck.CodeConnectivityBlocked, protocol.AgentNeverConnected},
			{"unsafe address", s.blocked, s.conn, pt.OK, pcheck.CodeBaseURLBlocked, protocol.TargetBlocked},
			{"refused", s.closed, s.conn, pt.OK, pcheck.CodeBaseURLUnreachable, protocol.ConnectRefused},
		}
		for _, row := range rows {
			t.Run(key+"/"+row.name, func(t *testing.T) {
				st, exit := s.check(t, key, row.base, row.conn, row.scenario, scopes[key])
				assert.Equal(t, row.code, st.ProviderErrorCode, st.Message)
				assert.Equal(t, row.code == "", st.Ready)
				assert.Equal(t, map[bool]int{true: 0, false: 1}[row.code == ""], exit, "exit 0 only when ready")
				require.NotNil(t, st.Connectivity)
				assert.Equal(t, row.reason, st.Connectivity.Reason)
				if row.reason != "" {
					assert.Equal(t, pcheck.AuthUnknown, st.AuthStatus, "no verdict on the credential before the path works")
				}
				if row.code == "" {
					assert.Equal(t, "connected", st.Connectivity.TunnelStatus)
					assert.Equal(t, "allowed", st.Connectivity.AllowlistStatus)
				}
				if row.code == pcheck.CodeRateLimited {
					assert.InDelta(t, 30, st.RetryAfter, 2)
				}
			})
		}
	}
	t.Run("the cloud host is not self-hosted", func(t *testing.T) {
		st, exit := s.check(t, "github", "https://github.com", s.conn, pt.OK)
		assert.Equal(t, pcheck.CodeBaseURLBlocked, st.ProviderErrorCode)
		assert.Equal(t, 1, exit)
		assert.Len(t, st.Steps, 1, "blocked before any connection")
	})
}
