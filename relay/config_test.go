package relay

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/store"
)

// nopStore satisfies Config's required store for tests that never use it.
type nopStore struct{ store.Store }

func TestConfigRejectsBadProxyRate(t *testing.T) {
	for name, rate := range map[string]float64{"negative": -1, "infinite": math.Inf(1), "nan": math.NaN()} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Store, cfg.ProxyRatePerKey, cfg.ProxyBurstPerKey = nopStore{}, rate, 1
			_, err := New(cfg)
			assert.ErrorContains(t, err, "proxy rate")
		})
	}
	cfg := DefaultConfig()
	cfg.Store, cfg.ProxyRatePerKey = nopStore{}, 2.5
	_, err := New(cfg)
	assert.ErrorContains(t, err, "burst", "a rate needs a burst of at least 1: nothing is made up")
	assert.Equal(t, 10, cfg.AuthFailuresPerSource)
	assert.Equal(t, 20, cfg.AuthFailuresPerCredential)
	assert.Equal(t, 10*time.Second, cfg.HeaderTimeout)
}

// TestConfigRefusesInsteadOfPatching: every missing or out-of-range
// setting is named, none is silently replaced by a default.
func TestConfigRefusesInsteadOfPatching(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Store = nopStore{}
	require.NoError(t, cfg.Validate())
	cfg.Store, cfg.NodeID, cfg.OpenTimeout, cfg.MaxStreamsPerTunnel = nil, "", 0, 0
	err := cfg.Validate()
	require.Error(t, err)
	for _, want := range []string{"store is required", "node id is required", "open timeout", "max streams per tunnel"} {
		assert.ErrorContains(t, err, want)
	}
}
