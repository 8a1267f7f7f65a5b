package stopsignal

import (
	"context"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFirstSignalStopsSecondForces(t *testing.T) {
	var forced atomic.Int32
	ctx, stop := Notify(context.Background(), slog.New(slog.DiscardHandler), func() { forced.Add(1) })
	defer stop()

	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGTERM))
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("first SIGTERM did not start the stop")
	}
	assert.Zero(t, forced.Load(), "one signal is a graceful stop")

	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGTERM))
	require.Eventually(t, func() bool { return forced.Load() == 1 }, 5*time.Second, 5*time.Millisecond,
		"the second signal forces")
}
