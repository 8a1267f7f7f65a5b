package tick

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestEveryStopsWithItsContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, time.Millisecond, func(time.Time) {
			calls++
			if calls == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Every did not return after its context ended")
	}
	assert.Equal(t, 3, calls)
}

func TestSleep(t *testing.T) {
	t.Parallel()
	assert.True(t, Sleep(t.Context(), time.Millisecond), "a sleep that ran its course")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start := time.Now()
	assert.False(t, Sleep(ctx, time.Hour), "a sleep cut short")
	assert.Less(t, time.Since(start), time.Second)
}
