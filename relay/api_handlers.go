package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/store"
)

const apiKeyPrefix = "pak"

var errKeyInvalid = errors.New("api key invalid")

// authenticateKey verifies an API key in constant time.
func (s *Server) authenticateKey(ctx context.Context, key string) (store.APIKey, error) {
	id, sec, err := secret.Parse(apiKeyPrefix, strings.TrimSpace(key))
	if err != nil {
		return store.APIKey{}, errKeyInvalid
	}
	k, err := s.store.GetAPIKey(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		s.cfg.verifySecret(dummyHash, sec)
		return store.APIKey{}, errKeyInvalid
	}
	if err != nil {
		return store.APIKey{}, err
	}
	if !s.cfg.verifySecret(k.Hash, sec) || k.RevokedAt != nil {
		return store.APIKey{}, errKeyInvalid
	}
	return k, nil
}

// requireKey authenticates Authorization: Bearer <api key>.
func (s *Server) requireKey(next func(http.ResponseWriter, *http.Request, store.APIKey)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		raw, ok := strings.CutPrefix(header, "Bearer ")
		cred := parseCredential(apiKeyPrefix, raw)
		if e := s.auth.admit(r.RemoteAddr, cred); e != nil {
			writeError(w, r, *e)
			return
		}
		if !ok {
			if header != "" {
				s.auth.failed(r.RemoteAddr, cred)
			}
			writeError(w, r, apiError{reason: protocol.ProxyAuthRequired, msg: "Authorization: Bearer <api key> required"})
			return
		}
		k, err := s.authenticateKey(r.Context(), raw)
		if err != nil {
			if errors.Is(err, errKeyInvalid) {
				s.auth.failed(r.RemoteAddr, cred)
				writeError(w, r, apiError{reason: protocol.ProxyAuthRequired, msg: "API key is unknown, wrong or revoked"})
				return
			}
			writeError(w, r, apiError{reason: protocol.RelayUnavailable, msg: "relay store unavailable"})
			return
		}
		s.auth.succeeded(cred)
		next(w, r, k)
	}
}

func (s *Server) routeAPI(mux *http.ServeMux) {
	h := func(pattern string, fn func(http.ResponseWriter, *http.Request, store.APIKey)) {
		mux.Handle(pattern, withRequestID(s.requireKey(fn)))
	}
	h("POST /v1/connections", s.apiCreateConnection)
	h("GET /v1/connections", s.apiListConnections)
	h("GET /v1/connections/{id}", s.apiGetConnection)
	h("POST /v1/connections/{id}/revoke", s.apiRevokeConnection)
	h("POST /v1/connections/{id}/tokens", s.apiRotateToken)
	h("GET /v1/connections/{id}/status", s.apiStatus)
	h("POST /v1/connections/{id}/check", s.apiCheck)
	h("GET /v1/events", s.apiEvents)
	h("POST /v1/api-keys", s.apiCreateAPIKey)
}

var (
	workspacePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	errAdminOnly     = apiError{reason: protocol.Forbidden, msg: "this call needs an admin API key"}
)

const maxBodyBytes = 64 << 10

func decodeBody(r *http.Request, v any) *apiError {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{reason: protocol.InvalidRequest, msg: "request body: " + err.Error()}
	}
	return nil
}

func validName(field, name string) *apiError {
	if name == "" || len(name) > 128 || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return &apiError{reason: protocol.InvalidRequest, msg: field + ": 1 to 128 printable characters required"}
	}
	return nil
}

func validWorkspace(ws string) *apiError {
	if !workspacePattern.MatchString(ws) {
		return &apiError{reason: protocol.InvalidRequest, msg: "workspace: lowercase letters, digits, '-' and '_', 1 to 63 characters, required"}
	}
	return nil
}

func toAPIConnection(c store.Connection) api.Connection {
	return api.Connection{ID: c.ID, Name: c.Name, Workspace: c.Workspace, CreatedAt: c.CreatedAt, RevokedAt: c.RevokedAt}
}

func (s *Server) apiCreateConnection(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	if !k.Admin {
		writeError(w, r, errAdminOnly)
		return
	}
	var req api.CreateConnectionRequest
	if e := decodeBody(r, &req); e != nil {
		writeError(w, r, *e)
		return
	}
	if req.Workspace == "" {
		req.Workspace = "default"
	}
	if e := validName("name", req.Name); e != nil {
		writeError(w, r, *e)
		return
	}
	if e := validWorkspace(req.Workspace); e != nil {
		writeError(w, r, *e)
		return
	}
	tok, err := secret.New(agentTokenPrefix)
	if err != nil {
		writeError(w, r, apiError{reason: protocol.InternalError, msg: "generate token"})
		return
	}
	now := time.Now().UTC()
	c := store.Connection{ID: "conn_" + randomHex(8), Name: req.Name, Workspace: req.Workspace, CreatedAt: now}
	if err := s.store.CreateConnection(r.Context(), c, store.Token{ID: tok.ID, ConnectionID: c.ID, Hash: tok.Hash, CreatedAt: now}); err != nil {
		s.storeError(w, r, err)
		return
	}
	s.log.Info("connection created", "connection", c.ID, "workspace", c.Workspace, "by_key", k.ID)
	out := toAPIConnection(c)
	out.AgentToken = tok.Display
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) apiListConnections(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	ws := ""
	if !k.Admin {
		ws = k.Workspace
	} else if q := r.URL.Query().Get("workspace"); q != "" {
		ws = q
	}
	cs, err := s.store.ListConnections(r.Context(), ws)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := api.ConnectionList{Connections: make([]api.Connection, 0, len(cs))}
	for _, c := range cs {
		out.Connections = append(out.Connections, toAPIConnection(c))
	}
	writeJSON(w, http.StatusOK, out)
}

// visibleConnection loads a connection the key may see; another
// workspace's connection answers exactly like a missing one.
func (s *Server) visibleConnection(w http.ResponseWriter, r *http.Request, k store.APIKey) (store.Connection, bool) {
	id := r.PathValue("id")
	c, err := s.store.GetConnection(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !k.Admin && c.Workspace != k.Workspace) {
		writeError(w, r, apiError{reason: protocol.ConnectionNotFound, msg: fmt.Sprintf("no connection %q", id)})
		return store.Connection{}, false
	}
	if err != nil {
		s.storeError(w, r, err)
		return store.Connection{}, false
	}
	return c, true
}

func (s *Server) apiGetConnection(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	if c, ok := s.visibleConnection(w, r, k); ok {
		writeJSON(w, http.StatusOK, toAPIConnection(c))
	}
}

func (s *Server) apiRevokeConnection(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	c, ok := s.visibleConnection(w, r, k)
	if !ok {
		return
	}
	if !k.Admin {
		writeError(w, r, errAdminOnly)
		return
	}
	s.watchConnection(c)
	c, err := s.store.RevokeConnection(r.Context(), c.ID, time.Now().UTC())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.connectionRevoked(c)
	n := s.reg.closeConnection(c.ID, "connection revoked by an administrator")
	s.log.Info("connection revoked", "connection", c.ID, "tunnels_closed", n, "by_key", k.ID)
	writeJSON(w, http.StatusOK, toAPIConnection(c))
}

func (s *Server) apiRotateToken(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	c, ok := s.visibleConnection(w, r, k)
	if !ok {
		return
	}
	if !k.Admin {
		writeError(w, r, errAdminOnly)
		return
	}
	if c.RevokedAt != nil {
		writeError(w, r, apiError{reason: protocol.ConnectionRevoked, msg: "connection " + c.ID + " was revoked"})
		return
	}
	tok, err := secret.New(agentTokenPrefix)
	if err != nil {
		writeError(w, r, apiError{reason: protocol.InternalError, msg: "generate token"})
		return
	}
	now := time.Now().UTC()
	until := now.Add(s.cfg.TokenOverlap)
	if err := s.store.RotateToken(r.Context(), store.Token{ID: tok.ID, ConnectionID: c.ID, Hash: tok.Hash, CreatedAt: now}, until); err != nil {
		s.storeError(w, r, err)
		return
	}
	s.log.Info("agent token rotated", "connection", c.ID, "previous_valid_until", until, "by_key", k.ID)
	writeJSON(w, http.StatusCreated, api.TokenResponse{AgentToken: tok.Display, PreviousValidUntil: until})
}

func (s *Server) apiCreateAPIKey(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	if !k.Admin {
		writeError(w, r, errAdminOnly)
		return
	}
	var req api.CreateAPIKeyRequest
	if e := decodeBody(r, &req); e != nil {
		writeError(w, r, *e)
		return
	}
	if e := validName("name", req.Name); e != nil {
		writeError(w, r, *e)
		return
	}
	switch {
	case req.Admin && req.Workspace != "":
		writeError(w, r, apiError{reason: protocol.InvalidRequest, msg: "give either workspace or admin, not both"})
		return
	case !req.Admin:
		if e := validWorkspace(req.Workspace); e != nil {
			writeError(w, r, *e)
			return
		}
	}
	key, err := s.createAPIKey(r.Context(), req.Name, req.Workspace, req.Admin)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.log.Info("api key created", "key", key.ID, "admin", key.Admin, "workspace", key.Workspace, "by_key", k.ID)
	writeJSON(w, http.StatusCreated, key)
}

func (s *Server) createAPIKey(ctx context.Context, name, workspace string, admin bool) (api.APIKey, error) {
	sec, err := secret.New(apiKeyPrefix)
	if err != nil {
		return api.APIKey{}, err
	}
	now := time.Now().UTC()
	k := store.APIKey{ID: sec.ID, Name: name, Workspace: workspace, Admin: admin, Hash: sec.Hash, CreatedAt: now}
	if err := s.store.CreateAPIKey(ctx, k); err != nil {
		return api.APIKey{}, err
	}
	return api.APIKey{ID: k.ID, Name: k.Name, Workspace: k.Workspace, Admin: k.Admin, Key: sec.Display, CreatedAt: now}, nil
}

func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, r, apiError{reason: protocol.ConnectionNotFound, msg: "not found"})
		return
	}
	s.log.Error("store", "err", err, "request_id", requestID(r))
	writeError(w, r, apiError{reason: protocol.RelayUnavailable, msg: "relay store unavailable", retryAfter: 5})
}
