package auth

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/postern/postern/relay/store"
)

// useRecorder is a store that only records MarkAPIKeyUsed calls.
type useRecorder struct {
	store.Store
	marks []string
}

func (u *useRecorder) MarkAPIKeyUsed(_ context.Context, id string, at time.Time) error {
	u.marks = append(u.marks, id+"@"+at.Format(time.TimeOnly))
	return nil
}

func TestUseIsWrittenAtMostOncePerInterval(t *testing.T) {
	rec := &useRecorder{}
	a := &Authenticator{store: rec, log: slog.New(slog.DiscardHandler)}
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	k1, k2 := store.APIKey{ID: "k1"}, store.APIKey{ID: "k2"}
	a.used(k1, t0)
	a.used(k1, t0.Add(UseRecordInterval-time.Second))
	assert.Empty(t, rec.marks, "no request waits for the store")
	a.FlushUses(t.Context())
	a.used(k2, t0.Add(time.Second))
	a.FlushUses(t.Context())
	a.FlushUses(t.Context())
	a.used(k1, t0.Add(UseRecordInterval))
	a.FlushUses(t.Context())
	assert.Equal(t, []string{"k1@12:00:00", "k2@12:00:01", "k1@12:01:00"}, rec.marks)
}
