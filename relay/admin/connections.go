package admin

import (
	"net/http"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/store"
)

func toAPIConnection(c store.Connection) api.Connection {
	return api.Connection{ID: c.ID, Name: c.Name, Workspace: c.Workspace, CreatedAt: c.CreatedAt, RevokedAt: c.RevokedAt}
}

func (a *API) createConnection(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	var req api.CreateConnectionRequest
	if !adminRequest(w, r, k, &req) {
		return
	}
	if req.Workspace == "" {
		req.Workspace = "default"
	}
	if e := validName("name", req.Name); e != nil {
		reply.Error(w, r, e)
		return
	}
	if e := validWorkspace(req.Workspace); e != nil {
		reply.Error(w, r, e)
		return
	}
	now := time.Now().UTC()
	c := store.Connection{ID: "conn_" + reply.NewID(8), Name: req.Name, Workspace: req.Workspace, CreatedAt: now}
	tok, display, err := newAgentToken(c.ID, now)
	if err != nil {
		reply.Error(w, r, protocol.Errorf(protocol.InternalError, "generate token"))
		return
	}
	if err := a.store.CreateConnection(r.Context(), c, tok); err != nil {
		a.storeError(w, r, err)
		return
	}
	a.log.Info("connection created", "connection", c.ID, "workspace", c.Workspace, "by_key", k.ID)
	out := toAPIConnection(c)
	out.AgentToken = display
	reply.JSON(w, http.StatusCreated, out)
}

func (a *API) listConnections(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	cs, err := a.Connections(r.Context(), k, r.URL.Query().Get("workspace"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := api.ConnectionList{Connections: make([]api.Connection, 0, len(cs))}
	for _, c := range cs {
		out.Connections = append(out.Connections, toAPIConnection(c))
	}
	reply.JSON(w, http.StatusOK, out)
}

func (a *API) getConnection(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	c, err := a.Visible(r.Context(), k, r.PathValue("id"))
	answer(a, w, r, toAPIConnection(c), err, http.StatusOK)
}

func (a *API) revokeConnection(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	c, err := a.Revoke(r.Context(), k, r.PathValue("id"))
	answer(a, w, r, c, err, http.StatusOK)
}

// deleteConnection serves DELETE /v1/connections/{id}: 204 without a
// body once the connection is gone.
func (a *API) deleteConnection(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	if err := a.Delete(r.Context(), k, r.PathValue("id")); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) rotateToken(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	// The key and the connection are checked before the body is read.
	c, err := a.Manageable(r.Context(), k, r.PathValue("id"))
	if err == nil && c.Revoked() {
		err = protocol.Errorf(protocol.ConnectionRevoked, "connection %s was revoked", c.ID)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var req api.RotateTokenRequest
	if r.ContentLength != 0 {
		if e := decodeBody(r, &req); e != nil {
			reply.Error(w, r, e)
			return
		}
	}
	tok, err := a.Rotate(r.Context(), k, r.PathValue("id"), req)
	answer(a, w, r, tok, err, http.StatusCreated)
}

// answer replies with v and status, or with err when there is one.
func answer[T any](a *API, w http.ResponseWriter, r *http.Request, v T, err error, status int) {
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply.JSON(w, status, v)
}

// newAgentToken mints an agent token of connection connID: the store keeps
// the token's hash, the caller shows display once.
func newAgentToken(connID string, now time.Time) (tok store.Token, display string, err error) {
	sec, err := secret.New(secret.AgentTokenPrefix)
	if err != nil {
		return store.Token{}, "", err
	}
	return store.Token{ID: sec.ID, ConnectionID: connID, Hash: sec.Hash, CreatedAt: now}, sec.Display, nil
}
