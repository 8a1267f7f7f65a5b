package agent

import (
	"cmp"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
)

// runAgent starts Run with opts over the test defaults and, when the test
// ends, cancels it and waits for it to return. Zero fields of opts keep
// the test defaults: DefaultOptions with short backoff and drain.
func runAgent(t *testing.T, opts Options) *Agent {
	t.Helper()
	a, err := New(testOptions(t, opts))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel", err)
			}
		case <-time.After(testkit.WaitTimeout):
			t.Errorf("Run did not return after cancel")
		}
	})
	return a
}

// testOptions is DefaultOptions tuned for tests, with every non-zero
// field of opts on top.
func testOptions(t *testing.T, opts Options) Options {
	t.Helper()
	o := DefaultOptions()
	o.Config, o.Logger, o.Audit = opts.Config, opts.Logger, opts.Audit
	o.Token = cmp.Or(opts.Token, testkit.Token)
	o.Version = cmp.Or(opts.Version, "1.2.3-test")
	o.BackoffBase = cmp.Or(opts.BackoffBase, 20*time.Millisecond)
	o.BackoffMax = cmp.Or(opts.BackoffMax, 100*time.Millisecond)
	o.RefusedTokenPause = cmp.Or(opts.RefusedTokenPause, time.Millisecond)
	o.RevokedPause = cmp.Or(opts.RevokedPause, time.Millisecond)
	o.RespreadAfter = cmp.Or(opts.RespreadAfter, o.RespreadAfter)
	o.DrainTimeout = cmp.Or(opts.DrainTimeout, time.Second) // a stream a test leaves open must not hold cleanup
	o.Resolver = opts.Resolver
	if o.Resolver == nil {
		o.Resolver = testkit.NewResolver(t, "127.0.0.1:1", 0)
	}
	if opts.Dial != nil {
		o.Dial = opts.Dial
	}
	return o
}
