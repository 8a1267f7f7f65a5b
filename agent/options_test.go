package agent

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
)

func TestOptionsValidate(t *testing.T) {
	cfg := testkit.ParseConfig(t, "relay_url: ws://127.0.0.1:1\nallow: []\n")
	valid := func() Options {
		o := DefaultOptions()
		o.Config, o.Token, o.Resolver = cfg, testkit.Token, testkit.NewResolver(t, "127.0.0.1:1", 0)
		return o
	}
	require.NoError(t, valid().Validate(), "the defaults with the required fields set are valid")

	tests := map[string]struct {
		change func(*Options)
		want   []string // every problem is named
	}{
		"zero options": {
			change: func(o *Options) { *o = Options{} },
			want: []string{"a validated config is required", "token is required", "resolver is required",
				"dial function is required", "open timeout 0s", "idle timeout 0s", "drain timeout 0s",
				"refused token pause 0s", "revoked pause 0s", "backoff base 0s", "respread after 0s"},
		},
		"no relay url":         {change: func(o *Options) { c := *cfg; c.RelayURLs = nil; o.Config = &c }, want: []string{"relay_url is required"}},
		"negative open":        {change: func(o *Options) { o.OpenTimeout = -time.Second }, want: []string{"open timeout -1s: must be positive"}},
		"zero idle":            {change: func(o *Options) { o.IdleTimeout = 0 }, want: []string{"idle timeout 0s"}},
		"max below base":       {change: func(o *Options) { o.BackoffMax = o.BackoffBase / 2 }, want: []string{"backoff max 250ms: must be at least backoff base 500ms"}},
		"zero drain and pause": {change: func(o *Options) { o.DrainTimeout, o.RefusedTokenPause = 0, 0 }, want: []string{"drain timeout 0s", "refused token pause 0s"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := valid()
			tc.change(&o)
			err := o.Validate()
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			_, err = New(o)
			assert.Error(t, err, "New refuses what Validate refuses, rather than patching it")
		})
	}
}

func TestDefaultOptions(t *testing.T) {
	o := DefaultOptions()
	assert.NotNil(t, o.Dial)
	assert.Equal(t, DefaultOpenTimeout, o.OpenTimeout)
	assert.Equal(t, DefaultIdleTimeout, o.IdleTimeout)
	assert.Equal(t, DefaultDrainTimeout, o.DrainTimeout)
	assert.Equal(t, DefaultRefusedTokenPause, o.RefusedTokenPause)
	assert.Equal(t, DefaultBackoffBase, o.BackoffBase)
	assert.Equal(t, DefaultBackoffMax, o.BackoffMax)
}

// The agent's timers are the ones protocol/spec.md section 10 names.
