package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/allowlist"
	"github.com/postern/postern/protocol"
)

// yml joins lines with newlines so that a test can count lines by eye: the
// first argument is line 1.
func yml(lines ...string) []byte { return []byte(strings.Join(lines, "\n") + "\n") }

func fixedHost(name string) func() (string, error) {
	return func() (string, error) { return name, nil }
}

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) Getenv {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// problemsOf returns the messages of every problem in err, in order.
func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	var out []string
	for _, e := range Problems(err) {
		var ce *Error
		require.ErrorAs(t, e, &ce, "every problem is an *Error")
		out = append(out, ce.Error())
	}
	return out
}

func TestParseValid(t *testing.T) {
	base := []string{
		"relay_url: wss://relay.postern.example",
		"allow:",
		"  - host: gitlab.corp.example",
		"    ports: [443]",
	}
	with := func(extra ...string) []byte { return yml(append(append([]string{}, base...), extra...)...) }

	tests := map[string]struct {
		name  string // file name; "config.yaml" if empty
		data  []byte
		check func(t *testing.T, c *Config)
	}{
		"defaults": {
			data: with(),
			check: func(t *testing.T, c *Config) {
				require.Len(t, c.RelayURLs, 1)
				assert.Equal(t, "wss://relay.postern.example", c.RelayURLs[0].String())
				assert.Equal(t, ModeEnforce, c.Mode)
				assert.Equal(t, 2, c.Tunnels)
				assert.Equal(t, "127.0.0.1:7070", c.StatusListen)
				assert.Equal(t, 2*time.Second, c.DNSTimeout)
				assert.Empty(t, c.DNSServers)
				assert.Nil(t, c.EgressProxy)
				assert.Equal(t, slog.LevelInfo, c.LogLevel)
				assert.Equal(t, "build-01.corp.example", c.AgentID)
				assert.Empty(t, c.TokenFile)
				assert.Empty(t, c.AuditLog)
				assert.Empty(t, c.CAFile)
				assert.NotNil(t, c.Rules)
				assert.Equal(t, "config.yaml", c.Path)
			},
		},
		"rules keep their lines and ports become strings": {
			data: yml(
				"relay_url: wss://relay.postern.example",
				"allow:",
				"  - cidr: 10.20.0.0/16",
				"    ports: [443, \"8000-8100\", 0x50, 8000-8001]",
				"deny:",
				"  - ip: 10.20.0.9",
			),
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, []allowlist.RuleSpec{{CIDR: "10.20.0.0/16", Ports: []string{"443", "8000-8100", "80", "8000-8001"}, Line: 3}}, c.Allow)
				assert.Equal(t, []allowlist.RuleSpec{{IP: "10.20.0.9", Line: 6}}, c.Deny)
			},
		},
		"relay list, trailing slash dropped, scheme lowercased": {
			data: yml("relay_url:", "  - wss://a.postern.example/", "  - WSS://b.postern.example:8443/edge/"),
			check: func(t *testing.T, c *Config) {
				require.Len(t, c.RelayURLs, 2)
				assert.Equal(t, "wss://a.postern.example", c.RelayURLs[0].String())
				assert.Equal(t, "wss://b.postern.example:8443/edge", c.RelayURLs[1].String())
			},
		},
		"ws to loopback": {
			data: yml("relay_url: [ws://127.0.0.1:8080, ws://127.9.9.9, 'ws://localhost', 'ws://[::1]:9000', 'ws://LOCALHOST.']"),
			check: func(t *testing.T, c *Config) {
				assert.Len(t, c.RelayURLs, 5)
				assert.Empty(t, c.Allow, "no rules is valid: it denies everything")
			},
		},
		"dns servers get port 53": {
			data: with("dns:", "  servers: [10.0.0.2, '10.0.0.3:5353', 'fd00::53', '[fd00::54]:5300']", "  timeout: 750ms"),
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, []string{"10.0.0.2:53", "10.0.0.3:5353", "[fd00::53]:53", "[fd00::54]:5300"}, c.DNSServers)
				assert.Equal(t, 750*time.Millisecond, c.DNSTimeout)
			},
		},
		"every scalar setting": {
			data: with(
				"mode: report",
				"tunnels: 16",
				"status_listen: '[::1]:7171'",
				"egress_proxy: https://u:secret@proxy.corp.example:3128/",
				"agent_id: Agent_7.dc-1",
				"log_level: warn",
			),
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, ModeReport, c.Mode)
				assert.Equal(t, 16, c.Tunnels)
				assert.Equal(t, "[::1]:7171", c.StatusListen)
				require.NotNil(t, c.EgressProxy)
				assert.Equal(t, "proxy.corp.example:3128", c.EgressProxy.Host)
				pass, _ := c.EgressProxy.User.Password()
				assert.Equal(t, "secret", pass, "Basic auth credentials are kept for the dialer")
				assert.Equal(t, "Agent_7.dc-1", c.AgentID)
				assert.Equal(t, slog.LevelWarn, c.LogLevel)
			},
		},
		"relative paths follow the config file": {
			name: "/etc/postern/agent.yaml",
			data: with("token_file: agent.token", "ca_file: ../pki/ca.pem", "audit_log: /var/log/postern/audit.jsonl"),
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, filepath.FromSlash("/etc/postern/agent.token"), c.TokenFile)
				assert.Equal(t, filepath.FromSlash("/etc/pki/ca.pem"), c.CAFile)
				assert.Equal(t, "/var/log/postern/audit.jsonl", c.AuditLog)
				assert.Equal(t, "/etc/postern/agent.yaml", c.Path)
			},
		},
		"explicit nulls mean unset": {
			data: with("deny:", "dns:", "mode:", "tunnels: ~"),
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, ModeEnforce, c.Mode)
				assert.Equal(t, 2, c.Tunnels)
				assert.Empty(t, c.Deny)
			},
		},
		"leading document marker": {
			data: append([]byte("---\n"), with()...),
			check: func(t *testing.T, c *Config) {
				assert.Len(t, c.Allow, 1)
				assert.Equal(t, 4, c.Allow[0].Line)
			},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			file := tt.name
			if file == "" {
				file = "config.yaml"
			}
			c, err := parse(file, file, tt.data, noEnv, fixedHost("build-01.corp.example"))
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

func TestParseInvalid(t *testing.T) {
	relay := "relay_url: wss://relay.postern.example"
	tests := map[string]struct {
		data []byte
		want string // the whole message of the only problem
	}{
		"unknown key with suggestion": {
			data: yml(relay, "mode: enforce", "tunnels: 2", "", "# rules", "", "allwo:", "  - host: a.example", "    ports: [443]"),
			want: `config.yaml:7: unknown key "allwo"; did you mean "allow"?`,
		},
		"unknown key without suggestion": {
			data: yml(relay, "colour: blue"),
			want: `config.yaml:2: unknown key "colour"`,
		},
		"unknown nested key": {
			data: yml(relay, "dns:", "  timeout: 2s", "  sever: [10.0.0.2]"),
			want: `config.yaml:4: unknown key "sever" in dns; did you mean "servers"?`,
		},
		"unknown key in a rule": {
			data: yml(relay, "allow:", "  - hots: a.example", "    ports: [443]"),
			want: `config.yaml:3: unknown key "hots" in allow[0]; did you mean "host"?`,
		},
		"duplicate key": {
			data: yml(relay, "tunnels: 2", "tunnels: 3"),
			want: `config.yaml:3: duplicate key "tunnels" (first set at line 2)`,
		},
		"integer of the wrong type": {
			data: yml(relay, "tunnels: many"),
			want: `config.yaml:2: tunnels: want an integer, got the string "many"`,
		},
		"tunnels out of range": {
			data: yml(relay, "tunnels: 17"),
			want: `config.yaml:2: tunnels: 17 is out of range; want 1 to 16`,
		},
		"string of the wrong type": {
			data: yml(relay, "agent_id: [a, b]"),
			want: `config.yaml:2: agent_id: want a string, got a list`,
		},
		"unknown mode": {
			data: yml(relay, "mode: block"),
			want: `config.yaml:2: mode: unknown mode "block"; want enforce or report`,
		},
		"relay_url missing": {
			data: yml("mode: report"),
			want: `config.yaml: relay_url is missing; give the relay's wss:// base URL (or set POSTERN_RELAY_URL)`,
		},
		"relay_url empty list": {
			data: yml("mode: report", "relay_url: []"),
			want: `config.yaml:2: relay_url: the list is empty; give the relay's wss:// base URL`,
		},
		"relay_url as a mapping": {
			data: yml("relay_url:", "  url: wss://relay.postern.example"),
			want: `config.yaml:2: relay_url: want a string or a list of strings, got a mapping`,
		},
		"relay_url over https": {
			data: yml("relay_url: https://relay.postern.example"),
			want: `config.yaml:1: relay_url: "https://relay.postern.example": the relay is reached over WebSocket; write wss:// instead of https://`,
		},
		"ws to a remote relay": {
			data: yml("relay_url:", "  - wss://a.postern.example", "  - ws://relay.postern.example"),
			want: `config.yaml:3: relay_url: "ws://relay.postern.example": ws:// is unencrypted, so the agent token and every ` +
				`tunnelled byte would cross the network in clear text; use wss://, or ws:// only to a loopback relay ` +
				`(127.0.0.0/8, ::1, localhost) for testing`,
		},
		"ws to a private address": {
			data: yml("relay_url: ws://10.0.0.1:8080"),
			want: `config.yaml:1: relay_url: "ws://10.0.0.1:8080": ws:// is unencrypted, so the agent token and every ` +
				`tunnelled byte would cross the network in clear text; use wss://, or ws:// only to a loopback relay ` +
				`(127.0.0.0/8, ::1, localhost) for testing`,
		},
		"relay_url with credentials": {
			data: yml("relay_url: wss://agent:hunter2@relay.postern.example"),
			want: `config.yaml:1: relay_url: must not hold credentials; the agent authenticates with its token`,
		},
		"relay_url with a query": {
			data: yml("relay_url: wss://relay.postern.example/?x=1"),
			want: `config.yaml:1: relay_url: "wss://relay.postern.example/?x=1": a base URL takes no query or fragment; the agent appends /v1/tunnel to its path`,
		},
		"relay_url without host": {
			data: yml("relay_url: relay.postern.example"),
			want: `config.yaml:1: relay_url: "relay.postern.example" has no scheme; write wss://relay.postern.example (or ws://relay.postern.example to a loopback relay, for testing)`,
		},
		"relay_url bad port": {
			data: yml("relay_url: wss://relay.postern.example:70000"),
			want: `config.yaml:1: relay_url: "wss://relay.postern.example:70000": port 70000 is out of range`,
		},
		"relay_url with the tunnel path": {
			data: yml("relay_url: wss://relay.postern.example/v1/tunnel"),
			want: `config.yaml:1: relay_url: "wss://relay.postern.example/v1/tunnel": give the relay's base URL; the agent appends /v1/tunnel itself`,
		},
		"relay_url twice": {
			data: yml("relay_url: [wss://a.postern.example, wss://a.postern.example/]"),
			want: `config.yaml:1: relay_url: wss://a.postern.example is listed twice`,
		},
		"ports not a list": {
			data: yml(relay, "allow:", "  - host: a.example", "    ports: 443"),
			want: `config.yaml:4: allow[0].ports: want a list of ports such as [443, "8000-8100"], got the number 443`,
		},
		"port of the wrong type": {
			data: yml(relay, "allow:", "  - host: a.example", "    ports:", "      - 443", "      - true"),
			want: `config.yaml:6: allow[0].ports[1]: want a port number or a range such as "8000-8100", got the boolean true`,
		},
		"rule not a mapping": {
			data: yml(relay, "deny:", "  - 10.0.0.0/8"),
			want: `config.yaml:3: deny[0]: want a mapping, got the string "10.0.0.0/8"`,
		},
		"bad cidr reported by the allowlist at the rule's line": {
			data: yml(relay, "allow:", "  - host: a.example", "    ports: [443]", "  - cidr: 10.0.0.0/33", "    ports: [443]"),
			want: `config.yaml:5: allow[1]: cidr "10.0.0.0/33": `,
		},
		"allow rule without ports": {
			data: yml(relay, "allow:", "  - ip: 10.0.0.7"),
			want: `config.yaml:3: allow[0]: ports: `,
		},
		"blocked entry not an address": {
			data: yml(relay, "blocked:", "  - 10.9.0.0/16", "  - vault.corp.example"),
			want: `config.yaml:4: blocked[1]: "vault.corp.example": bad rule: not an IP address or CIDR block ` +
				`(IPv4 as four decimal octets without leading zeros, or IPv6)`,
		},
		"blocked entry with host bits": {
			data: yml(relay, "blocked: [10.9.1.0/16]"),
			want: `config.yaml:2: blocked[0]: "10.9.1.0/16": bad rule: host bits are set; the block is 10.9.0.0/16`,
		},
		"blocked entry of the wrong type": {
			data: yml(relay, "blocked:", "  - 10", "  - 10.0.0.0/8"),
			want: `config.yaml:3: blocked[0]: want an IP address or CIDR block such as "10.9.0.0/16", got the number 10`,
		},
		"blocked not a list": {
			data: yml(relay, "blocked: 10.9.0.0/16"),
			want: `config.yaml:2: blocked: want a list of IP addresses and CIDR blocks such as ["10.9.0.0/16", "192.0.2.7"], got the string "10.9.0.0/16"`,
		},
		"dns server by name": {
			data: yml(relay, "dns:", "  servers:", "    - 10.0.0.2", "    - dns.corp.example"),
			want: `config.yaml:5: dns.servers[1]: "dns.corp.example" is not an IP address or IP:port; a DNS server must be given by address`,
		},
		"dns timeout without unit": {
			data: yml(relay, "dns:", "  timeout: 2"),
			want: `config.yaml:3: dns.timeout: want a duration such as "2s" or "500ms", got the number 2`,
		},
		"dns timeout not a duration": {
			data: yml(relay, "dns:", "  timeout: soon"),
			want: `config.yaml:3: dns.timeout: "soon" is not a duration; write it like "2s" or "500ms"`,
		},
		"dns timeout too long": {
			data: yml(relay, "dns:", "  timeout: 5m"),
			want: `config.yaml:3: dns.timeout: 5m0s is out of range; want more than 0 and at most 30s`,
		},
		"dns as a list": {
			data: yml(relay, "dns: [10.0.0.2]"),
			want: `config.yaml:2: dns: want a mapping, got a list`,
		},
		"egress proxy scheme": {
			data: yml(relay, "egress_proxy: socks5://u:pw@proxy.corp.example:1080"),
			want: `config.yaml:2: egress_proxy: "socks5://u:xxxxx@proxy.corp.example:1080": scheme must be http:// or https://`,
		},
		"status_listen without port": {
			data: yml(relay, "status_listen: 127.0.0.1"),
			want: `config.yaml:2: status_listen: "127.0.0.1": want host:port such as 127.0.0.1:7070`,
		},
		"status_listen by name": {
			data: yml(relay, "status_listen: status.corp.example:7070"),
			want: `config.yaml:2: status_listen: "status.corp.example:7070": host must be an IP address or localhost`,
		},
		"log level": {
			data: yml(relay, "log_level: verbose"),
			want: `config.yaml:2: log_level: unknown level "verbose"; want debug, info, warn or error`,
		},
		"agent id characters": {
			data: yml(relay, "agent_id: 'dc 1/agent'"),
			want: `config.yaml:2: agent_id: "dc 1/agent": use only letters, digits, '.', '_' and '-'`,
		},
		"empty path": {
			data: yml(relay, "token_file: ''"),
			want: `config.yaml:2: token_file: empty path`,
		},
		"second document": {
			data: yml(relay, "---", "mode: report"),
			want: `config.yaml:2: a second YAML document starts here; a config file holds exactly one`,
		},
		"syntax error": {
			data: yml(relay, "allow:", "\t- host: a.example"),
			want: `config.yaml:3: YAML syntax: found character that cannot start any token`,
		},
		"unquoted wildcard": {
			data: yml(relay, "allow:", "  - host: *.corp.example", "    ports: [443]"),
			want: `config.yaml:3: YAML syntax: a value starting with * must be quoted, as in host: "*.corp.example"`,
		},
		"unquoted wildcard in a flow list": {
			data: yml(relay, "allow:", "  - {host: *.corp.example, ports: [443]}"),
			want: `config.yaml:3: YAML syntax: a value starting with * must be quoted, as in host: "*.corp.example"`,
		},
		"alias": {
			data: yml(relay, "allow:", "  - &web", "    host: a.example", "    ports: [443]", "  - *web"),
			want: `config.yaml:6: allow[1]: YAML aliases (*web) are not supported; write the value out`,
		},
		"top level list": {
			data: yml("- relay_url: wss://relay.postern.example"),
			want: `config.yaml:1: want a mapping of settings such as "relay_url: wss://...", got a list`,
		},
		"non-string key": {
			data: yml(relay, "[a]: 1"),
			want: `config.yaml:2: top level: keys must be plain names, got a list`,
		},
		"too large": {
			data: append(yml(relay), make([]byte, MaxFileSize)...),
			want: `config.yaml: file is larger than 1048576 bytes; is this the right file?`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := parse("config.yaml", "config.yaml", tt.data, noEnv, fixedHost("h"))
			require.Error(t, err)
			assert.Nil(t, c)
			assert.ErrorIs(t, err, ErrInvalid)
			got := problemsOf(t, err)
			require.Len(t, got, 1, "exactly one problem: %q", got)
			if strings.HasSuffix(tt.want, ": ") {
				assert.True(t, strings.HasPrefix(got[0], tt.want), "got %q, want prefix %q", got[0], tt.want)
			} else {
				assert.Equal(t, tt.want, got[0])
			}
		})
	}
}

// An entry the allowlist refuses is named by its place in the file's list,
// also when an entry before it was refused while decoding.
func TestBlockedListProblemsNameTheEntry(t *testing.T) {
	_, err := parse("config.yaml", "config.yaml", yml("relay_url: wss://relay.postern.example",
		"blocked:", "  - [10.0.0.0/8]", "  - 10.0.0.1/8", "  - ''"), noEnv, fixedHost("h"))
	require.Error(t, err)
	assert.Equal(t, []string{
		`config.yaml:3: blocked[0]: want an IP address or CIDR block such as "10.9.0.0/16", got a list`,
		`config.yaml:4: blocked[1]: "10.0.0.1/8": bad rule: host bits are set; the block is 10.0.0.0/8`,
		`config.yaml:5: blocked[2]: "": bad rule: empty entry; give an IP address or a CIDR block such as 10.9.0.0/16`,
	}, problemsOf(t, err))
	assert.ErrorIs(t, err, allowlist.ErrBadRule)
}

func TestAllProblemsAtOnce(t *testing.T) {
	_, err := Load(filepath.Join("testdata", "invalid-three.yaml"), noEnv)
	require.Error(t, err)
	got := problemsOf(t, err)
	require.Len(t, got, 3, "%q", got)
	// In file order, whichever stage found them.
	assert.Equal(t, `testdata/invalid-three.yaml:3: mode: unknown mode "enforcing"; want enforce or report`, filepath.ToSlash(got[0]))
	assert.True(t, strings.HasPrefix(filepath.ToSlash(got[1]), `testdata/invalid-three.yaml:5: allow[0]: cidr "10.20.0.0/33": `), got[1])
	assert.Equal(t, `testdata/invalid-three.yaml:7: unknown key "alow"; did you mean "allow"?`, filepath.ToSlash(got[2]))

	var lines []int
	for _, e := range Problems(err) {
		var ce *Error
		require.ErrorAs(t, e, &ce)
		lines = append(lines, ce.Line)
	}
	assert.Equal(t, []int{3, 5, 7}, lines)
	assert.ErrorIs(t, err, allowlist.ErrBadRule, "the allowlist's cause is kept")
}

func TestDecodeProblemsAreNotRepeatedByAllowlist(t *testing.T) {
	// ports has the wrong type, so the allowlist sees no ports; only the
	// type problem is reported, not also "allow rules must list ports".
	data := yml("relay_url: wss://r.example", "allow:", "  - host: a.example", "    ports: '443'", "  - ip: 10.0.0.7")
	_, err := parse("c.yaml", "c.yaml", data, noEnv, fixedHost("h"))
	got := problemsOf(t, err)
	require.Len(t, got, 2, "%q", got)
	assert.Equal(t, `c.yaml:4: allow[0].ports: want a list of ports such as [443, "8000-8100"], got the string "443"`, got[0])
	assert.True(t, strings.HasPrefix(got[1], "c.yaml:5: allow[1]: ports: "), got[1])
}

func TestProblemsAreBounded(t *testing.T) {
	var lines []string
	lines = append(lines, "relay_url: wss://r.example")
	for i := range 200 {
		lines = append(lines, "k"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+strings.Repeat("y", i)+": 1")
	}
	_, err := parse("c.yaml", "c.yaml", yml(lines...), noEnv, fixedHost("h"))
	got := problemsOf(t, err)
	require.Len(t, got, maxProblems+1)
	assert.Equal(t, "c.yaml: 150 more problems not shown", got[maxProblems])
}

func TestLoadFiles(t *testing.T) {
	t.Run("full", func(t *testing.T) {
		c, err := Load(filepath.Join("testdata", "full.yaml"), noEnv)
		require.NoError(t, err)
		abs, err := filepath.Abs("testdata")
		require.NoError(t, err)
		assert.Equal(t, filepath.Join(abs, "full.yaml"), c.Path)
		assert.Equal(t, filepath.Join(abs, "agent.token"), c.TokenFile)
		assert.Equal(t, filepath.Join(abs, "audit", "audit.jsonl"), c.AuditLog)
		require.Len(t, c.RelayURLs, 2)
		assert.Equal(t, "wss://relay-b.postern.example:8443/postern", c.RelayURLs[1].String())
		assert.Equal(t, ModeReport, c.Mode)
		assert.Len(t, c.Allow, 4)
		assert.Len(t, c.Deny, 2)
		assert.Equal(t, "*.jira.corp.example", c.Allow[1].Host)
		assert.Equal(t, 10, c.Allow[1].Line)
		assert.Equal(t, []allowlist.BlockedSpec{{Addr: "10.20.9.0/24", Line: 21}, {Addr: "fd00:bad::/32", Line: 22},
			{Addr: "192.0.2.7", Line: 23}}, c.Blocked)
		assert.Equal(t, allowlist.Blocked, c.Rules.Decide("10.20.9.1", 443).Verdict, "the blocked list is compiled in")
		assert.Equal(t, []string{"10.0.0.2:53", "10.0.0.3:5353", "[fd00::53]:53", "[fd00::54]:53"}, c.DNSServers)
		assert.Equal(t, 1500*time.Millisecond, c.DNSTimeout)
		assert.Equal(t, "/etc/postern/ca.pem", c.CAFile)
		assert.Equal(t, 4, c.Tunnels)
		assert.Equal(t, "127.0.0.1:7171", c.StatusListen)
		assert.Equal(t, "dc1-agent-01", c.AgentID)
		assert.Equal(t, slog.LevelDebug, c.LogLevel)
	})
	t.Run("every example in testdata but invalid-* loads", func(t *testing.T) {
		files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
		require.NoError(t, err)
		require.NotEmpty(t, files)
		for _, f := range files {
			_, err := Load(f, noEnv)
			if strings.HasPrefix(filepath.Base(f), "invalid-") {
				assert.ErrorIs(t, err, ErrInvalid, f)
			} else {
				assert.NoError(t, err, f)
			}
		}
	})
	t.Run("missing file is an I/O error, not invalid", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), noEnv)
		require.Error(t, err)
		assert.ErrorIs(t, err, os.ErrNotExist)
		assert.NotErrorIs(t, err, ErrInvalid)
	})
	t.Run("oversized file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "big.yaml")
		require.NoError(t, os.WriteFile(path, append([]byte("# "), make([]byte, 2*MaxFileSize)...), 0o600))
		_, err := Load(path, noEnv)
		assert.ErrorIs(t, err, ErrInvalid)
		assert.ErrorContains(t, err, "larger than 1048576 bytes")
	})
}

func TestAgentIDFromHostname(t *testing.T) {
	tests := map[string]struct{ host, want string }{
		"plain":          {"build-01", "build-01"},
		"fqdn":           {"Build-01.Corp.Example.", "build-01.corp.example"},
		"odd":            {"my host (2)", "my-host--2"},
		"non-ascii":      {"bücher", "b-cher"},
		"long":           {strings.Repeat("a", 100), strings.Repeat("a", 64)},
		"nothing usable": {"---", ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tt.want, agentIDFromHostname(tt.host))
		})
	}
	t.Run("hostname error", func(t *testing.T) {
		_, err := parse("c.yaml", "c.yaml", yml("relay_url: wss://r.example"), noEnv,
			func() (string, error) { return "", errors.New("no uts namespace") })
		assert.EqualError(t, err, "c.yaml: agent_id is not set and the hostname is unavailable (no uts namespace); set agent_id")
	})
}

func TestMode(t *testing.T) {
	for _, m := range []Mode{ModeEnforce, ModeReport} {
		got, err := ParseMode(m.String())
		require.NoError(t, err)
		assert.Equal(t, m, got)
		text, err := m.MarshalText()
		require.NoError(t, err)
		assert.Equal(t, m.String(), string(text))
	}
	assert.Equal(t, "unknown(0)", ModeUnknown.String())
	_, err := ModeUnknown.MarshalText()
	assert.Error(t, err)
	_, err = ParseMode("Enforce")
	assert.Error(t, err)
}

func TestStringHidesSecrets(t *testing.T) {
	c, err := parse("/etc/postern/agent.yaml", "/etc/postern/agent.yaml", yml(
		"relay_url: wss://relay.postern.example",
		"egress_proxy: http://proxyuser:s3cret-pass@proxy.corp.example:3128",
		"token_file: agent.token",
		"mode: report",
	), noEnv, fixedHost("h1"))
	require.NoError(t, err)
	s := c.String()
	assert.NotContains(t, s, "s3cret-pass")
	assert.Contains(t, s, "egress_proxy=http://proxyuser:xxxxx@proxy.corp.example:3128")
	assert.Contains(t, s, "relay_url=wss://relay.postern.example")
	assert.Contains(t, s, "mode=report")
	assert.Contains(t, s, "token_file=/etc/postern/agent.token")

	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("loaded", "config", c)
	assert.NotContains(t, b.String(), "s3cret-pass")
	assert.Contains(t, b.String(), "config.mode=report")
}

func TestSuggest(t *testing.T) {
	known := []string{"relay_url", "token_file", "allow", "deny", "tunnels"}
	tests := map[string]struct{ key, want string }{
		"transposition":  {"allwo", "allow"},
		"one missing":    {"tunnel", "tunnels"},
		"dash for under": {"relay-url", "relay_url"},
		"too far":        {"colour", ""},
		"exact":          {"deny", "deny"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tt.want, suggest(tt.key, known))
		})
	}
}

// The config reference in docs/agent.md is a file an admin copies: it must
// load, every setting it shows included.
func TestDocsConfigReferenceLoads(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "agent.md"))
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(doc), "## Config reference")
	require.True(t, ok, "docs/agent.md has a config reference")
	_, rest, ok = strings.Cut(rest, "```yaml\n")
	require.True(t, ok)
	block, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)
	c, err := Parse("agent.md", []byte(block), noEnv)
	require.NoError(t, err, "the reference:\n%s", block)
	assert.Equal(t, ModeEnforce, c.Mode)
	assert.NotEmpty(t, c.Allow)
	assert.NotEmpty(t, c.Deny)
	assert.NotEmpty(t, c.Blocked, "the reference shows blocked:")
}

// A rule set larger than the relay accepts in a summary is refused when
// the file loads, not by the relay on every connect.
func TestRulesBeyondWhatTheRelayAccepts(t *testing.T) {
	many := func(rules, portsEach int, extra ...string) []byte {
		lines := []string{"relay_url: wss://relay.postern.example", "allow:"}
		for i := range rules {
			ports := make([]string, portsEach)
			for j := range ports {
				ports[j] = strconv.Itoa(1000 + 2*j)
			}
			lines = append(lines, fmt.Sprintf("  - ip: 10.%d.%d.1", i/250, i%250), "    ports: ["+strings.Join(ports, ", ")+"]")
		}
		return yml(append(lines, extra...)...)
	}
	_, err := parse("config.yaml", "config.yaml", many(protocol.MaxSummaryRules, 1), noEnv, fixedHost("h"))
	require.NoError(t, err, "the most rules the relay takes")

	_, err = parse("config.yaml", "config.yaml", many(protocol.MaxSummaryRules-1, 1, "blocked: [10.250.0.0/16, 10.251.0.0/16]"), noEnv, fixedHost("h"))
	require.Error(t, err)
	assert.Equal(t, []string{"config.yaml: 1025 allow rules, deny rules and blocked entries: the relay accepts at most 1024; " +
		"merge rules (a cidr: covers many addresses, a ports range many ports)"}, problemsOf(t, err))

	_, err = parse("config.yaml", "config.yaml", many(8, protocol.MaxSummaryPorts/8+1), noEnv, fixedHost("h"))
	require.Error(t, err)
	assert.Equal(t, []string{`config.yaml: 4104 port entries in the rules: the relay accepts at most 4096; use ranges ("8000-8100")`}, problemsOf(t, err))
}
