package ratelimit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPacerSpreadsACrowd(t *testing.T) {
	p := NewPacer(10, 2, time.Minute)
	t0 := time.Unix(1_700_000_000, 0)

	ok, _ := p.Admit(t0)
	assert.True(t, ok, "first of the burst")
	ok, _ = p.Admit(t0)
	assert.True(t, ok, "second of the burst")
	ok, wait := p.Admit(t0)
	assert.False(t, ok, "the burst is spent")
	assert.Equal(t, 100*time.Millisecond, wait, "the first slot the schedule frees")
	_, wait = p.Admit(t0)
	assert.Equal(t, 200*time.Millisecond, wait, "each one turned away gets a slot of its own")
	ok, _ = p.Admit(t0.Add(100 * time.Millisecond))
	assert.True(t, ok, "back at its slot, it is admitted")
}

// TestPacerRestartedFleet turns 1,000 events up in the same instant, each
// coming back at its slot until admitted: every one gets in, never more
// than rate+burst in any second, in about count/rate seconds.
func TestPacerRestartedFleet(t *testing.T) {
	const rate, burst, fleet = 50, 5, 1000
	p := NewPacer(rate, burst, time.Minute)
	t0 := time.Unix(1_700_000_000, 0)
	pending := map[time.Time]int{t0: fleet}
	perSecond := map[int64]int{}
	var last time.Time
	for len(pending) > 0 {
		at := earliest(pending)
		n := pending[at]
		delete(pending, at)
		for range n {
			if ok, wait := p.Admit(at); ok {
				perSecond[int64(at.Sub(t0)/time.Second)]++
				last = at
			} else {
				require.Positive(t, wait)
				pending[at.Add(wait)]++
			}
		}
	}
	total := 0
	for sec, n := range perSecond {
		assert.LessOrEqual(t, n, rate+burst, "second %d", sec)
		total += n
	}
	assert.Equal(t, fleet, total)
	assert.InDelta(t, float64(fleet)/rate, last.Sub(t0).Seconds(), 1, "the crowd drains at the rate")
}

func TestPacerCapsTheWaitAndNilAdmitsAll(t *testing.T) {
	p := NewPacer(1, 1, 5*time.Second)
	t0 := time.Unix(1_700_000_000, 0)
	ok, _ := p.Admit(t0)
	require.True(t, ok)
	var wait time.Duration
	for range 20 {
		_, wait = p.Admit(t0)
	}
	assert.Equal(t, 5*time.Second, wait, "no slot beyond maxWait")

	var off *Pacer = NewPacer(0, 1, time.Second)
	assert.Nil(t, off)
	ok, wait = off.Admit(t0)
	assert.True(t, ok)
	assert.Zero(t, wait)
}

func earliest(m map[time.Time]int) time.Time {
	var first time.Time
	for at := range m {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return first
}
