package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/postern/postern/relay/store"
)

func ptr(t time.Time) *time.Time { return &t }

func TestAPIKeyActiveAt(t *testing.T) {
	base := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	at := func(d time.Duration) time.Time { return base.Add(d) }
	k := store.APIKey{ID: "k", CreatedAt: base}
	tests := map[string]struct {
		revoked, expires *time.Time
		at               time.Time
		want             bool
	}{
		"no end":              {at: at(100 * 365 * 24 * time.Hour), want: true},
		"before its expiry":   {expires: ptr(at(time.Hour)), at: at(time.Hour - time.Nanosecond), want: true},
		"at its expiry":       {expires: ptr(at(time.Hour)), at: at(time.Hour)},
		"after its expiry":    {expires: ptr(at(time.Hour)), at: at(2 * time.Hour)},
		"revoked":             {revoked: ptr(at(time.Minute)), at: at(0)},
		"revoked and expired": {revoked: ptr(at(time.Minute)), expires: ptr(at(time.Hour)), at: at(2 * time.Hour)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			k.RevokedAt, k.ExpiresAt = tc.revoked, tc.expires
			assert.Equal(t, tc.want, k.ActiveAt(tc.at))
		})
	}
}
