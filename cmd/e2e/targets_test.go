package e2e

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/postern/postern/protocol"
)

// TestAwkwardTargetsThroughConnect sends a sample of the allowlist's
// awkward targets through the real CONNECT path and checks the answer a
// product would see. The full table lives in allowlist's tests.
func TestAwkwardTargetsThroughConnect(t *testing.T) {
	f := newFixture(t)
	f.startAgent(t)
	p := f.port
	tests := map[string]struct {
		target string
		status int
		reason protocol.Reason
	}{
		"canonical IP allowed":               {"127.0.0.1:" + p, http.StatusOK, ""},
		"name allowed":                       {"demo.postern.test:" + p, http.StatusOK, ""},
		"name with trailing dot":             {"demo.postern.test.:" + p, http.StatusOK, ""},
		"name in mixed case":                 {"DEMO.Postern.Test:" + p, http.StatusOK, ""},
		"hex IPv4 never reinterpreted":       {"0x7f.0.0.1:" + p, http.StatusBadRequest, protocol.BadTarget},
		"decimal IPv4":                       {"2130706433:" + p, http.StatusBadRequest, protocol.BadTarget},
		"octal IPv4":                         {"0177.0.0.1:" + p, http.StatusBadRequest, protocol.BadTarget},
		"short IPv4":                         {"127.1:" + p, http.StatusBadRequest, protocol.BadTarget},
		"port with leading zero":             {"127.0.0.1:0" + p, http.StatusBadRequest, protocol.BadTarget},
		"port 0":                             {"127.0.0.1:0", http.StatusBadRequest, protocol.BadTarget},
		"port 65536":                         {"127.0.0.1:65536", http.StatusBadRequest, protocol.BadTarget},
		"metadata IPv4":                      {"169.254.169.254:80", http.StatusForbidden, protocol.TargetBlocked},
		"metadata IPv6":                      {"[fd00:ec2::254]:80", http.StatusForbidden, protocol.TargetBlocked},
		"IPv4-mapped loopback on other port": {"[::ffff:127.0.0.1]:22", http.StatusForbidden, protocol.TargetBlocked},
		"NAT64 metadata":                     {"[64:ff9b::a9fe:a9fe]:80", http.StatusForbidden, protocol.TargetBlocked},
		"unspecified":                        {"0.0.0.0:" + p, http.StatusForbidden, protocol.TargetBlocked},
		"unspecified IPv6":                   {"[::]:" + p, http.StatusForbidden, protocol.TargetBlocked},
		"broadcast":                          {"255.255.255.255:" + p, http.StatusForbidden, protocol.TargetBlocked},
		"multicast":                          {"224.0.0.1:" + p, http.StatusForbidden, protocol.TargetBlocked},
		"private address not listed":         {"10.1.2.3:443", http.StatusForbidden, protocol.AllowlistMissing},
		"name not listed":                    {"jira.corp.example:443", http.StatusForbidden, protocol.AllowlistMissing},
		"allowed name on another port":       {"demo.postern.test:1", http.StatusForbidden, protocol.AllowlistMissing},
	}
	// Request lines and Host headers that HTTP itself forbids are refused
	// by the proxy's HTTP layer with a plain 400, before Postern sees them.
	for name, target := range map[string]string{
		"port with plus sign": "127.0.0.1:+" + p,
		"userinfo in host":    "user@demo.postern.test:" + p,
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, http.StatusBadRequest, dialConnectNoFail(f.relay.proxyAddr, f.conn.ID, f.key, target))
		})
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res := f.connect(t, tc.target)
			if tc.status == http.StatusOK {
				roundTrip(t, res, 1<<10)
				return
			}
			assertRefused(t, res, tc.status, tc.reason)
			assert.NotContains(t, res.body.Message, f.key, "the answer never echoes credentials")
		})
	}
}
