package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// MaxKeyLifetime is the furthest ahead an API key's expiry may be set.
const MaxKeyLifetime = 10 * 365 * 24 * time.Hour

// toAPIKey is a stored key as the API shows it: never its hash.
func toAPIKey(k store.APIKey) api.APIKey {
	return api.APIKey{ID: k.ID, Name: k.Name, Workspace: k.Workspace, Admin: k.Admin,
		CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt}
}

func utcOpt(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// APIKeys lists every API key, revoked and expired ones too (admin keys).
// The uses this node noted are written first, so last_used_at is current
// here (other nodes write theirs within auth.UseFlushInterval).
func (a *API) APIKeys(ctx context.Context, k store.APIKey) (api.APIKeyList, error) {
	if !k.Admin {
		return api.APIKeyList{}, errAdminOnly
	}
	a.auth.FlushUses(ctx)
	keys, err := a.store.ListAPIKeys(ctx)
	if err != nil {
		return api.APIKeyList{}, err
	}
	out := api.APIKeyList{APIKeys: make([]api.APIKey, 0, len(keys))}
	for _, key := range keys {
		out.APIKeys = append(out.APIKeys, toAPIKey(key))
	}
	return out, nil
}

// RevokeAPIKey revokes API key id (admin keys): from now on it is refused,
// and the proxy and event streams opened with it end at once on every
// node. Revoking a revoked key changes nothing; a key may revoke itself,
// but not the last active admin key, which would leave nobody able to
// manage the relay (a new bootstrap key is written only into an empty
// store).
func (a *API) RevokeAPIKey(ctx context.Context, k store.APIKey, id string) (api.APIKey, error) {
	if !k.Admin {
		return api.APIKey{}, errAdminOnly
	}
	a.revoking.Lock()
	err := a.keepAnAdmin(ctx, id)
	var revoked store.APIKey
	if err == nil {
		revoked, err = a.store.RevokeAPIKey(ctx, id, time.Now().UTC())
	}
	a.revoking.Unlock()
	if errors.Is(err, store.ErrNotFound) {
		return api.APIKey{}, protocol.Errorf(protocol.APIKeyNotFound, "no API key %q", id)
	}
	if err != nil {
		return api.APIKey{}, err
	}
	n := a.fanout.KeyRevoked(ctx, revoked.ID)
	a.log.Info("api key revoked", "key", revoked.ID, "streams_closed", n, "by_key", k.ID)
	return toAPIKey(revoked), nil
}

// keepAnAdmin refuses to revoke id when it is the last active admin key.
// Callers hold a.revoking; on a cluster, two admins revoking each other's
// keys at once through two different nodes may still both succeed.
func (a *API) keepAnAdmin(ctx context.Context, id string) error {
	keys, err := a.store.ListAPIKeys(ctx)
	if err != nil {
		return err
	}
	now, last := time.Now(), false
	for _, key := range keys {
		if !key.Admin || !key.ActiveAt(now) {
			continue
		}
		if key.ID != id {
			return nil
		}
		last = true
	}
	if last {
		return protocol.Errorf(protocol.InvalidRequest,
			"API key %s is the last active admin key: create another admin key first (api-keys rotate-admin does both)", id)
	}
	return nil
}

func (a *API) listAPIKeys(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	keys, err := a.APIKeys(r.Context(), k)
	answer(a, w, r, keys, err, http.StatusOK)
}

func (a *API) revokeAPIKey(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	key, err := a.RevokeAPIKey(r.Context(), k, r.PathValue("id"))
	answer(a, w, r, key, err, http.StatusOK)
}
