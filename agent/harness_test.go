package agent

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
)

// runAgent starts Run and, when the test ends, cancels it and waits for it
// to return.
func runAgent(t *testing.T, opts Options) *Agent {
	t.Helper()
	if opts.Token == "" {
		opts.Token = testkit.Token
	}
	if opts.Version == "" {
		opts.Version = "1.2.3-test"
	}
	if opts.BackoffBase == 0 {
		opts.BackoffBase = 20 * time.Millisecond
	}
	if opts.BackoffMax == 0 {
		opts.BackoffMax = 100 * time.Millisecond
	}
	if opts.Resolver == nil {
		opts.Resolver = testkit.NewResolver(t, "127.0.0.1:1", 0)
	}
	if opts.RefusedTokenPause == 0 {
		opts.RefusedTokenPause = time.Millisecond
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = time.Second // a stream a test leaves open must not hold cleanup
	}
	a, err := New(opts)
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
