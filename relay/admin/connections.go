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
	ws := ""
	if !k.Admin {
		ws = k.Workspace
	} else if q := r.URL.Query().Get("workspace"); q != "" {
		ws = q
	}
	cs, err := a.store.ListConnections(r.Context(), ws)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	out := api.ConnectionList{Connections: make([]api.Connection, 0, len(cs))}
	for _, c := range cs {
		out.Connections = append(out.Connections, toAPIConnection(c))
	}
	reply.JSON(w, http.StatusOK, out)
}

func (a *API) getConnection(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	if c, ok := a.visible(w, r, k, r.PathValue("id")); ok {
		reply.JSON(w, http.StatusOK, toAPIConnection(c))
	}
}

func (a *API) revokeConnection(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	c, ok := a.manageable(w, r, k)
	if !ok {
		return
	}
	a.status.Watch(r.Context(), c)
	c, err := a.store.RevokeConnection(r.Context(), c.ID, time.Now().UTC())
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	a.status.Revoked(r.Context(), c)
	n := a.fanout.Revoked(r.Context(), c.ID)
	a.log.Info("connection revoked", "connection", c.ID, "tunnels_closed", n, "by_key", k.ID)
	reply.JSON(w, http.StatusOK, toAPIConnection(c))
}

func (a *API) rotateToken(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	c, ok := a.manageable(w, r, k)
	if !ok {
		return
	}
	if c.Revoked() {
		reply.Error(w, r, protocol.Errorf(protocol.ConnectionRevoked, "connection %s was revoked", c.ID))
		return
	}
	var req api.RotateTokenRequest
	if r.ContentLength != 0 {
		if e := decodeBody(r, &req); e != nil {
			reply.Error(w, r, e)
			return
		}
	}
	now := time.Now().UTC()
	tok, display, err := newAgentToken(c.ID, now)
	if err != nil {
		reply.Error(w, r, protocol.Errorf(protocol.InternalError, "generate token"))
		return
	}
	until := now.Add(a.cfg.TokenOverlap)
	if req.ExpirePrevious {
		until = now
	}
	if err := a.store.RotateToken(r.Context(), tok, until); err != nil {
		a.storeError(w, r, err)
		return
	}
	a.fanout.Rotated(r.Context(), c.ID, until)
	a.log.Info("agent token rotated", "connection", c.ID, "previous_valid_until", until, "by_key", k.ID)
	reply.JSON(w, http.StatusCreated, api.TokenResponse{AgentToken: display, PreviousValidUntil: until})
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
