package auth

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/store"
)

func ended(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

func TestHoldsEndWithTheirKey(t *testing.T) {
	var a Authenticator
	k1, k2 := store.APIKey{ID: "k1"}, store.APIKey{ID: "k2"}
	one, release1 := a.Hold(t.Context(), k1)
	defer release1()
	two, release2 := a.Hold(t.Context(), k1)
	other, releaseOther := a.Hold(t.Context(), k2)
	defer releaseOther()
	assert.ElementsMatch(t, []string{"k1", "k2"}, a.HeldKeys())

	release2()
	assert.True(t, ended(two), "release ends the context")
	assert.Equal(t, 1, a.CutKey("k1"), "a released stream is no longer held")
	assert.True(t, ended(one))
	assert.ErrorIs(t, context.Cause(one), ErrKeyEnded)
	assert.False(t, ended(other), "another key's stream goes on")

	late, releaseLate := a.Hold(t.Context(), k1)
	defer releaseLate()
	assert.True(t, ended(late), "a stream held just after its key was cut ends too")
	assert.ErrorIs(t, context.Cause(late), ErrKeyEnded)
}

func TestHoldEndsWhenTheKeyExpires(t *testing.T) {
	var a Authenticator
	until := time.Now().Add(50 * time.Millisecond)
	ctx, release := a.Hold(t.Context(), store.APIKey{ID: "k", ExpiresAt: &until})
	defer release()
	assert.False(t, ended(ctx))
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		require.Fail(t, "the hold outlived its key")
	}
	assert.False(t, time.Now().Before(until))
	assert.ErrorIs(t, context.Cause(ctx), ErrKeyEnded)

	past := time.Now().Add(-time.Second)
	gone, releaseGone := a.Hold(t.Context(), store.APIKey{ID: "old", ExpiresAt: &past})
	defer releaseGone()
	assert.True(t, ended(gone), "an expired key holds nothing")
}
