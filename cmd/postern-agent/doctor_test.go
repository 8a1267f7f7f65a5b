package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/rootcmd"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
)

const doctorTestToken = "pat_doctortestaaaaaa_ZG9jdG9yLXRlc3Qtc2VjcmV0LS0tLS0tLS0tLS0tLS0" // of the issued shape, made up

// doctorRelay answers /v1/tunnel like a relay that accepts
// doctorTestToken: upgrade, yamux, Hello -> Welcome.
func doctorRelay(t *testing.T) string {
	t.Helper()
	return tunneltest.NewRelay(t, tunneltest.RelayOptions{Token: doctorTestToken, NodeID: "cmd-node"}).URL()
}

// doctorConfig writes an agent config for relayURL and a private token file.
func doctorConfig(t *testing.T, relayURL string) string {
	t.Helper()
	for _, k := range []string{"POSTERN_AGENT_TOKEN", "POSTERN_RELAY_URL", "POSTERN_TOKEN_FILE", "POSTERN_EGRESS_PROXY", "POSTERN_CA_FILE"} {
		t.Setenv(k, "")
		require.NoError(t, os.Unsetenv(k))
	}
	return testkit.WriteAgentConfig(t, t.TempDir(), testkit.AgentConfig{Relays: []string{relayURL}, Token: doctorTestToken,
		More: "agent_id: cmdtest\nallow:\n  - cidr: 10.20.0.0/16\n    ports: [443]\n"})
}

func runDoctorCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newDoctorCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestDoctorCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "ws://" + ln.Addr().String()
	require.NoError(t, ln.Close())

	tests := map[string]struct {
		relay    func(t *testing.T) string
		json     bool
		wantCode int
		assert   func(t *testing.T, out string)
	}{
		"healthy relay, text": {
			relay: doctorRelay, wantCode: 0,
			assert: func(t *testing.T, out string) {
				assert.Regexp(t, `(?m)^PASS  relay session +127\.0\.0\.1:\d+: Welcome from relay node cmd-node`, out)
				assert.Contains(t, out, "all checks passed.")
				assert.NotContains(t, out, doctorTestToken)
			},
		},
		"unreachable relay, json": {
			relay: func(*testing.T) string { return closed }, json: true, wantCode: 1,
			assert: func(t *testing.T, out string) {
				var doc struct {
					OK     bool                         `json:"ok"`
					Checks []map[string]json.RawMessage `json:"checks"`
				}
				require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
				assert.False(t, doc.OK)
				require.NotEmpty(t, doc.Checks)
				var tcp map[string]json.RawMessage
				for _, c := range doc.Checks {
					assert.ElementsMatch(t, []string{"layer", "target", "status", "ms", "detail", "reason", "remediation"}, keys(c))
					if string(c["layer"]) == `"relay tcp"` {
						tcp = c
					}
				}
				require.NotNil(t, tcp, out)
				assert.JSONEq(t, `"FAIL"`, string(tcp["status"]))
				assert.JSONEq(t, `"CONNECT_REFUSED"`, string(tcp["reason"]))
				assert.Contains(t, string(tcp["remediation"]), "firewall")
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			args := []string{"--config", doctorConfig(t, tc.relay(t))}
			if tc.json {
				args = append(args, "--json")
			}
			out, err := runDoctorCmd(t, args...)
			if tc.wantCode == 0 {
				require.NoError(t, err, out)
			} else {
				require.Error(t, err)
				assert.Equal(t, tc.wantCode, rootcmd.ExitCode(err))
			}
			tc.assert(t, out)
		})
	}
}

func keys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
