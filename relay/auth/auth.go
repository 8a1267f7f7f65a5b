// Package auth decides who may use the relay: agent tokens on the tunnel
// endpoint, API keys on the API (Authorization: Bearer) and on the proxy
// (Proxy-Authorization: Basic <connection id>:<api key>). Every attempt
// passes the limits on refused credentials before any store lookup, every
// secret is compared in constant time against a hash, and an unknown id
// costs the same comparison as a wrong secret. No credential is ever
// logged, and no token id is ever put in what a refusal reports.
//
// It answers "who is this and may they go on"; what a key may do with a
// connection beyond seeing it (admin-only calls) is the API's business.
package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
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
	// LookupsWhileLimited is how many store lookups per second, for the
	// whole node, may check credentials from sources a limit holds back
	// when this node holds no hash for their id (see guard.go). Zero
	// gives them none: only credentials this node has seen get through.
	LookupsWhileLimited float64
	// StoreEveryTime reads API key and connection records from the store
	// on every request instead of keeping them for RecordTTL. A cluster
	// node sets it: cut off from the cluster's notifications (a partition
	// from PostgreSQL), it would not hear of a revocation at another node,
	// and must not serve a revoked key from memory meanwhile.
	StoreEveryTime bool
}

// Validate reports every setting out of range.
func (c Config) Validate() error {
	var errs []error
	if c.FailuresPerSource < 0 || c.FailuresPerCredential < 0 {
		errs = append(errs, errors.New("auth failure limits must be 0 (off) or more"))
	}
	if c.LookupsWhileLimited < 0 || math.IsNaN(c.LookupsWhileLimited) || math.IsInf(c.LookupsWhileLimited, 0) {
		errs = append(errs, fmt.Errorf("auth lookups while limited %v: must be 0 or more", c.LookupsWhileLimited))
	}
	if (c.FailuresPerSource > 0 || c.FailuresPerCredential > 0) && c.Window <= 0 {
		errs = append(errs, errors.New("auth limit window must be positive"))
	}
	return errors.Join(errs...)
}

// TokenFailure is told of every refused secret presented with a known agent
// token id (wrong, malformed or expired), so the connection's status can
// say that an agent is trying with a bad token. The message never names
// the token.
type TokenFailure func(ctx context.Context, connectionID, message string, at time.Time)

// Authenticator checks credentials against the store.
type Authenticator struct {
	store     store.Store
	guard     *guard
	verify    Verifier
	log       *slog.Logger
	onFailure TokenFailure
	holds     holds
	uses      uses
	cache     cache
	noCache   bool // Config.StoreEveryTime
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
		guard: newGuard(cfg, verify, log, time.Now), noCache: cfg.StoreEveryTime,
	}, nil
}

// dummyHash is compared against when an id is unknown, so that an unknown
// id costs the same time as a wrong secret.
var dummyHash = secret.Hash(make([]byte, secret.SecretSize))

var errStore = protocol.Errorf(protocol.RelayUnavailable, "relay store unavailable")

// checked is the outcome of checking one credential against the store.
type checked struct {
	// good is true when the credential itself is good.
	good bool
	// found is the stored hash of the credential's id, when the store
	// had a record for it.
	found []byte
	// refusal is the answer to give, if any.
	refusal *protocol.Error
}

// attempt runs one authentication under the limits on refused credentials.
// A good credential is remembered; a refused one is charged to its source
// and id unless nothing was presented (a proxy client waiting for its 407
// challenge) or the store, not the credential, failed.
func (a *Authenticator) attempt(remoteAddr string, c credential, presented bool, check func() checked) *protocol.Error {
	if e := a.guard.admit(remoteAddr, c); e != nil {
		return e
	}
	out := check()
	switch {
	case out.good:
		a.guard.succeeded(c)
	case out.refusal != nil && out.refusal.Reason != protocol.RelayUnavailable && presented:
		a.guard.failed(remoteAddr, c, out.found)
	}
	return out.refusal
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
	e := a.attempt(r.RemoteAddr, c, header != "", func() checked {
		var out checked
		who, out = a.agentToken(r.Context(), header)
		out.good = out.refusal == nil
		return out
	})
	return who, e
}

// Messages of refused agent tokens, as the connection's status shows them.
// They name no token: token ids are not secret, but the status is no
// place to learn them.
const (
	msgWrongSecret     = "an agent presented a wrong secret for one of this connection's tokens"
	msgMalformedSecret = "an agent presented one of this connection's token ids with a malformed secret (truncated or mistyped)"
	msgExpired         = "an agent presented one of this connection's tokens that expired after a rotation"
)

func (a *Authenticator) agentToken(ctx context.Context, header string) (Agent, checked) {
	invalid := checked{refusal: protocol.Errorf(protocol.AgentTokenInvalid, "agent token is unknown, wrong or expired")}
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return Agent{}, invalid
	}
	raw = strings.TrimSpace(raw)
	wrong := msgWrongSecret
	id, sec, err := secret.Parse(secret.AgentTokenPrefix, raw)
	if err != nil {
		// A token whose secret was cut or mistyped still names its
		// connection: say so in its status.
		if id, ok = secret.ParseID(secret.AgentTokenPrefix, raw); !ok {
			return Agent{}, invalid
		}
		wrong = msgMalformedSecret
	}
	tok, err := a.store.GetToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		a.verify(dummyHash, sec) // same work as a known id
		return Agent{}, invalid
	}
	if err != nil {
		a.log.Error("agent token: store error", "err", err)
		return Agent{}, checked{refusal: errStore}
	}
	invalid.found = tok.Hash
	now := time.Now()
	if !a.verify(tok.Hash, sec) {
		a.onFailure(ctx, tok.ConnectionID, wrong, now)
		return Agent{}, invalid
	}
	if !tok.ValidAt(now) {
		a.onFailure(ctx, tok.ConnectionID, msgExpired, now)
		return Agent{}, invalid
	}
	conn, err := a.store.GetConnection(ctx, tok.ConnectionID)
	if err != nil {
		a.log.Error("connection of an agent token: store error", "err", err)
		return Agent{}, checked{refusal: errStore}
	}
	if conn.Revoked() {
		return Agent{}, checked{found: tok.Hash, refusal: protocol.Errorf(protocol.AgentTokenRevoked, "the connection of this agent token was revoked")}
	}
	return Agent{Connection: conn, TokenID: tok.ID}, checked{found: tok.Hash}
}

// errKeyInvalid means an API key that is malformed, unknown or wrong; all
// answer alike.
var errKeyInvalid = errors.New("api key invalid")

// keyEndedError is a good API key that may no longer be used: revoked or
// expired. Only whoever holds the key's secret learns which.
type keyEndedError struct{ msg string }

func (e *keyEndedError) Error() string { return e.msg }

// KeyEnded says why key k may not be used at t: revoked, or expired. It
// is nil while the key is active.
func KeyEnded(k store.APIKey, at time.Time) error {
	switch {
	case k.RevokedAt != nil:
		return &keyEndedError{fmt.Sprintf("API key %s was revoked at %s", k.ID, k.RevokedAt.UTC().Format(time.RFC3339))}
	case !k.ActiveAt(at):
		return &keyEndedError{fmt.Sprintf("API key %s expired at %s", k.ID, k.ExpiresAt.UTC().Format(time.RFC3339))}
	}
	return nil
}

// key verifies an API key in constant time, then that it is still active.
// Unless the store failed, found is the stored hash when the store had a
// record of the id.
func (a *Authenticator) key(ctx context.Context, raw string) (k store.APIKey, found []byte, err error) {
	id, sec, err := secret.Parse(secret.APIKeyPrefix, strings.TrimSpace(raw))
	if err != nil {
		return store.APIKey{}, nil, errKeyInvalid
	}
	k, good, err := a.keyRecord(ctx, id, sec)
	if errors.Is(err, store.ErrNotFound) {
		a.verify(dummyHash, sec)
		return store.APIKey{}, nil, errKeyInvalid
	}
	if err != nil {
		return store.APIKey{}, nil, err
	}
	if !good {
		return store.APIKey{}, k.Hash, errKeyInvalid
	}
	now := time.Now()
	if err := KeyEnded(k, now); err != nil {
		return store.APIKey{}, k.Hash, err
	}
	a.used(k, now)
	return k, k.Hash, nil
}

// keyRecord returns key id's record and whether sec is its secret. A
// record read within RecordTTL answers a good secret without the store; a
// refused secret reads the store, as an unknown id does, so that wrong and
// unknown keys take one path: one store read, one comparison.
func (a *Authenticator) keyRecord(ctx context.Context, id string, sec []byte) (store.APIKey, bool, error) {
	now := time.Now()
	held, ok, gen := a.cache.keys.get(id, now)
	ok = ok && !a.noCache
	if ok && a.verify(held.Hash, sec) {
		return held, true, nil
	}
	k, err := a.store.GetAPIKey(ctx, id)
	if err != nil {
		return k, false, err
	}
	a.cache.keys.put(id, k, now, gen)
	if ok && bytes.Equal(k.Hash, held.Hash) {
		return k, false, nil // sec was compared with this very hash
	}
	return k, a.verify(k.Hash, sec), nil
}

// keyRefused is the outcome of a key that key refused with err: a good
// key that ended says so, any other gets refused, both with refused's
// reason, and a store failure is the store's, logged: the answer
// (RELAY_UNAVAILABLE) does not say what the store said.
func (a *Authenticator) keyRefused(err error, found []byte, refused *protocol.Error) checked {
	var ended *keyEndedError
	switch {
	case errors.As(err, &ended):
		return checked{found: found, refusal: protocol.Errorf(refused.Reason, "%s", ended.msg)}
	case errors.Is(err, errKeyInvalid):
		return checked{found: found, refusal: refused}
	}
	a.log.Error("api key: store error", "err", err)
	return checked{refusal: errStore}
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
	e := a.attempt(r.RemoteAddr, c, header != "", func() checked {
		if !isBearer {
			return checked{refusal: protocol.Errorf(protocol.APIAuthRequired, "Authorization: Bearer <api key> required")}
		}
		var (
			found []byte
			err   error
		)
		if k, found, err = a.key(r.Context(), raw); err != nil {
			return a.keyRefused(err, found, protocol.Errorf(protocol.APIAuthRequired, "API key is unknown or wrong"))
		}
		return checked{good: true, found: found}
	})
	return k, e
}

// Proxy authenticates the Proxy-Authorization header of r, as
// ProxyHeader does.
func (a *Authenticator) Proxy(r *http.Request) (store.Connection, store.APIKey, *protocol.Error) {
	return a.ProxyHeader(r.Context(), r.RemoteAddr, r.Header.Get("Proxy-Authorization"))
}

// ProxyHeader authenticates Proxy-Authorization: Basic base64(<connection
// id>:<api key>), presented from remoteAddr, and returns the connection
// and the key. A key of another workspace gets exactly the answer of an
// unknown connection. The key counts as good even when the connection is
// not its to use: connection ids are not secrets, so that is no guessing.
func (a *Authenticator) ProxyHeader(ctx context.Context, remoteAddr, header string) (store.Connection, store.APIKey, *protocol.Error) {
	basic := parseBasic(header)
	var (
		conn store.Connection
		k    store.APIKey
	)
	e := a.attempt(remoteAddr, basic.credential(), header != "", func() checked {
		var out checked
		conn, k, out = a.proxy(ctx, basic)
		out.good = k.ID != ""
		return out
	})
	return conn, k, e
}

func (a *Authenticator) proxy(ctx context.Context, basic basicAuth) (store.Connection, store.APIKey, checked) {
	if basic.connID == "" { // not Basic <id>:<key>, or no connection id
		return store.Connection{}, store.APIKey{}, proxyDenied(nil)
	}
	connID := basic.connID
	k, found, err := a.key(ctx, basic.key)
	if err != nil {
		return store.Connection{}, store.APIKey{}, a.keyRefused(err, found, proxyDenied(found).refusal)
	}
	load := func() (store.Connection, error) { return a.store.GetConnection(ctx, connID) }
	var conn store.Connection
	if a.noCache {
		conn, err = load()
	} else {
		conn, err = cached(&a.cache.conns, connID, load)
	}
	if errors.Is(err, store.ErrNotFound) || (err == nil && !Sees(k, conn)) {
		return store.Connection{}, k, proxyDenied(found)
	}
	if err != nil {
		a.log.Error("connection of an api key: store error", "connection", connID, "err", err)
		return store.Connection{}, k, checked{found: found, refusal: errStore}
	}
	return conn, k, checked{found: found}
}

// proxyDenied is the one answer to every refused Proxy-Authorization,
// made only for a refusal: a CONNECT that passes formats no message.
func proxyDenied(found []byte) checked {
	return checked{found: found, refusal: protocol.Errorf(protocol.ProxyAuthRequired,
		"Proxy-Authorization must be Basic base64(<connection id>:<api key>) with a key valid for that connection")}
}

// Sees reports whether key k may see connection c: an admin key sees every
// connection, a workspace key its workspace's.
func Sees(k store.APIKey, c store.Connection) bool {
	return k.Admin || k.Workspace == c.Workspace
}
