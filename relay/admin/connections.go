package admin

import (
	"context"
	"fmt"
	"net/http"
	"strings"
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
	if e := validConnectionRequest(req); e != nil {
		reply.Error(w, r, e)
		return
	}
	warnings, err := a.sameName(r.Context(), req.Workspace, req.Name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out, err := a.newConnection(r.Context(), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("connection created", "connection", out.ID, "workspace", out.Workspace, "by_key", k.ID)
	out.Warnings = warnings
	reply.JSON(w, http.StatusCreated, out)
}

func validConnectionRequest(req api.CreateConnectionRequest) *protocol.Error {
	if e := validName("name", req.Name); e != nil {
		return e
	}
	return validWorkspace(req.Workspace)
}

// newConnection stores the connection req asks for with its first agent
// token, which the answer carries, shown this once.
func (a *API) newConnection(ctx context.Context, req api.CreateConnectionRequest) (api.Connection, error) {
	now := time.Now().UTC()
	c := store.Connection{ID: "conn_" + reply.NewID(8), Name: req.Name, Workspace: req.Workspace, CreatedAt: now}
	tok, display, err := newAgentToken(c.ID, now)
	if err != nil {
		return api.Connection{}, protocol.Errorf(protocol.InternalError, "generate token")
	}
	if err := a.store.CreateConnection(ctx, c, tok); err != nil {
		return api.Connection{}, err
	}
	out := toAPIConnection(c)
	out.AgentToken = display
	return out, nil
}

// sameName warns of the workspace's active connections already named
// name. Names may repeat, as labels do, but two alike are easily mixed up
// by the people who pick one, while the product goes by id.
func (a *API) sameName(ctx context.Context, workspace, name string) ([]string, error) {
	cs, err := a.store.ListConnections(ctx, workspace)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, c := range cs {
		if c.Name == name && !c.Revoked() {
			ids = append(ids, c.ID)
		}
	}
	const labels = "names are labels, the id is what the product uses"
	switch len(ids) {
	case 0:
		return nil, nil
	case 1:
		return []string{fmt.Sprintf("a connection named %q already exists in workspace %s (id %s); %s",
			name, workspace, ids[0], labels)}, nil
	}
	return []string{fmt.Sprintf("%d connections named %q already exist in workspace %s (ids %s); %s",
		len(ids), name, workspace, strings.Join(ids, ", "), labels)}, nil
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
