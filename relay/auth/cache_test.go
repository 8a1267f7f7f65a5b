package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/store/sqlite"
)

// countingStore is a real store that counts the lookups of the CONNECT
// path, and fails them while down is set.
type countingStore struct {
	store.Store
	keys, conns atomic.Int64
	down        atomic.Bool
}

var errStoreDown = errors.New("store: read tcp 10.0.0.5:5432: connection reset by peer")

func (c *countingStore) GetAPIKey(ctx context.Context, id string) (store.APIKey, error) {
	c.keys.Add(1)
	if c.down.Load() {
		return store.APIKey{}, errStoreDown
	}
	return c.Store.GetAPIKey(ctx, id)
}

func (c *countingStore) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	c.conns.Add(1)
	if c.down.Load() {
		return store.Connection{}, errStoreDown
	}
	return c.Store.GetConnection(ctx, id)
}

// proxyFixture stores a connection and a key of its workspace, and returns
// an Authenticator over the counting store with the key's header.
func proxyFixture(t *testing.T) (*Authenticator, *countingStore, store.Connection, string) {
	t.Helper()
	return proxyFixtureWith(t, Config{}, slog.New(slog.DiscardHandler))
}

// proxyFixtureWith is proxyFixture with the Authenticator's config and
// logger.
func proxyFixtureWith(t *testing.T, cfg Config, log *slog.Logger) (*Authenticator, *countingStore, store.Connection, string) {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "relay.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	tok, err := secret.New(secret.AgentTokenPrefix)
	require.NoError(t, err)
	now := time.Now().UTC()
	conn := store.Connection{ID: "conn1", Workspace: "w", Name: "n", CreatedAt: now}
	require.NoError(t, st.CreateConnection(ctx, conn, store.Token{ID: tok.ID, ConnectionID: conn.ID, Hash: tok.Hash, CreatedAt: now}))
	key, err := secret.New(secret.APIKeyPrefix)
	require.NoError(t, err)
	require.NoError(t, st.CreateAPIKey(ctx, store.APIKey{ID: key.ID, Name: "k", Workspace: "w", Hash: key.Hash, CreatedAt: now}))
	cs := &countingStore{Store: st}
	a, err := New(cs, cfg, secret.Verify, nil, log)
	require.NoError(t, err)
	header := "Basic " + base64.StdEncoding.EncodeToString([]byte(conn.ID+":"+key.Display))
	return a, cs, conn, header
}

func proxyAuth(a *Authenticator, header string) (store.Connection, store.APIKey, string) {
	r := httptest.NewRequest("CONNECT", "http://h:443", nil)
	r.Header.Set("Proxy-Authorization", header)
	c, k, e := a.Proxy(r)
	if e != nil {
		return c, k, string(e.Reason) + ": " + e.Message
	}
	return c, k, ""
}

func TestProxyAuthReadsTheStoreOncePerRecordTTL(t *testing.T) {
	a, cs, conn, header := proxyFixture(t)
	for range 3 {
		c, _, refused := proxyAuth(a, header)
		require.Empty(t, refused)
		assert.Equal(t, conn.ID, c.ID)
	}
	assert.Equal(t, int64(1), cs.keys.Load(), "key lookups for three CONNECTs")
	assert.Equal(t, int64(1), cs.conns.Load(), "connection lookups for three CONNECTs")

	// A wrong secret for the cached key: refused, after a store read like
	// an unknown key's, so both take one path.
	display := basicKey(t, header)
	other, err := secret.New(secret.APIKeyPrefix)
	require.NoError(t, err)
	head := len(secret.APIKeyPrefix) + 1 + len(other.ID) // <prefix>_<id>, then _<secret>
	wrong := display[:head] + other.Display[head:]
	require.NotEqual(t, display, wrong)
	_, _, refused := proxyAuth(a, "Basic "+base64.StdEncoding.EncodeToString([]byte(conn.ID+":"+wrong)))
	assert.Equal(t, "PROXY_AUTH_REQUIRED: Proxy-Authorization must be Basic base64(<connection id>:<api key>) with a key valid for that connection", refused)
	assert.Equal(t, int64(2), cs.keys.Load(), "a refused secret reads the store")
	_, _, refused = proxyAuth(a, header)
	assert.Empty(t, refused, "the good secret still passes")
}

// basicKey returns the API key inside a Basic proxy header.
func basicKey(t *testing.T, header string) string {
	dec, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(header, "Basic "))
	require.NoError(t, err)
	_, key, _ := strings.Cut(string(dec), ":")
	return key
}

func TestRevokedKeyIsRefusedAtOnceDespiteTheCache(t *testing.T) {
	a, cs, _, header := proxyFixture(t)
	_, k, refused := proxyAuth(a, header)
	require.Empty(t, refused)
	_, err := cs.RevokeAPIKey(t.Context(), k.ID, time.Now().UTC())
	require.NoError(t, err)
	a.CutKey(k.ID) // what the API (or the cluster's announcement) does on revoke

	_, _, refused = proxyAuth(a, header)
	assert.Contains(t, refused, "PROXY_AUTH_REQUIRED: API key "+k.ID+" was revoked at ")
}

func TestRevokedConnectionIsSeenAtOnceDespiteTheCache(t *testing.T) {
	a, cs, conn, header := proxyFixture(t)
	c, _, refused := proxyAuth(a, header)
	require.Empty(t, refused)
	require.False(t, c.Revoked())
	_, err := cs.RevokeConnection(t.Context(), conn.ID, time.Now().UTC())
	require.NoError(t, err)
	a.ForgetConnection(conn.ID)

	c, _, refused = proxyAuth(a, header)
	require.Empty(t, refused)
	assert.True(t, c.Revoked(), "the next CONNECT reads the revoked connection")
}

func TestALookupThatRacedAForgetIsNotKept(t *testing.T) {
	var c records[string]
	now := time.Now()
	_, ok, gen := c.get("k", now)
	require.False(t, ok)
	c.forget("k") // a revocation lands while the store is being read
	c.put("k", "read before the revocation", now, gen)
	_, ok, _ = c.get("k", now)
	assert.False(t, ok, "a record read before a forget must not be served")

	_, _, gen = c.get("k", now)
	c.put("k", "fresh", now, gen)
	v, ok, _ := c.get("k", now.Add(RecordTTL-time.Millisecond))
	assert.True(t, ok)
	assert.Equal(t, "fresh", v)
	_, ok, _ = c.get("k", now.Add(RecordTTL))
	assert.False(t, ok, "a record older than RecordTTL is read again")
}

// A CONNECT refused because the store failed says RELAY_UNAVAILABLE, and
// the relay's log says what the store said (never the key).
func TestAStoreFailureIsLoggedWithWhatTheStoreSaid(t *testing.T) {
	var logs bytes.Buffer
	a, cs, _, header := proxyFixtureWith(t, Config{StoreEveryTime: true}, slog.New(slog.NewTextHandler(&logs, nil)))
	_, _, refused := proxyAuth(a, header)
	require.Empty(t, refused)

	cs.down.Store(true)
	_, _, refused = proxyAuth(a, header)
	assert.Equal(t, "RELAY_UNAVAILABLE: relay store unavailable", refused)
	assert.Contains(t, logs.String(), "api key: store error")
	assert.Contains(t, logs.String(), errStoreDown.Error())
	assert.NotContains(t, logs.String(), basicKey(t, header)[len(secret.APIKeyPrefix)+1:], "no part of the key past its prefix")
}
