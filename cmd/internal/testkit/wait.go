package testkit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pollInterval is how often WaitFor checks: short next to the seconds a
// test waits for, so the durations it returns are measurements.
const pollInterval = 10 * time.Millisecond

// WaitFor polls cond until it holds and returns how long that took; a
// test asserts on it when the delay is the point (how fast a reconnect
// is). If cond still does not hold after within, the test fails with what.
func WaitFor(tb testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > within {
			require.FailNowf(tb, "timed out", "%s: not within %s", what, within)
		}
		time.Sleep(pollInterval)
	}
}
