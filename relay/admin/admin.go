// Package admin serves the relay's HTTP API to operators and to the cloud
// product: connections and their agent tokens, API keys, a connection's
// status, live checks run by its agent, and the stream of status events.
// Every call needs an API key; a workspace key sees its workspace's
// connections only, and another workspace's connection answers exactly
// like a missing one.
//
// It owns the API's rules (who may call what, what a valid name is); the
// data plane (tunnels, streams) is the broker's and the status logic is
// package status's.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/auth"
	"github.com/postern/postern/relay/events"
	"github.com/postern/postern/relay/history"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/router"
	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/status"
	"github.com/postern/postern/relay/store"
)

// Config configures the API.
type Config struct {
	// TokenOverlap is how long the previous agent tokens stay valid after
	// a rotation.
	TokenOverlap time.Duration
	// EventKeepAlive is the comment period on idle event streams.
	EventKeepAlive time.Duration
}

// Validate reports every setting out of range.
func (c Config) Validate() error {
	if c.TokenOverlap <= 0 || c.EventKeepAlive <= 0 {
		return errors.New("token overlap and event keepalive must be positive")
	}
	return nil
}

// API is the relay's HTTP API.
type API struct {
	cfg         Config
	store       store.Store
	auth        *auth.Authenticator
	fanout      Fanout
	nodes       func(ctx context.Context) ([]api.Node, error)
	router      *router.Router
	status      *status.Keeper
	bus         *events.Bus
	history     *history.Reader
	diagnostics Diagnostics
	log         *slog.Logger
	// revoking serializes key revocations on this node, so two admins
	// revoking each other's keys at once cannot both pass keepAnAdmin.
	revoking sync.Mutex
}

// Parts are what the API works with.
type Parts struct {
	Store store.Store
	Auth  *auth.Authenticator
	// Fanout carries a revocation (and a deletion, which ends a
	// connection's tunnels and cached record as a revocation does) or a
	// rotation to every node.
	Fanout Fanout
	// Nodes lists the relay's nodes.
	Nodes  func(ctx context.Context) ([]api.Node, error)
	Router *router.Router
	Status *status.Keeper
	Bus    *events.Bus
	// History reads connections' transitions.
	History *history.Reader
	// Diagnostics is the node's part of a support bundle.
	Diagnostics Diagnostics
	Log         *slog.Logger
}

// New returns the API.
func New(cfg Config, p Parts) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("api config: %w", err)
	}
	return &API{cfg: cfg, store: p.Store, auth: p.Auth, fanout: p.Fanout, nodes: p.Nodes, router: p.Router,
		status: p.Status, bus: p.Bus, history: p.History, diagnostics: p.Diagnostics, log: p.Log}, nil
}

// Route registers every API call on mux; each needs an API key.
func (a *API) Route(mux *http.ServeMux) {
	h := func(pattern string, fn func(http.ResponseWriter, *http.Request, store.APIKey)) {
		mux.Handle(pattern, reply.WithRequestID(a.auth.RequireKey(fn)))
	}
	h("POST /v1/connections", a.createConnection)
	h("GET /v1/connections", a.listConnections)
	h("GET /v1/connections/{id}", a.getConnection)
	h("POST /v1/connections/{id}/revoke", a.revokeConnection)
	h("DELETE /v1/connections/{id}", a.deleteConnection)
	h("POST /v1/connections/{id}/tokens", a.rotateToken)
	h("GET /v1/connections/{id}/status", a.connectionStatus)
	h("POST /v1/connections/{id}/check", a.check)
	h("GET /v1/connections/{id}/history", a.connectionHistory)
	h("GET /v1/events", a.StreamEvents)
	h("POST /v1/api-keys", a.createAPIKey)
	h("GET /v1/api-keys", a.listAPIKeys)
	h("POST /v1/api-keys/{id}/revoke", a.revokeAPIKey)
	h("GET /v1/nodes", a.listNodes)
	h("GET /v1/diag/{part}", a.diag)
}

// Fanout carries what the API changed to the tunnels of every node.
type Fanout interface {
	// Revoked cuts the connection's tunnels and returns how many were
	// cut on this node.
	Revoked(ctx context.Context, connID string) int
	// Rotated cuts, once until passes, the tunnels opened with the tokens
	// a rotation gave that end.
	Rotated(ctx context.Context, connID string, until time.Time)
	// KeyRevoked ends the streams opened with API key keyID and returns
	// how many it ended on this node.
	KeyRevoked(ctx context.Context, keyID string) int
}

// listNodes serves GET /v1/nodes (admin keys): the nodes of the relay,
// with their sessions, draining flag and lease.
func (a *API) listNodes(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	if !k.Admin {
		reply.Error(w, r, errAdminOnly)
		return
	}
	nodes, err := a.nodes(r.Context())
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	reply.JSON(w, http.StatusOK, api.NodeList{Nodes: nodes})
}

var errAdminOnly = protocol.Errorf(protocol.Forbidden, "this call needs an admin API key")

const maxBodyBytes = 64 << 10

func decodeBody(r *http.Request, v any) *protocol.Error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return protocol.Errorf(protocol.InvalidRequest, "request body: %v", err)
	}
	return nil
}

func validName(field, name string) *protocol.Error {
	if name == "" || len(name) > 128 || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return protocol.Errorf(protocol.InvalidRequest, "%s: 1 to 128 printable characters required", field)
	}
	return nil
}

func validWorkspace(ws string) *protocol.Error {
	if !store.ValidWorkspace(ws) {
		return protocol.Errorf(protocol.InvalidRequest, "workspace: lowercase letters, digits, '-' and '_', 1 to 63 characters, required")
	}
	return nil
}

// adminRequest starts the calls that create: it refuses a key that is not
// an admin key, then decodes the JSON body into v. False means it has
// answered.
func adminRequest(w http.ResponseWriter, r *http.Request, k store.APIKey, v any) bool {
	if !k.Admin {
		reply.Error(w, r, errAdminOnly)
		return false
	}
	if e := decodeBody(r, v); e != nil {
		reply.Error(w, r, e)
		return false
	}
	return true
}

func (a *API) storeError(w http.ResponseWriter, r *http.Request, err error) { a.fail(w, r, err) }

// fail answers an operation's error (see Refusal); a store failure is
// logged with the request's id.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := Refusal(err)
	if e.Reason == protocol.RelayUnavailable && !errors.As(err, new(*protocol.Error)) {
		a.log.Error("store", "err", err, "request_id", reply.RequestID(r))
	}
	reply.Error(w, r, e)
}

// CreateAPIKey mints the API key req asks for and stores its hash; the
// answer carries the key itself, shown only this once. req is not
// checked here: the API checks what callers send.
func CreateAPIKey(ctx context.Context, st store.Store, req api.CreateAPIKeyRequest) (api.APIKey, error) {
	sec, err := secret.New(secret.APIKeyPrefix)
	if err != nil {
		return api.APIKey{}, err
	}
	k := store.APIKey{ID: sec.ID, Name: req.Name, Workspace: req.Workspace, Admin: req.Admin, Hash: sec.Hash,
		CreatedAt: time.Now().UTC(), ExpiresAt: utcOpt(req.ExpiresAt)}
	if err := st.CreateAPIKey(ctx, k); err != nil {
		return api.APIKey{}, err
	}
	out := toAPIKey(k)
	out.Key = sec.Display
	return out, nil
}

func (a *API) createAPIKey(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	var req api.CreateAPIKeyRequest
	if !adminRequest(w, r, k, &req) {
		return
	}
	if e := validAPIKeyRequest(req, time.Now()); e != nil {
		reply.Error(w, r, e)
		return
	}
	key, err := CreateAPIKey(r.Context(), a.store, req)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	a.log.Info("api key created", "key", key.ID, "admin", key.Admin, "workspace", key.Workspace,
		"expires_at", key.ExpiresAt, "by_key", k.ID)
	reply.JSON(w, http.StatusCreated, key)
}

func validAPIKeyRequest(req api.CreateAPIKeyRequest, now time.Time) *protocol.Error {
	if e := validName("name", req.Name); e != nil {
		return e
	}
	if req.ExpiresAt != nil && (!req.ExpiresAt.After(now) || req.ExpiresAt.After(now.Add(MaxKeyLifetime))) {
		return protocol.Errorf(protocol.InvalidRequest, "expires_at: a time in the future, at most %d days ahead, required",
			int(MaxKeyLifetime/(24*time.Hour)))
	}
	switch {
	case req.Admin && req.Workspace != "":
		return protocol.Errorf(protocol.InvalidRequest, "give either workspace or admin, not both")
	case !req.Admin:
		return validWorkspace(req.Workspace)
	}
	return nil
}
