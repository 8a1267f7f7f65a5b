package history

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/postern/postern/relay/api"
)

var t0 = time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)

func move(typ, from, to string, at time.Duration) api.Event {
	return api.Event{Type: typ, From: from, To: to, Time: t0.Add(at)}
}

func TestEntriesDurations(t *testing.T) {
	evs := []api.Event{
		move("tunnel", "never_connected", "connected", 0),
		move("allowlist", "unknown", "configured", time.Second),
		move("tunnel", "connected", "disconnected", time.Hour),
		move("tunnel", "disconnected", "flapping", time.Hour),
		move("tunnel", "disconnected", "connected", time.Hour+time.Minute),
		move("tunnel", "flapping", "connected", time.Hour+10*time.Minute),
	}
	now := t0.Add(2 * time.Hour)
	got := Entries(evs, now)
	want := []struct {
		seconds float64
		ongoing bool
	}{
		{3600, false},   // connected until the disconnect
		{7199, true},    // the allowlist's only move holds
		{60, false},     // disconnected for a minute
		{600, false},    // flapping until it settled
		{3540, true},    // connected since, flapping announcements aside
		{50 * 60, true}, // not flapping since it settled
	}
	for i, w := range want {
		assert.InDelta(t, w.seconds, got[i].DurationSeconds, 0.001, "entry %d", i)
		assert.Equal(t, w.ongoing, got[i].Ongoing, "entry %d", i)
		assert.Equal(t, evs[i], got[i].Event)
	}
}

func TestRatio(t *testing.T) {
	start, now := t0, t0.Add(10*time.Hour)
	for name, tc := range map[string]struct {
		evs    []api.Event
		tunnel string
		want   float64
	}{
		"no move, up":           {nil, "connected", 1},
		"no move, down":         {nil, "disconnected", 0},
		"degraded counts as up": {nil, "degraded", 1},
		"never connected":       {nil, "never_connected", 0},
		"down for the first hour, then up": {[]api.Event{
			move("tunnel", "disconnected", "connected", time.Hour)}, "connected", 0.9},
		"a move before the period is ignored": {[]api.Event{
			move("tunnel", "connected", "disconnected", -time.Hour),
			move("tunnel", "disconnected", "connected", 5*time.Hour)}, "connected", 0.5},
		"flapping announcements are not moves": {[]api.Event{
			move("tunnel", "connected", "disconnected", 2*time.Hour),
			move("tunnel", "disconnected", "flapping", 2*time.Hour),
			move("tunnel", "disconnected", "connected", 3*time.Hour),
			move("tunnel", "flapping", "connected", 4*time.Hour)}, "flapping", 0.9},
		"other kinds are ignored": {[]api.Event{
			move("auth", "active", "failing", time.Hour)}, "connected", 1},
	} {
		t.Run(name, func(t *testing.T) {
			assert.InDelta(t, tc.want, Ratio(tc.evs, tc.tunnel, start, now), 1e-9)
		})
	}
	assert.Equal(t, 1.0, Ratio(nil, "connected", now, now), "an empty period counts its state")
}
