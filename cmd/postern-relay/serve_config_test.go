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

	got = serveConfig{
		NodeID: "relay-a", HeartbeatInterval: 3 * time.Second, AuthFailuresPerSource: -1, AuthFailuresPerCredential: 7,
		ProxyRatePerKey: 2.5, ShutdownDelay: 5 * time.Second,
	}.relayConfig()
	assert.Equal(t, "relay-a", got.NodeID)
	assert.Equal(t, 3*time.Second, got.HeartbeatInterval)
	assert.Zero(t, got.AuthFailuresPerSource, "a negative limit turns it off")
	assert.Equal(t, 7, got.AuthFailuresPerCredential)
	assert.Equal(t, 3, got.ProxyBurstPerKey, "the burst defaults to the rate rounded up")
	assert.Equal(t, 5*time.Second, got.ShutdownDelay)
}
