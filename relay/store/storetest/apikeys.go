package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/store"
)

func apiKey(id string, created time.Time) store.APIKey {
	return store.APIKey{ID: id, Name: "key " + id, Workspace: "acme", Hash: []byte("hash-of-" + id), CreatedAt: created}
}

func testListAPIKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	empty, err := s.ListAPIKeys(ctx)
	require.NoError(t, err)
	assert.NotNil(t, empty, "no key is an empty slice")
	assert.Empty(t, empty)

	later := apiKey("k-a", at(time.Minute))
	later.ExpiresAt = ptr(at(90 * 24 * time.Hour))
	first := apiKey("k-z", at(0))
	first.Admin, first.Workspace = true, ""
	revoked := apiKey("k-m", at(time.Minute)) // same time as k-a: ordered by id
	revoked.RevokedAt = ptr(at(time.Hour))
	for _, k := range []store.APIKey{later, first, revoked} {
		require.NoError(t, s.CreateAPIKey(ctx, k))
	}

	keys, err := s.ListAPIKeys(ctx)
	require.NoError(t, err)
	require.Len(t, keys, 3)
	for i, want := range []store.APIKey{first, later, revoked} {
		got := keys[i]
		assert.Equal(t, want.ID, got.ID, "position %d", i)
		assert.Equal(t, want.Name, got.Name)
		assert.Equal(t, want.Workspace, got.Workspace)
		assert.Equal(t, want.Admin, got.Admin)
		assertTimeEqual(t, &want.CreatedAt, &got.CreatedAt, "created_at")
		assertTimeEqual(t, want.RevokedAt, got.RevokedAt, "revoked_at")
		assertTimeEqual(t, want.ExpiresAt, got.ExpiresAt, "expires_at")
	}
	got, err := s.GetAPIKey(ctx, "k-a")
	require.NoError(t, err)
	assertTimeEqual(t, later.ExpiresAt, got.ExpiresAt, "expires_at of get")
}

func testRevokeAPIKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := apiKey("k1", at(0))
	k.ExpiresAt = ptr(at(24 * time.Hour))
	require.NoError(t, s.CreateAPIKey(ctx, k))

	got, err := s.RevokeAPIKey(ctx, "k1", at(time.Hour))
	require.NoError(t, err)
	assertTimeEqual(t, ptr(at(time.Hour)), got.RevokedAt, "revoked_at")
	assertTimeEqual(t, k.ExpiresAt, got.ExpiresAt, "expires_at is kept")
	assert.Equal(t, k.Hash, got.Hash)

	again, err := s.RevokeAPIKey(ctx, "k1", at(2*time.Hour))
	require.NoError(t, err)
	assertTimeEqual(t, ptr(at(time.Hour)), again.RevokedAt, "a second revocation keeps the first time")
	stored, err := s.GetAPIKey(ctx, "k1")
	require.NoError(t, err)
	assertTimeEqual(t, ptr(at(time.Hour)), stored.RevokedAt, "revoked_at as stored")

	_, err = s.RevokeAPIKey(ctx, "missing", at(0))
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testMarkAPIKeyUsed(t *testing.T, s store.Store) {
	ctx := t.Context()
	require.NoError(t, s.CreateAPIKey(ctx, apiKey("k1", at(0))))
	got, err := s.GetAPIKey(ctx, "k1")
	require.NoError(t, err)
	assert.Nil(t, got.LastUsedAt, "a new key was never used")

	require.NoError(t, s.MarkAPIKeyUsed(ctx, "k1", at(2*time.Minute)))
	require.NoError(t, s.MarkAPIKeyUsed(ctx, "k1", at(time.Minute)), "an older use is no error")
	keys, err := s.ListAPIKeys(ctx)
	require.NoError(t, err)
	require.Len(t, keys, 1)
	assertTimeEqual(t, ptr(at(2*time.Minute)), keys[0].LastUsedAt, "last_used_at never moves back")

	require.ErrorIs(t, s.MarkAPIKeyUsed(ctx, "missing", at(0)), store.ErrNotFound)
}
