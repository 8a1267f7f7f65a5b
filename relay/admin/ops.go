package admin

import (
	"context"
	"errors"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/auth"
	"github.com/postern/postern/relay/history"
	"github.com/postern/postern/relay/status"
	"github.com/postern/postern/relay/store"
)

// The operations below are the API's calls without HTTP, for a key
// already authenticated: the HTTP handlers and the status page (package
// ui) both use them, so a key sees and may do exactly the same through
// either. An error is a *protocol.Error to answer as it is, or a store
// failure (see Refusal).

// Refusal is the answer to an error of an operation: a *protocol.Error as
// it is, a missing record as CONNECTION_NOT_FOUND, anything else as
// RELAY_UNAVAILABLE (the store failed) with a Retry-After.
func Refusal(err error) *protocol.Error {
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, store.ErrNotFound):
		return protocol.Errorf(protocol.ConnectionNotFound, "not found")
	}
	e := protocol.Errorf(protocol.RelayUnavailable, "relay store unavailable")
	e.RetryAfter = 5
	return e
}

// Visible loads connection id if key k may see it; another workspace's
// connection answers exactly like a missing one.
func (a *API) Visible(ctx context.Context, k store.APIKey, id string) (store.Connection, error) {
	c, err := a.store.GetConnection(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !auth.Sees(k, c)) {
		return store.Connection{}, protocol.Errorf(protocol.ConnectionNotFound, "no connection %q", id)
	}
	return c, err
}

// Manageable is Visible for the calls that change a connection, which also
// need an admin key. The workspace is checked first, so a workspace key
// learns no more here than from a read.
func (a *API) Manageable(ctx context.Context, k store.APIKey, id string) (store.Connection, error) {
	c, err := a.Visible(ctx, k, id)
	if err == nil && !k.Admin {
		return store.Connection{}, errAdminOnly
	}
	return c, err
}

// Connections lists the connections k sees: its workspace's, or for an
// admin key those of workspace ("" for all).
func (a *API) Connections(ctx context.Context, k store.APIKey, workspace string) ([]store.Connection, error) {
	if !k.Admin {
		workspace = k.Workspace
	}
	return a.store.ListConnections(ctx, workspace)
}

// ConnectionStatus is the status of connection id; with a base URL,
// allowlist_status is the reported rules' verdict on its target.
func (a *API) ConnectionStatus(ctx context.Context, k store.APIKey, id, baseURL string) (api.Status, error) {
	c, err := a.Visible(ctx, k, id)
	if err != nil {
		return api.Status{}, err
	}
	return a.statusOf(ctx, c, baseURL)
}

func (a *API) statusOf(ctx context.Context, c store.Connection, baseURL string) (api.Status, error) {
	var target *status.Target
	if baseURL != "" {
		t, e := status.ParseBaseURL(baseURL)
		if e != nil {
			return api.Status{}, e
		}
		target = &t
	}
	return a.status.Status(ctx, c, target, time.Now())
}

// Check runs a live check of baseURL on one of connection id's agents;
// reqID follows it into the agent's audit log.
func (a *API) Check(ctx context.Context, k store.APIKey, id, baseURL, reqID string) (api.Check, error) {
	c, err := a.Visible(ctx, k, id)
	if err != nil {
		return api.Check{}, err
	}
	t, e := status.ParseBaseURL(baseURL)
	if e != nil {
		return api.Check{}, e
	}
	cr, e := a.checkAgent(ctx, c, t, baseURL, reqID)
	if e != nil {
		a.log.Info("check not run", "connection", c.ID, "request_id", reqID, "reason", e.Reason, "message", e.Message)
		return api.Check{}, e
	}
	out := toAPICheck(cr)
	a.log.Info("check done", "connection", c.ID, "request_id", reqID, "ready", out.Ready, "reason", out.Reason)
	return out, nil
}

// Revoke revokes connection id (admin keys): its tunnels are cut on every
// node and its agents cannot come back.
func (a *API) Revoke(ctx context.Context, k store.APIKey, id string) (api.Connection, error) {
	c, err := a.Manageable(ctx, k, id)
	if err != nil {
		return api.Connection{}, err
	}
	a.status.Watch(ctx, c)
	c, err = a.store.RevokeConnection(ctx, c.ID, time.Now().UTC())
	if err != nil {
		return api.Connection{}, err
	}
	a.status.Revoked(ctx, c)
	n := a.fanout.Revoked(ctx, c.ID)
	a.log.Info("connection revoked", "connection", c.ID, "tunnels_closed", n, "by_key", k.ID)
	return toAPIConnection(c), nil
}

// Delete deletes connection id (admin keys) once it is revoked: its
// record, agent tokens and status go, on every node; its history stays
// until the retention ages it out. A connection still in use is refused
// with CONNECTION_NOT_REVOKED and the command that revokes it.
func (a *API) Delete(ctx context.Context, k store.APIKey, id string) error {
	c, err := a.Manageable(ctx, k, id)
	if err != nil {
		return err
	}
	err = a.store.DeleteConnection(ctx, c.ID)
	if errors.Is(err, store.ErrNotRevoked) {
		return protocol.Errorf(protocol.NotRevoked, "revoke the connection first: postern-relay connections revoke %s", c.ID)
	}
	if err != nil {
		return err
	}
	a.status.Forget(c.ID)
	// As for a revocation: every node forgets the record it cached and
	// cuts any tunnel of the connection left.
	n := a.fanout.Revoked(ctx, c.ID)
	// The name is logged here because the record that held it is gone.
	a.log.Info("connection deleted", "connection", c.ID, "workspace", c.Workspace, "name", c.Name,
		"tunnels_closed", n, "by_key", k.ID)
	return nil
}

// Rotate issues a new agent token for connection id (admin keys); the
// previous ones stay valid for the overlap, or end now with
// ExpirePrevious.
func (a *API) Rotate(ctx context.Context, k store.APIKey, id string, req api.RotateTokenRequest) (api.TokenResponse, error) {
	c, err := a.Manageable(ctx, k, id)
	if err != nil {
		return api.TokenResponse{}, err
	}
	if c.Revoked() {
		return api.TokenResponse{}, protocol.Errorf(protocol.ConnectionRevoked, "connection %s was revoked", c.ID)
	}
	now := time.Now().UTC()
	tok, display, err := newAgentToken(c.ID, now)
	if err != nil {
		return api.TokenResponse{}, protocol.Errorf(protocol.InternalError, "generate token")
	}
	until := now.Add(a.cfg.TokenOverlap)
	if req.ExpirePrevious {
		until = now
	}
	if err := a.store.RotateToken(ctx, tok, until); err != nil {
		return api.TokenResponse{}, err
	}
	a.fanout.Rotated(ctx, c.ID, until)
	a.log.Info("agent token rotated", "connection", c.ID, "previous_valid_until", until, "by_key", k.ID)
	return api.TokenResponse{AgentToken: display, PreviousValidUntil: until}, nil
}

// History is connection id's transitions that q asks for, and its uptime.
func (a *API) History(ctx context.Context, k store.APIKey, id string, q history.Query) (api.History, error) {
	c, err := a.Visible(ctx, k, id)
	if err != nil {
		return api.History{}, err
	}
	now := time.Now()
	st, err := a.status.Status(ctx, c, nil, now)
	if err != nil {
		return api.History{}, err
	}
	return a.history.Read(ctx, c, q, st.TunnelStatus, now)
}

// Uptime is the uptime now of connection c, listed by Connections, given
// its status.
func (a *API) Uptime(ctx context.Context, k store.APIKey, c store.Connection, st api.Status) (api.Uptime, error) {
	if !auth.Sees(k, c) {
		return api.Uptime{}, protocol.Errorf(protocol.ConnectionNotFound, "no connection %q", c.ID)
	}
	return a.history.Uptime(ctx, c, st.TunnelStatus, time.Now())
}

// Status is the status of connection c, listed by Connections.
func (a *API) Status(ctx context.Context, k store.APIKey, c store.Connection) (api.Status, error) {
	if !auth.Sees(k, c) {
		return api.Status{}, protocol.Errorf(protocol.ConnectionNotFound, "no connection %q", c.ID)
	}
	return a.statusOf(ctx, c, "")
}
