package backoff

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestNextGrowsWithinJitterBoundsAndCaps(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, ceil := range want {
		ceil *= time.Millisecond
		d := b.Next()
		assert.GreaterOrEqual(t, d, ceil/2, "attempt %d", i)
		assert.LessOrEqual(t, d, ceil, "attempt %d", i)
	}
	b.Reset()
	assert.LessOrEqual(t, b.Next(), 100*time.Millisecond, "reset starts over")
}

func TestJitterSpreadsAFleet(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		b := New(time.Second, 30*time.Second)
		seen[b.Next()] = true
	}
	assert.Greater(t, len(seen), 150, "200 agents must not pick the same few delays")
}

func TestWaitStopsWithContext(t *testing.T) {
	b := New(time.Hour, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	assert.False(t, b.Wait(ctx))
	assert.Less(t, time.Since(start), time.Second)
}

func TestSleep(t *testing.T) {
	assert.True(t, Sleep(context.Background(), time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	assert.False(t, Sleep(ctx, time.Hour))
	assert.Less(t, time.Since(start), time.Second)
}
