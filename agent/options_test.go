package agent

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/agent/session"
	"github.com/postern/postern/agent/stream"
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
				"refused token pause 0s", "backoff base 0s"},
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
func TestSpecTimers(t *testing.T) {
	spec, err := os.ReadFile("../protocol/spec.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(spec), "## 10. Timers")
	require.True(t, ok, "spec.md has a timers section")
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string][2]string{} // timer -> default, where
	for line := range strings.Lines(section) {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) == 3 {
			rows[strings.TrimSpace(cells[0])] = [2]string{strings.TrimSpace(cells[1]), strings.TrimSpace(cells[2])}
		}
	}
	dur := func(s string) time.Duration {
		t.Helper()
		d, err := time.ParseDuration(strings.NewReplacer(" min", "m", " s", "s").Replace(s))
		require.NoError(t, err, "duration %q", s)
		return d
	}
	assert.Equal(t, dur(rows["Request frame wait after stream open"][0]), stream.RequestTimeout)
	assert.Equal(t, dur(rows["Open timeout (stream, request, result)"][0]), DefaultOpenTimeout)
	assert.Equal(t, dur(rows["Idle data stream"][0]), DefaultIdleTimeout)

	backoff := regexp.MustCompile(`^(\S+ s) doubling to (\S+ s)$`).FindStringSubmatch(rows["Reconnect backoff"][0])
	require.Len(t, backoff, 3, "reconnect backoff row: %q", rows["Reconnect backoff"][0])
	assert.Equal(t, dur(backoff[1]), DefaultBackoffBase)
	assert.Equal(t, dur(backoff[2]), DefaultBackoffMax)

	handshake := regexp.MustCompile(`agent: (\S+ s) dial \+ (\S+ s) Hello/Welcome`).FindStringSubmatch(rows["Handshake (upgrade through Welcome)"][1])
	require.Len(t, handshake, 3, "handshake row: %q", rows["Handshake (upgrade through Welcome)"][1])
	assert.Equal(t, dur(handshake[1]), session.DialTimeout)
	assert.Equal(t, dur(handshake[2]), session.HelloTimeout)
}
