package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEnvOverrides(t *testing.T) {
	file := yml(
		"relay_url: wss://file.postern.example",
		"token_file: /etc/postern/agent.token",
		"mode: enforce",
		"tunnels: 2",
		"dns:",
		"  servers: [10.0.0.2]",
	)
	tests := map[string]struct {
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		"relay list": {
			env: map[string]string{EnvRelayURL: "wss://a.postern.example, wss://b.postern.example,"},
			check: func(t *testing.T, c *Config) {
				require.Len(t, c.RelayURLs, 2)
				assert.Equal(t, "wss://a.postern.example", c.RelayURLs[0].String())
				assert.Equal(t, "wss://b.postern.example", c.RelayURLs[1].String())
			},
		},
		"scalars": {
			env: map[string]string{
				EnvMode:         "report",
				EnvTunnels:      "5",
				EnvStatusListen: "127.0.0.1:9090",
				EnvAuditLog:     "/var/log/postern/audit.jsonl",
				EnvEgressProxy:  "http://proxy.corp.example:3128",
				EnvCAFile:       "/etc/ssl/corp.pem",
				EnvDNSServers:   "10.1.1.1,10.1.1.2:5353",
			},
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, ModeReport, c.Mode)
				assert.Equal(t, 5, c.Tunnels)
				assert.Equal(t, "127.0.0.1:9090", c.StatusListen)
				assert.Equal(t, "/var/log/postern/audit.jsonl", c.AuditLog)
				require.NotNil(t, c.EgressProxy)
				assert.Equal(t, "proxy.corp.example:3128", c.EgressProxy.Host)
				assert.Equal(t, "/etc/ssl/corp.pem", c.CAFile)
				assert.Equal(t, []string{"10.1.1.1:53", "10.1.1.2:5353"}, c.DNSServers)
			},
		},
		"relative token file stays relative to the working directory": {
			env: map[string]string{EnvTokenFile: "secrets/agent.token"},
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, "secrets/agent.token", c.TokenFile)
			},
		},
		"empty values are ignored": {
			env: map[string]string{EnvMode: "", EnvRelayURL: " ", EnvTunnels: ""},
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, ModeEnforce, c.Mode)
				assert.Equal(t, 2, c.Tunnels)
				assert.Equal(t, "wss://file.postern.example", c.RelayURLs[0].String())
			},
		},
		"unrelated variables are ignored": {
			env: map[string]string{"POSTERN_ALLOW": "everything", EnvAgentToken: "tok"},
			check: func(t *testing.T, c *Config) {
				assert.Empty(t, c.Allow)
			},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := Parse("agent.yaml", file, envOf(tt.env))
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

func TestEnvOverrideProblems(t *testing.T) {
	tests := map[string]struct {
		env  map[string]string
		want string
	}{
		"tunnels not a number": {
			env:  map[string]string{EnvTunnels: "two"},
			want: `environment POSTERN_TUNNELS: want an integer, got "two"`,
		},
		"tunnels out of range": {
			env:  map[string]string{EnvTunnels: "0"},
			want: `environment POSTERN_TUNNELS: tunnels: 0 is out of range; want 1 to 16`,
		},
		"ws to a remote relay": {
			env: map[string]string{EnvRelayURL: "wss://ok.postern.example,ws://relay.postern.example"},
			want: `environment POSTERN_RELAY_URL: relay_url: "ws://relay.postern.example": ws:// is unencrypted, so the ` +
				`agent token and every tunnelled byte would cross the network in clear text; use wss://, or ws:// only ` +
				`to a loopback relay (127.0.0.0/8, ::1, localhost) for testing`,
		},
		"mode": {
			env:  map[string]string{EnvMode: "audit"},
			want: `environment POSTERN_MODE: mode: unknown mode "audit"; want enforce or report`,
		},
		"proxy password never echoed": {
			env:  map[string]string{EnvEgressProxy: "ftp://user:pa55word@proxy.corp.example"},
			want: `environment POSTERN_EGRESS_PROXY: egress_proxy: "ftp://user:xxxxx@proxy.corp.example": scheme must be http:// or https://`,
		},
		"proxy that does not parse": {
			env:  map[string]string{EnvEgressProxy: "http://user:pa55word@proxy.corp.example:port"},
			want: `environment POSTERN_EGRESS_PROXY: egress_proxy: not a valid URL: invalid port ":port" after host`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("agent.yaml", yml("relay_url: wss://file.postern.example"), envOf(tt.env))
			require.Error(t, err)
			got := problemsOf(t, err)
			require.Len(t, got, 1, "%q", got)
			assert.Equal(t, tt.want, got[0])
			assert.NotContains(t, got[0], "pa55word")
		})
	}
	t.Run("relay from environment alone", func(t *testing.T) {
		c, err := Parse("agent.yaml", yml("mode: report"), envOf(map[string]string{EnvRelayURL: "wss://env.postern.example"}))
		require.NoError(t, err)
		assert.Equal(t, "wss://env.postern.example", c.RelayURLs[0].String())
	})
	t.Run("nil getenv is an empty environment", func(t *testing.T) {
		_, err := Parse("agent.yaml", yml("mode: report"), nil)
		assert.ErrorContains(t, err, "relay_url is missing")
	})
}
