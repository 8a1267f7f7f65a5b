package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/postern/postern/relay"
)

func TestServeConfigMapsOntoRelayDefaults(t *testing.T) {
	def := relay.DefaultConfig()
	got := serveConfig{}.relayConfig()
	assert.Equal(t, def.AuthFailuresPerSource, got.AuthFailuresPerSource, "zero keeps the default")
	assert.Equal(t, def.HeartbeatInterval, got.HeartbeatInterval)
	assert.Zero(t, got.ProxyRatePerKey, "no proxy rate unless set")
	assert.Equal(t, relay.DefaultMaxTunnelsPerConnection, got.MaxTunnelsPerConnection)
	assert.Zero(t, serveConfig{MaxTunnelsPerConnection: -1}.relayConfig().MaxTunnelsPerConnection, "a negative cap turns it off")
	assert.Equal(t, 4, serveConfig{MaxTunnelsPerConnection: 4}.relayConfig().MaxTunnelsPerConnection)

	assert.InDelta(t, relay.DefaultTunnelHandshakesPerSecond, got.TunnelHandshakesPerSecond, 0)
	assert.Equal(t, relay.DefaultTunnelHandshakeBurst, got.TunnelHandshakeBurst)
	assert.Zero(t, serveConfig{TunnelHandshakesPerSecond: -1}.relayConfig().TunnelHandshakesPerSecond, "a negative rate turns pacing off")
	paced := serveConfig{TunnelHandshakesPerSecond: 95}.relayConfig()
	assert.Equal(t, 10, paced.TunnelHandshakeBurst, "a rate without a burst takes a tenth of it, rounded up")
	assert.Equal(t, 3, serveConfig{TunnelHandshakesPerSecond: 95, TunnelHandshakeBurst: 3}.relayConfig().TunnelHandshakeBurst)
	assert.Equal(t, def.TokenOverlap, got.TokenOverlap)

	got = serveConfig{
		NodeID: "relay-a", HeartbeatInterval: 3 * time.Second, AuthFailuresPerSource: -1, AuthFailuresPerCredential: 7,
		ProxyRatePerKey: 2.5, ShutdownDelay: 5 * time.Second, TokenOverlap: time.Hour,
	}.relayConfig()
	assert.Equal(t, "relay-a", got.NodeID)
	assert.Equal(t, 3*time.Second, got.HeartbeatInterval)
	assert.Zero(t, got.AuthFailuresPerSource, "a negative limit turns it off")
	assert.Equal(t, 7, got.AuthFailuresPerCredential)
	assert.Equal(t, 3, got.ProxyBurstPerKey, "the burst defaults to the rate rounded up")
	assert.Equal(t, 5*time.Second, got.ShutdownDelay)
	assert.Equal(t, time.Hour, got.TokenOverlap)
}

func TestServeConfigEdgeKeys(t *testing.T) {
	got := serveConfig{AuthLookupsWhileLimited: -1}.relayConfig()
	assert.Zero(t, got.AuthLookupsWhileLimited, "a negative budget gives limited sources no lookups")
	got = serveConfig{}.relayConfig()
	assert.Equal(t, float64(relay.DefaultAuthLookupsWhileLimited), got.AuthLookupsWhileLimited, "zero keeps the default")
	got = serveConfig{AuthLookupsWhileLimited: 5}.relayConfig()
	assert.Equal(t, 5.0, got.AuthLookupsWhileLimited)

	tr, err := serveConfig{TrustedProxies: []string{"10.0.0.0/8", "192.0.2.10"}}.trusted()
	assert.NoError(t, err)
	assert.Len(t, tr, 2)
	_, err = serveConfig{TrustedProxies: []string{"10.0.0.0/8", "lb.example"}}.trusted()
	assert.ErrorContains(t, err, `--trusted-proxies: trusted proxy "lb.example"`)
}

func TestDatabasePasswordDetection(t *testing.T) {
	tests := map[string]struct {
		dsn      string
		password bool
		redacted string
	}{
		"user and password": {"postgres://u:s3cret@db:5432/x", true, "postgres://u:xxxxx@db:5432/x"},
		"password param":    {"postgres://u@db/x?password=s3cret&sslmode=require", true, "postgres://u@db/x?password=xxxxx&sslmode=require"},
		"user only":         {"postgres://u@db/x", false, "postgres://u@db/x"},
		"no user":           {"postgresql://db/x?sslmode=disable", false, "postgresql://db/x?sslmode=disable"},
		"sqlite":            {"sqlite:/var/lib/relay.db", false, "sqlite:/var/lib/relay.db"},
		"at sign in secret": {"postgres://u:p%40ss@db/x", true, "postgres://u:xxxxx@db/x"},
		"unparsable":        {"postgres://u:s3cret@db:port/x", true, "[unparsable URL]"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.password, dsnHasPassword(tc.dsn))
			assert.Equal(t, tc.redacted, redactDSN(tc.dsn))
			assert.NotContains(t, redactDSN(tc.dsn), "s3cret")
		})
	}
}
