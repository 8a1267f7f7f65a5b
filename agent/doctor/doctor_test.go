package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/agent/resolve/dnstest"
	"github.com/postern/postern/protocol"
)

// Every check closes what it opened; a goroutine left behind is a leak in
// the doctor or in a test's stand-in.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// relayYAML is a config for relayURL whose only allow rule is an address
// block, so that target checks touch no network.
func relayYAML(relayURL, extra string) string {
	return "relay_url: " + relayURL + "\n" +
		"token_file: agent.token\n" +
		"agent_id: dc1-agent\n" +
		"allow:\n  - cidr: 10.20.0.0/16\n    ports: [443]\n" + extra
}

// failed is find, for a check that must have failed.
func failed(t *testing.T, rep Report, layer, target string) Check {
	t.Helper()
	c := find(t, rep, layer, target)
	assert.Equal(t, Fail, c.Status)
	return c
}

// failedFor is failed, with the reason the check must give.
func failedFor(t *testing.T, rep Report, layer, target string, reason protocol.Reason) Check {
	t.Helper()
	c := failed(t, rep, layer, target)
	assert.Equal(t, reason, c.Reason)
	return c
}

var relayLayers = []string{LayerRelayTCP, LayerRelayTLS, LayerWebSocket, LayerRelayAuth, LayerRelaySession}

func TestRelayTunnel(t *testing.T) {
	pki := newPKI(t, "Postern Test CA")
	tests := map[string]struct {
		mode   relayMode
		token  string
		assert func(t *testing.T, rep Report, fr *fakeRelay)
	}{
		"token accepted and Welcome read": {
			mode: relayNormal, token: goodToken,
			assert: func(t *testing.T, rep Report, fr *fakeRelay) {
				assert.True(t, rep.OK, text(t, rep))
				for _, l := range relayLayers {
					assert.Equal(t, Pass, find(t, rep, l, "127.0.0.1").Status, l)
				}
				assert.Equal(t, "token accepted", find(t, rep, LayerRelayAuth, "").Detail)
				assert.Contains(t, find(t, rep, LayerRelaySession, "").Detail, "relay node "+testNodeID)
				tlsc := find(t, rep, LayerRelayTLS, "")
				assert.Contains(t, tlsc.Detail, "issuer Postern Test CA")
				assert.Contains(t, tlsc.Detail, "subject relay.test")
				assert.Contains(t, tlsc.Detail, "verified with ca_file")
				hellos := fr.Hellos()
				require.Len(t, hellos, 1)
				assert.Equal(t, "dc1-agent-doctor", hellos[0].AgentID)
				assert.Equal(t, "doctor-host", hellos[0].Hostname)
				assert.Equal(t, protocol.Version, hellos[0].ProtocolVersion)
				assert.Equal(t, 1, hellos[0].Allowlist.Count)
			},
		},
		"wrong token": {
			mode: relayNormal, token: "pat_tokaaaaaaaaaaaab_d3JvbmdzZWNyZXQtd3JvbmdzZWNyZXQtd3JvbmdzZWM",
			assert: func(t *testing.T, rep Report, fr *fakeRelay) {
				assert.False(t, rep.OK)
				auth := failedFor(t, rep, LayerRelayAuth, "", protocol.AgentTokenInvalid)
				assert.Contains(t, auth.Remediation, "token refused: rotate it with `postern-relay connections rotate-token")
				ws := find(t, rep, LayerWebSocket, "")
				assert.Equal(t, Skip, ws.Status)
				assert.Contains(t, ws.Detail, "relay checks the token before upgrading")
				assert.Equal(t, "skipped: relay auth failed", find(t, rep, LayerRelaySession, "").Detail)
				assert.Empty(t, fr.Hellos())
			},
		},
		"revoked connection": {
			mode: relayNormal, token: revokedToken,
			assert: func(t *testing.T, rep Report, _ *fakeRelay) {
				auth := failedFor(t, rep, LayerRelayAuth, "", protocol.AgentTokenRevoked)
				assert.Contains(t, auth.Detail, "connection revoked")
			},
		},
		"relay_url redirects": {
			mode: relayRedirect, token: goodToken,
			assert: func(t *testing.T, rep Report, _ *fakeRelay) {
				ws := failed(t, rep, LayerWebSocket, "")
				assert.Contains(t, ws.Detail, "https://elsewhere.example/v1/tunnel")
				assert.Equal(t, "relay_url redirects; point it at the relay itself", ws.Remediation)
				assert.Equal(t, "skipped: relay websocket failed", find(t, rep, LayerRelayAuth, "").Detail)
				assert.Equal(t, Skip, find(t, rep, LayerRelaySession, "").Status)
			},
		},
		"subprotocol not agreed": {
			mode: relayNoSubprotocol, token: goodToken,
			assert: func(t *testing.T, rep Report, _ *fakeRelay) {
				ws := failedFor(t, rep, LayerWebSocket, "", protocol.ProtocolError)
				assert.Contains(t, ws.Detail, protocol.Subprotocol)
				assert.Equal(t, Skip, find(t, rep, LayerRelaySession, "").Status)
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fr := newFakeRelay(t, tc.mode, pki)
			s := newSetup(t, relayYAML(fr.URL(), "ca_file: "+pki.caFile+"\n"), tc.token)
			rep := s.run(t)
			tc.assert(t, rep, fr)
			assert.NotContains(t, text(t, rep), tc.token, "the token must never be printed")
		})
	}
}

func TestRelayTLSIssuerShown(t *testing.T) {
	pki := newPKI(t, "Corp Inspection CA")
	fr := newFakeRelay(t, relayNormal, pki)
	tests := map[string]struct {
		caFile bool
		want   Status
		detail []string
	}{
		"without ca_file": {caFile: false, want: Fail, detail: []string{
			"issuer: Corp Inspection CA", "if this is your proxy's CA, add it with ca_file", "subject relay.test"}},
		"with ca_file": {caFile: true, want: Pass, detail: []string{"issuer Corp Inspection CA", "verified with ca_file"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			extra := ""
			if tc.caFile {
				extra = "ca_file: " + pki.caFile + "\n"
			}
			rep := newSetup(t, relayYAML(fr.URL(), extra), goodToken).run(t)
			c := find(t, rep, LayerRelayTLS, "")
			assert.Equal(t, tc.want, c.Status, text(t, rep))
			for _, d := range tc.detail {
				assert.Contains(t, c.Detail, d)
			}
			if tc.want == Fail {
				assert.Equal(t, protocol.TLSFailed, c.Reason)
				assert.Contains(t, c.Remediation, "Corp Inspection CA")
				for _, l := range []string{LayerWebSocket, LayerRelayAuth, LayerRelaySession} {
					assert.Equal(t, "skipped: relay tls failed", find(t, rep, l, "").Detail, l)
				}
			} else {
				assert.Equal(t, Pass, find(t, rep, LayerRelaySession, "").Status)
			}
		})
	}
}

func TestEgressProxy(t *testing.T) {
	pki := newPKI(t, "Postern Test CA")
	fr := newFakeRelay(t, relayNormal, pki)
	proxy := newFakeProxy(t, fr.Addr())
	// relay.test is unknown to this machine's DNS; only the proxy reaches it.
	relayURL := "wss://relay.test:" + fr.Port()
	tests := map[string]struct {
		extra  string
		env    map[string]string
		assert func(t *testing.T, rep Report)
	}{
		"egress_proxy without credentials": {
			extra: "egress_proxy: http://" + proxy.Addr() + "\n",
			assert: func(t *testing.T, rep Report) {
				c := failed(t, rep, LayerEgressProxy, "relay.test")
				assert.Contains(t, c.Detail, "proxy requires authentication (407)")
				assert.Contains(t, c.Remediation, "egress_proxy")
				assert.Equal(t, "skipped: egress proxy failed", find(t, rep, LayerRelayTCP, "").Detail)
				assert.Equal(t, Skip, find(t, rep, LayerRelaySession, "").Status)
			},
		},
		"egress_proxy with wrong credentials": {
			extra: "egress_proxy: http://user:nope@" + proxy.Addr() + "\n",
			assert: func(t *testing.T, rep Report) {
				c := failed(t, rep, LayerEgressProxy, "")
				assert.Contains(t, c.Detail, "it refused the credentials")
				assert.NotContains(t, text(t, rep), "nope", "the proxy password must never be printed")
			},
		},
		"egress_proxy with credentials": {
			extra: "egress_proxy: http://user:pass@" + proxy.Addr() + "\n",
			assert: func(t *testing.T, rep Report) {
				assert.True(t, rep.OK, text(t, rep))
				assert.Equal(t, Warn, find(t, rep, LayerRelayDNS, "").Status, "the proxy resolves the relay's name")
				assert.Equal(t, Pass, find(t, rep, LayerEgressProxy, "").Status)
				assert.Contains(t, find(t, rep, LayerRelayTCP, "").Detail, "through the egress proxy")
				assert.Equal(t, Pass, find(t, rep, LayerRelayTLS, "").Status)
				assert.Contains(t, find(t, rep, LayerRelaySession, "").Detail, testNodeID)
			},
		},
		"HTTPS_PROXY from the environment": {
			env: map[string]string{"HTTPS_PROXY": "http://" + proxy.Addr()},
			assert: func(t *testing.T, rep Report) {
				c := failed(t, rep, LayerEgressProxy, "")
				assert.Contains(t, c.Detail, "from HTTPS_PROXY")
				assert.Contains(t, c.Detail, "proxy requires authentication (407)")
			},
		},
		"NO_PROXY excludes the relay": {
			env: map[string]string{"HTTPS_PROXY": "http://" + proxy.Addr(), "NO_PROXY": "relay.test"},
			assert: func(t *testing.T, rep Report) {
				c := find(t, rep, LayerEgressProxy, "")
				assert.Equal(t, Skip, c.Status)
				assert.Contains(t, c.Detail, "NO_PROXY")
				assert.Equal(t, Fail, find(t, rep, LayerRelayDNS, "").Status, "without the proxy, relay.test must resolve here")
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newSetup(t, relayYAML(relayURL, "ca_file: "+pki.caFile+"\n"+tc.extra), goodToken)
			for k, v := range tc.env {
				s.env[k] = v
			}
			tc.assert(t, s.run(t))
		})
	}
}

func TestToken(t *testing.T) {
	fr := newFakeRelay(t, relayNormal, nil)
	tests := map[string]struct {
		prepare func(t *testing.T, s *setup)
		want    Status
		target  string
		detail  string
		remedy  string
	}{
		"private file": {
			prepare: func(*testing.T, *setup) {},
			want:    Pass, target: "agent.token", detail: "mode 0600",
		},
		"group and world readable": {
			prepare: func(t *testing.T, s *setup) {
				require.NoError(t, os.Chmod(filepath.Join(s.dir, "agent.token"), 0o644))
			},
			want: Fail, target: "agent.token", detail: "mode 0644: other users can read the agent token",
			remedy: "chmod 600 ",
		},
		"missing file": {
			prepare: func(t *testing.T, s *setup) {
				require.NoError(t, os.Remove(filepath.Join(s.dir, "agent.token")))
			},
			want: Fail, target: "agent.token", detail: "no such file", remedy: "postern-relay connections create",
		},
		"empty file": {
			prepare: func(t *testing.T, s *setup) {
				require.NoError(t, os.WriteFile(filepath.Join(s.dir, "agent.token"), nil, 0o600))
			},
			want: Fail, target: "agent.token", detail: "empty",
		},
		"cut short": {
			prepare: func(t *testing.T, s *setup) {
				require.NoError(t, os.WriteFile(filepath.Join(s.dir, "agent.token"), []byte(goodToken[:60]+"\n"), 0o600))
			},
			want: Fail, target: "agent.token",
			detail: "not a well-formed agent token: it is 60 characters long where an agent token has 64, so it looks cut short",
			remedy: "replace the content of ",
		},
		"from the environment": {
			prepare: func(t *testing.T, s *setup) {
				require.NoError(t, os.Remove(filepath.Join(s.dir, "agent.token")))
				s.env["POSTERN_AGENT_TOKEN"] = goodToken
			},
			want: Pass, target: "env POSTERN_AGENT_TOKEN", detail: "not shown",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newSetup(t, relayYAML(fr.URL(), ""), goodToken)
			tc.prepare(t, s)
			rep := s.run(t)
			c := find(t, rep, LayerToken, "")
			assert.Equal(t, tc.want, c.Status, text(t, rep))
			assert.Contains(t, c.Target, tc.target)
			assert.Contains(t, c.Detail, tc.detail)
			out := text(t, rep)
			assert.NotContains(t, out, goodToken)
			if tc.want == Fail {
				assert.Contains(t, c.Remediation, tc.remedy)
				if tc.remedy == "chmod 600 " {
					assert.Equal(t, "chmod 600 "+filepath.Join(s.dir, "agent.token"), c.Remediation)
				}
				// The path to the relay is still checked; what needs the token is not.
				assert.Equal(t, Pass, find(t, rep, LayerRelayTCP, "").Status)
				assert.Equal(t, "skipped: token failed", find(t, rep, LayerWebSocket, "").Detail)
				return
			}
			assert.Equal(t, Pass, find(t, rep, LayerRelaySession, "").Status, out)
			assert.Equal(t, Skip, find(t, rep, LayerRelayTLS, "").Status, "ws:// has no TLS")
		})
	}
}

func TestRelayUnreachable(t *testing.T) {
	port := closedPort(t)
	rep := newSetup(t, relayYAML("ws://127.0.0.1:"+port, ""), goodToken).run(t)
	assert.False(t, rep.OK)
	c := failedFor(t, rep, LayerRelayTCP, "127.0.0.1:"+port, protocol.ConnectRefused)
	assert.Equal(t, "connection refused", c.Detail)
	assert.Equal(t, "check that the relay is up and that outbound TCP "+port+" to 127.0.0.1 is allowed by your firewall", c.Remediation)
	for _, l := range []string{LayerRelayTLS, LayerWebSocket, LayerRelayAuth, LayerRelaySession} {
		got := find(t, rep, l, "")
		if l == LayerRelayTLS {
			assert.Contains(t, got.Detail, "ws://")
			continue
		}
		assert.Equal(t, "skipped: relay tcp failed", got.Detail, l)
	}
	out := text(t, rep)
	assert.Regexp(t, `(?m)^FAIL  relay tcp +127\.0\.0\.1:`+port+`: connection refused \(\d+ms\) \[CONNECT_REFUSED\]\n      -> check that the relay is up`, out)
}

func TestConfig(t *testing.T) {
	tests := map[string]struct {
		yaml   string
		write  bool
		detail []string
		remedy string
	}{
		"missing file": {write: false, detail: []string{"no such file"}, remedy: "--config FILE"},
		"every problem with its line": {
			write: true,
			yaml: "relay_url: wss://relay.example.com\n" +
				"tokenfile: agent.token\n" +
				"allow:\n  - host: gitlab.corp.example\n    ports: [99999]\n",
			detail: []string{"agent.yaml:2: unknown key", "agent.yaml:5: allow[0]", "2 problems:"},
			remedy: "postern-agent validate --config",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newSetup(t, tc.yaml, goodToken)
			if !tc.write {
				require.NoError(t, os.Remove(s.cfgPath))
			}
			rep := s.run(t)
			assert.False(t, rep.OK)
			c := failed(t, rep, LayerConfig, "agent.yaml")
			for _, d := range tc.detail {
				assert.Contains(t, c.Detail, d)
			}
			assert.Contains(t, c.Remediation, tc.remedy)
			assert.Equal(t, "skipped: config failed", find(t, rep, LayerToken, "").Detail)
			for _, c := range rep.Checks[1:] {
				assert.Equal(t, Skip, c.Status)
			}
		})
	}
}

func TestConfigBadCAFile(t *testing.T) {
	fr := newFakeRelay(t, relayNormal, nil)
	bad := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(bad, []byte("not a certificate"), 0o644))
	rep := newSetup(t, relayYAML(fr.URL(), "ca_file: "+bad+"\n"), goodToken).run(t)
	c := failed(t, rep, LayerConfig, "")
	assert.Contains(t, c.Detail, "no PEM certificate found")
	assert.Equal(t, Pass, find(t, rep, LayerRelaySession, "").Status, "the other layers are still checked")
}

func TestTargets(t *testing.T) {
	pki := newPKI(t, "Corp Internal CA")
	tlsPort := newTLSTarget(t, pki)
	refused := closedPort(t)
	dnsAddr := dnstest.New(t, dnstest.ByName(map[string]dnstest.Handler{
		"broken.corp.test.": dnstest.Rcode(dns.RcodeServerFailure),
	}, dnstest.NewZone(t,
		"loop.corp.test. 60 IN A 127.0.0.1",
		"internal.corp.test. 60 IN A 10.20.0.9",
	).Reply)).Addr()
	silent := dnstest.Silent(t).Addr()
	tp := strconv.Itoa(tlsPort)

	tests := map[string]struct {
		rules  string
		extra  string
		dns    string
		assert func(t *testing.T, rep Report)
	}{
		"NXDOMAIN": {
			rules: "  - host: missing.corp.test\n    ports: [443]\n",
			assert: func(t *testing.T, rep Report) {
				c := failedFor(t, rep, LayerTargetDNS, "missing.corp.test", protocol.DNSNXDomain)
				assert.Contains(t, c.Remediation, "does not know missing.corp.test")
				assert.Equal(t, "skipped: target dns failed", find(t, rep, LayerTargetTCP, "missing.corp.test:443").Detail)
				assert.Equal(t, "skipped: target dns failed", find(t, rep, LayerTargetTLS, "missing.corp.test:443").Detail)
			},
		},
		"SERVFAIL": {
			rules: "  - host: broken.corp.test\n    ports: [8080]\n",
			assert: func(t *testing.T, rep Report) {
				failedFor(t, rep, LayerTargetDNS, "broken.corp.test", protocol.DNSServFail)
			},
		},
		"DNS timeout": {
			rules: "  - host: slow.corp.test\n    ports: [8080]\n",
			dns:   silent,
			extra: "  timeout: 200ms\n",
			assert: func(t *testing.T, rep Report) {
				failedFor(t, rep, LayerTargetDNS, "slow.corp.test", protocol.DNSTimeout)
			},
		},
		"name resolving to loopback is refused by the agent": {
			rules: "  - host: loop.corp.test\n    ports: [" + tp + "]\n",
			assert: func(t *testing.T, rep Report) {
				c := failedFor(t, rep, LayerTargetDNS, "loop.corp.test", protocol.TargetBlocked)
				assert.Contains(t, c.Detail, "127.0.0.1")
				assert.Contains(t, c.Detail, "loopback")
			},
		},
		"name resolving to a private address": {
			rules: "  - host: internal.corp.test\n    ports: [8080]\n",
			assert: func(t *testing.T, rep Report) {
				c := find(t, rep, LayerTargetDNS, "internal.corp.test")
				assert.Equal(t, Pass, c.Status)
				assert.Equal(t, "10.20.0.9 (from "+dnsAddr+")", c.Detail)
			},
		},
		"refused port": {
			rules: "  - ip: 127.0.0.1\n    ports: [" + refused + "]\n",
			assert: func(t *testing.T, rep Report) {
				failedFor(t, rep, LayerTargetTCP, "127.0.0.1:"+refused, protocol.ConnectRefused)
			},
		},
		"self-signed TLS without ca_file": {
			rules: "  - ip: 127.0.0.1\n    ports: [" + tp + "]\n",
			assert: func(t *testing.T, rep Report) {
				assert.Equal(t, Pass, find(t, rep, LayerTargetTCP, "127.0.0.1:"+tp).Status)
				c := failedFor(t, rep, LayerTargetTLS, "127.0.0.1:"+tp, protocol.TLSFailed)
				assert.Contains(t, c.Detail, "issuer: Corp Internal CA")
			},
		},
		"self-signed TLS with ca_file": {
			rules: "  - ip: 127.0.0.1\n    ports: [" + tp + "]\n",
			extra: "ca_file: " + pki.caFile + "\n",
			assert: func(t *testing.T, rep Report) {
				c := find(t, rep, LayerTargetTLS, "127.0.0.1:"+tp)
				assert.Equal(t, Pass, c.Status, text(t, rep))
				assert.Contains(t, c.Detail, "issuer Corp Internal CA")
			},
		},
		"wildcard and address block are not probed": {
			rules: "  - host: \"*.corp.test\"\n    ports: [443]\n  - cidr: 10.0.0.0/8\n    ports: [443]\n",
			assert: func(t *testing.T, rep Report) {
				assert.Contains(t, find(t, rep, LayerTargetDNS, "*.corp.test").Detail, "wildcard rule (line 7)")
				assert.Equal(t, Skip, find(t, rep, LayerTargetTCP, "10.0.0.0/8").Status)
			},
		},
		"deny rule overrides the allow rule": {
			rules: "  - ip: 10.20.5.7\n    ports: [443]\ndeny:\n  - cidr: 10.20.5.0/24\n",
			assert: func(t *testing.T, rep Report) {
				failedFor(t, rep, LayerTargetTCP, "10.20.5.7:443", protocol.TargetBlocked)
				assert.Equal(t, "skipped: target tcp failed", find(t, rep, LayerTargetTLS, "10.20.5.7:443").Detail)
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			server := dnsAddr
			if tc.dns != "" {
				server = tc.dns
			}
			// No relay: only the target checks matter here, and a refused
			// relay port fails fast.
			yaml := "relay_url: ws://127.0.0.1:" + refused + "\ntoken_file: agent.token\nagent_id: t\n" +
				"dns:\n  servers: [\"" + server + "\"]\n" + dnsExtra(tc.extra) +
				"allow:\n" + tc.rules + nonDNSExtra(tc.extra)
			s := newSetup(t, yaml, goodToken)
			rep := s.runWith(t, func(o *Options) { o.tlsPorts = []int{443, tlsPort} })
			tc.assert(t, rep)
		})
	}
}

// dnsExtra and nonDNSExtra split a test's extra config between the dns
// block (indented lines) and the top level.
func dnsExtra(extra string) string {
	if strings.HasPrefix(extra, "  ") {
		return extra
	}
	return ""
}

func nonDNSExtra(extra string) string {
	if strings.HasPrefix(extra, "  ") {
		return ""
	}
	return extra
}

func TestBudget(t *testing.T) {
	fr := newFakeRelay(t, relayNormal, nil)
	s := newSetup(t, relayYAML(fr.URL(), ""), goodToken)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep := Run(ctx, Options{ConfigPath: s.cfgPath, Getenv: func(string) (string, bool) { return "", false }})
	assert.Equal(t, Pass, find(t, rep, LayerConfig, "").Status)
	c := find(t, rep, LayerRelayTCP, "")
	assert.Equal(t, Skip, c.Status)
	assert.Contains(t, c.Detail, "time budget")
}

func TestOutput(t *testing.T) {
	rep := Report{Checks: []Check{
		{Layer: LayerConfig, Target: "/etc/postern/agent.yaml", Status: Pass, Detail: "3 allow rules, mode enforce"},
		{Layer: LayerRelayTCP, Target: "relay.example.com:443", Status: Fail, Duration: 12 * time.Millisecond, timed: true,
			Reason: protocol.ConnectRefused, Detail: "connection refused",
			Remediation: "check that outbound TCP 443 to relay.example.com is allowed by your firewall"},
		{Layer: LayerRelayTLS, Target: "relay.example.com:443", Status: Skip, Detail: "skipped: relay tcp failed"},
	}}
	var b bytes.Buffer
	require.NoError(t, rep.WriteText(&b))
	assert.Equal(t, ""+
		"PASS  config           /etc/postern/agent.yaml: 3 allow rules, mode enforce\n"+
		"FAIL  relay tcp        relay.example.com:443: connection refused (12ms) [CONNECT_REFUSED]\n"+
		"      -> check that outbound TCP 443 to relay.example.com is allowed by your firewall\n"+
		"SKIP  relay tls        relay.example.com:443: skipped: relay tcp failed\n"+
		"\n1 check failed; the first failure is the likeliest cause.\n", b.String())

	rep.OK = false
	b.Reset()
	require.NoError(t, rep.WriteJSON(&b))
	var doc map[string]any
	require.NoError(t, json.Unmarshal(b.Bytes(), &doc))
	assert.Equal(t, false, doc["ok"])
	checks := doc["checks"].([]any)
	require.Len(t, checks, 3)
	second := checks[1].(map[string]any)
	assert.Equal(t, map[string]any{
		"layer": "relay tcp", "target": "relay.example.com:443", "status": "FAIL", "ms": float64(12),
		"detail": "connection refused", "reason": "CONNECT_REFUSED",
		"remediation": "check that outbound TCP 443 to relay.example.com is allowed by your firewall",
	}, second)

	var back Report
	require.NoError(t, json.Unmarshal(b.Bytes(), &back))
	assert.Equal(t, Fail, back.Checks[1].Status)
	assert.Equal(t, 12*time.Millisecond, back.Checks[1].Duration)
}

func TestParseRefusal(t *testing.T) {
	tests := map[string]struct {
		status int
		header map[string]string
		body   string
		want   refusal
	}{
		"relay token refusal": {
			status: 401, body: `{"reason":"AGENT_TOKEN_INVALID","message":"agent token is unknown"}`,
			want: refusal{Status: 401, Reason: protocol.AgentTokenInvalid, Message: "agent token is unknown"},
		},
		"reason header only": {
			status: 503, header: map[string]string{"Postern-Reason": "RELAY_UNAVAILABLE"}, body: "oops",
			want: refusal{Status: 503, Reason: protocol.RelayUnavailable},
		},
		"redirect": {
			status: 302, header: map[string]string{"Location": "https://x.example/"}, body: "<html>",
			want: refusal{Status: 302, Location: "https://x.example/"},
		},
		"control characters are neutralised": {
			status: 403, body: `{"reason":"FORBIDDEN","message":"a\u001b[31mb\nc"}`,
			want: refusal{Status: 403, Reason: protocol.Forbidden, Message: "a [31mb c"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := make(map[string][]string)
			for k, v := range tc.header {
				h[k] = []string{v}
			}
			assert.Equal(t, tc.want, parseRefusal(tc.status, h, []byte(tc.body)))
		})
	}
}

func FuzzParseRefusal(f *testing.F) {
	f.Add(401, "", `{"reason":"AGENT_TOKEN_INVALID","message":"x"}`)
	f.Add(302, "https://elsewhere/", "")
	f.Add(502, "", "<html>bad gateway</html>")
	f.Add(401, "", `{"reason":"`+strings.Repeat("A", 100)+`"}`)
	f.Fuzz(func(t *testing.T, status int, location, body string) {
		r := parseRefusal(status, map[string][]string{"Location": {location}}, []byte(body))
		for _, s := range []string{string(r.Reason), r.Message, r.Location} {
			assert.NotContains(t, s, "\n")
			assert.NotContains(t, s, "\x1b")
			assert.LessOrEqual(t, len(s), 304)
		}
		// Whatever the relay says, the checks built from it are complete.
		ws, auth := refusalChecks(r, "wss://relay.example/v1/tunnel")
		assert.True(t, ws.Status == Fail || ws.Status == Skip)
		if ws.Status == Fail {
			assert.NotEmpty(t, ws.Remediation)
		} else {
			assert.Equal(t, Fail, auth.Status)
			assert.NotEmpty(t, auth.Remediation)
		}
	})
}
