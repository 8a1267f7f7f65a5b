package ratelimit

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/internal/fakeclock"
)

func TestLimiterFailuresPerWindow(t *testing.T) {
	clk := fakeclock.New()
	l := PerWindow(10, time.Minute, 100, clk.Now)

	assert.Zero(t, l.Wait("a"), "an unknown key is a full bucket")
	assert.False(t, l.Charged("a"))
	for i := range 9 {
		assert.False(t, l.Charge("a"), "charge %d", i+1)
	}
	assert.Zero(t, l.Wait("a"), "nine failures leave one attempt")
	assert.True(t, l.Charge("a"), "the tenth failure empties the bucket")
	assert.Equal(t, 6*time.Second, l.Wait("a"), "one attempt refills every minute/10")
	assert.False(t, l.Charge("a"), "charging an empty bucket keeps it empty and is no news")
	assert.Equal(t, 6*time.Second, l.Wait("a"), "and does not push the wait further out")
	assert.Zero(t, l.Wait("b"), "other keys are untouched")

	clk.Advance(4 * time.Second)
	assert.Equal(t, 2*time.Second, l.Wait("a"))
	clk.Advance(2 * time.Second)
	assert.Zero(t, l.Wait("a"))
	assert.True(t, l.Charged("a"), "the bucket is not full again yet")
	clk.Advance(time.Minute)
	assert.False(t, l.Charged("a"), "a full minute refills everything")
}

func TestLimiterTake(t *testing.T) {
	clk := fakeclock.New()
	l := New(2, 3, 100, clk.Now) // 2/s, burst 3

	for i := range 3 {
		_, ok := l.Take("k")
		require.True(t, ok, "request %d of the burst", i+1)
	}
	wait, ok := l.Take("k")
	assert.False(t, ok)
	assert.Equal(t, 500*time.Millisecond, wait)
	clk.Advance(250 * time.Millisecond)
	wait, ok = l.Take("k")
	assert.False(t, ok, "a refused take takes nothing")
	assert.Equal(t, 250*time.Millisecond, wait)
	clk.Advance(250 * time.Millisecond)
	_, ok = l.Take("k")
	assert.True(t, ok)
	_, ok = l.Take("other")
	assert.True(t, ok, "keys have their own buckets")
}

func TestLimiterIsBounded(t *testing.T) {
	clk := fakeclock.New()
	l := PerWindow(10, time.Minute, 100, clk.Now)
	for i := range 10_000 {
		l.Charge(fmt.Sprintf("k%d", i))
	}
	assert.Equal(t, 100, l.Size(), "a flood of keys keeps the table at its cap")

	for range 10 {
		l.Charge("hot")
	}
	for i := range 99 {
		l.Charge(fmt.Sprintf("n%d", i))
	}
	assert.NotZero(t, l.Wait("hot"), "the most recently charged keys stay")
	l.Charge("last")
	assert.Zero(t, l.Wait("hot"), "the least recently charged key is the one evicted")
}

func TestLimiterSweepsRefilledKeys(t *testing.T) {
	clk := fakeclock.New()
	l := PerWindow(10, time.Minute, 1000, clk.Now)
	for i := range 500 {
		l.Charge(fmt.Sprintf("old%d", i))
	}
	require.Equal(t, 500, l.Size())
	clk.Advance(time.Minute + time.Second)
	for i := range 300 {
		l.Charge(fmt.Sprintf("new%d", i))
	}
	// Each charge sweeps up to two refilled keys: 300 charges remove all
	// 500 old ones and nothing else.
	assert.Equal(t, 300, l.Size())
}
