// Package auth decides who may use the relay: agent tokens on the tunnel
// endpoint, API keys on the API (Authorization: Bearer) and on the proxy
// (Proxy-Authorization: Basic <connection id>:<api key>). Every attempt
// passes the limits on refused credentials before any store lookup, every
// secret is compared in constant time against a hash, and an unknown id
// costs the same comparison as a wrong secret. No credential is ever
// logged.
//
// It answers "who is this and may they go on"; what a key may do with a
// connection beyond seeing it (admin-only calls) is the API's business.
package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/store"
)

// Verifier compares a presented secret with a stored hash in constant time;
// secret.Verify in production.
type Verifier func(hash, sec []byte) bool

// Config holds the limits on refused credentials.
type Config struct {
	// FailuresPerSource is how many refused credentials one source address
	// may present per Window; after that every attempt from it is answered
	// 429 RATE_LIMITED before any store lookup. IPv6 sources count per
	// /64. Zero turns the limit off.
	FailuresPerSource int
	// FailuresPerCredential is the same limit per credential id. It holds
	// back only sources that were refused themselves (see guard.go).
	// Zero turns the limit off.
	FailuresPerCredential int
	// Window is the period of both limits.
	Window time.Duration
}

// Validate reports every setting out of range.
func (c Config) Validate() error {
	var errs []error
	if c.FailuresPerSource < 0 || c.FailuresPerCredential < 0 {
		errs = append(errs, errors.New("auth failure limits must be 0 (off) or more"))
	}
	if (c.FailuresPerSource > 0 || c.FailuresPerCredential > 0) && c.Window <= 0 {
		errs = append(errs, errors.New("auth limit window must be positive"))
	}
	return errors.Join(errs...)
}

// TokenFailure is told of every refused secret presented with a known agent
// token id (wrong or expired), so the connection's status can say that an
// agent is trying with a bad token.
type TokenFailure func(ctx context.Context, connectionID, message string, at time.Time)

// Authenticator checks credentials against the store.
type Authenticator struct {
	store     store.Store
	guard     *guard
	verify    Verifier
	log       *slog.Logger
	onFailure TokenFailure
}

// New returns an Authenticator; onFailure may be nil.
func New(st store.Store, cfg Config, verify Verifier, onFailure TokenFailure, log *slog.Logger) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("auth config: %w", err)
	}
	if onFailure == nil {
		onFailure = func(context.Context, string, string, time.Time) {}
	}
	return &Authenticator{
		store: st, verify: verify, log: log, onFailure: onFailure,
		guard: newGuard(cfg, verify, log, time.Now),
	}, nil
}

// dummyHash is compared against when an id is unknown, so that an unknown
// id costs the same time as a wrong secret.
var dummyHash = secret.Hash(make([]byte, secret.SecretSize))

var errStore = protocol.Errorf(protocol.RelayUnavailable, "relay store unavailable")

// attempt runs one authentication under the limits on refused credentials.
// check reports whether the credential itself is good and the refusal to
// answer, if any. A good credential is remembered; a refused one is charged
// to its source and id unless nothing was presented (a proxy client
// waiting for its 407 challenge) or the store, not the credential, failed.
func (a *Authenticator) attempt(r *http.Request, c credential, presented bool, check func() (good bool, refusal *protocol.Error)) *protocol.Error {
	if e := a.guard.admit(r.RemoteAddr, c); e != nil {
		return e
	}
	good, refusal := check()
	switch {
	case good:
		a.guard.succeeded(c)
	case refusal != nil && refusal.Reason != protocol.RelayUnavailable && presented:
		a.guard.failed(r.RemoteAddr, c)
	}
	return refusal
}

// Agent is an authenticated agent token.
type Agent struct {
	Connection store.Connection
	TokenID    string
}

// Agent authenticates the agent token of a tunnel request. Unknown, wrong,
// malformed and expired tokens get the same AGENT_TOKEN_INVALID; a revoked
// connection's valid token gets AGENT_TOKEN_REVOKED.
func (a *Authenticator) Agent(r *http.Request) (Agent, *protocol.Error) {
	header := r.Header.Get("Authorization")
	c := parseCredential(secret.AgentTokenPrefix, strings.TrimPrefix(header, "Bearer "))
	var who Agent
	e := a.attempt(r, c, header != "", func() (bool, *protocol.Error) {
		var refusal *protocol.Error
		who, refusal = a.agentToken(r.Context(), header)
		return refusal == nil, refusal
	})
	return who, e
}

func (a *Authenticator) agentToken(ctx context.Context, header string) (Agent, *protocol.Error) {
	invalid := protocol.Errorf(protocol.AgentTokenInvalid, "agent token is unknown, wrong or expired")
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return Agent{}, invalid
	}
	id, sec, err := secret.Parse(secret.AgentTokenPrefix, strings.TrimSpace(raw))
	if err != nil {
		return Agent{}, invalid
	}
	tok, err := a.store.GetToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		a.verify(dummyHash, sec) // same work as a known id
		return Agent{}, invalid
	}
	if err != nil {
		a.log.Error("agent token: store error", "err", err)
		return Agent{}, errStore
	}
	now := time.Now()
	if !a.verify(tok.Hash, sec) {
		a.onFailure(ctx, tok.ConnectionID, "agent presented a wrong secret for token "+tok.ID, now)
		return Agent{}, invalid
	}
	if !tok.ValidAt(now) {
		a.onFailure(ctx, tok.ConnectionID, "agent presented token "+tok.ID+", which expired after a rotation", now)
		return Agent{}, invalid
	}
	conn, err := a.store.GetConnection(ctx, tok.ConnectionID)
	if err != nil {
		a.log.Error("connection of an agent token: store error", "err", err)
		return Agent{}, errStore
	}
	if conn.Revoked() {
		return Agent{}, protocol.Errorf(protocol.AgentTokenRevoked, "the connection of this agent token was revoked")
	}
	return Agent{Connection: conn, TokenID: tok.ID}, nil
}

// errKeyInvalid means an API key that is malformed, unknown, wrong or
// revoked; all answer alike.
var errKeyInvalid = errors.New("api key invalid")

// key verifies an API key in constant time.
func (a *Authenticator) key(ctx context.Context, raw string) (store.APIKey, error) {
	id, sec, err := secret.Parse(secret.APIKeyPrefix, strings.TrimSpace(raw))
	if err != nil {
		return store.APIKey{}, errKeyInvalid
	}
	k, err := a.store.GetAPIKey(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		a.verify(dummyHash, sec)
		return store.APIKey{}, errKeyInvalid
	}
	if err != nil {
		return store.APIKey{}, err
	}
	if !a.verify(k.Hash, sec) || k.RevokedAt != nil {
		return store.APIKey{}, errKeyInvalid
	}
	return k, nil
}

// RequireKey serves next only for a valid API key in Authorization: Bearer,
// and answers every other request with the refusal.
func (a *Authenticator) RequireKey(next func(http.ResponseWriter, *http.Request, store.APIKey)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, e := a.APIKey(r)
		if e != nil {
			reply.Error(w, r, e)
			return
		}
		next(w, r, k)
	})
}

// APIKey authenticates Authorization: Bearer <api key>.
func (a *Authenticator) APIKey(r *http.Request) (store.APIKey, *protocol.Error) {
	header := r.Header.Get("Authorization")
	raw, isBearer := strings.CutPrefix(header, "Bearer ")
	c := parseCredential(secret.APIKeyPrefix, raw)
	var k store.APIKey
	e := a.attempt(r, c, header != "", func() (bool, *protocol.Error) {
		if !isBearer {
			return false, protocol.Errorf(protocol.ProxyAuthRequired, "Authorization: Bearer <api key> required")
		}
		var err error
		k, err = a.key(r.Context(), raw)
		switch {
		case errors.Is(err, errKeyInvalid):
			return false, protocol.Errorf(protocol.ProxyAuthRequired, "API key is unknown, wrong or revoked")
		case err != nil:
			return false, errStore
		}
		return true, nil
	})
	return k, e
}

// Proxy authenticates Proxy-Authorization: Basic base64(<connection id>:<api
// key>) and returns the connection and the key. A key of another workspace
// gets exactly the answer of an unknown connection. The key counts as good
// even when the connection is not its to use: connection ids are not
// secrets, so that is no guessing.
func (a *Authenticator) Proxy(r *http.Request) (store.Connection, store.APIKey, *protocol.Error) {
	header := r.Header.Get("Proxy-Authorization")
	var (
		conn store.Connection
		k    store.APIKey
	)
	e := a.attempt(r, proxyCredential(header), header != "", func() (bool, *protocol.Error) {
		var refusal *protocol.Error
		conn, k, refusal = a.proxy(r.Context(), header)
		return k.ID != "", refusal
	})
	return conn, k, e
}

func (a *Authenticator) proxy(ctx context.Context, header string) (store.Connection, store.APIKey, *protocol.Error) {
	denied := protocol.Errorf(protocol.ProxyAuthRequired, "Proxy-Authorization must be Basic base64(<connection id>:<api key>) with a key valid for that connection")
	raw, ok := strings.CutPrefix(header, "Basic ")
	if !ok {
		return store.Connection{}, store.APIKey{}, denied
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(raw))
	if err != nil {
		return store.Connection{}, store.APIKey{}, denied
	}
	connID, key, ok := strings.Cut(string(dec), ":")
	if !ok || connID == "" {
		return store.Connection{}, store.APIKey{}, denied
	}
	k, err := a.key(ctx, key)
	if err != nil {
		if errors.Is(err, errKeyInvalid) {
			return store.Connection{}, store.APIKey{}, denied
		}
		return store.Connection{}, store.APIKey{}, errStore
	}
	conn, err := a.store.GetConnection(ctx, connID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !Sees(k, conn)) {
		return store.Connection{}, k, denied
	}
	if err != nil {
		return store.Connection{}, k, errStore
	}
	return conn, k, nil
}

// Sees reports whether key k may see connection c: an admin key sees every
// connection, a workspace key its workspace's.
func Sees(k store.APIKey, c store.Connection) bool {
	return k.Admin || k.Workspace == c.Workspace
}
