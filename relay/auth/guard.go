package auth

import (
	"encoding/base64"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/ratelimit"
	"github.com/postern/postern/relay/secret"
)

// Limits on refused credentials.
//
// Refused credentials are counted in memory, never in the store, per source
// address and per credential id. The gate runs before any store lookup, so
// an attempt it refuses costs the relay a map lookup and nothing else.
//
// Decisions, and why:
//
//   - Only refused credentials count. A request that presents none (a
//     proxy client waiting for the 407 challenge) is refused without being
//     charged; a malformed one is charged to its source.
//   - A success never refunds or resets anything: a client holding one
//     valid key cannot interleave successes to keep guessing other keys.
//   - The source is the peer address of the connection: the TCP peer, or
//     the client a trusted load balancer named in a PROXY protocol header
//     (relay/proxyproto). An IPv6 source is counted per /64, since one
//     host commonly owns a whole /64. X-Forwarded-For and the like are
//     never trusted.
//   - The per-credential limit applies only to sources that have been
//     refused themselves within the window. Credential ids are not secret
//     (they appear in logs and URLs), so without this anyone who learned
//     an agent's token id could lock that agent out by failing on purpose;
//     with it, the legitimate agent, whose own record is clean, still gets
//     through, while the attacker's failing sources are held back.
//   - Limits hold back refused credentials, never good ones. A source
//     that is over its limit (a NAT or load balancer shared with an
//     attacker, a client with one stale key) still gets a good credential
//     through, without turning a flood into store reads: its secret is
//     first compared with the hash this node holds in memory for that id
//     (kept from a success, or from a lookup that found the record, for
//     knownFor). A match goes on to the full check; a mismatch is refused
//     on the spot. An id the node holds nothing for may go to the store
//     only within a relay-wide budget of lookups per second
//     (LookupsWhileLimited); past it the attempt is refused. So a correct
//     credential this node has seen passes whatever the flood, one it has
//     not seen passes within the budget, and a flood costs at most the
//     budget in store reads. A real secret the store refuses (revoked,
//     expired) is dropped from memory at once.
//   - Retry-After is the time until the limited bucket holds one attempt
//     again. Limited attempts are not charged, so a patient client is
//     never locked out for longer than that.
//
// Every table is bounded (maxLimiterKeys entries, least recently charged
// evicted first) and swept lazily on use, so no goroutine is involved and
// memory stays flat under a flood of random ids or addresses.

// credential is what an authentication attempt presented: key names the
// credential's kind and public id ("" when it does not parse), sec is the
// secret part.
type credential struct {
	key string
	sec []byte
}

// parseCredential reads the id of a presented credential without touching
// the store. A well-formed id with a malformed secret (truncated,
// mistyped) has its key and no secret; anything else unparsable has an
// empty key.
func parseCredential(prefix, raw string) credential {
	raw = strings.TrimSpace(raw)
	id, sec, err := secret.Parse(prefix, raw)
	if err == nil {
		return credential{key: prefix + ":" + id, sec: sec}
	}
	if id, ok := secret.ParseID(prefix, raw); ok {
		return credential{key: prefix + ":" + id}
	}
	return credential{}
}

// basicAuth is what a Proxy-Authorization: Basic header names.
type basicAuth struct{ connID, key string }

// parseBasic decodes a Proxy-Authorization: Basic header once, for both
// the limits on refused credentials and the check against the store; it
// is empty when the header is not Basic base64(<id>:<key>).
func parseBasic(header string) basicAuth {
	raw, ok := strings.CutPrefix(header, "Basic ")
	if !ok {
		return basicAuth{}
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(raw))
	if err != nil {
		return basicAuth{}
	}
	connID, key, ok := strings.Cut(string(dec), ":")
	if !ok {
		return basicAuth{}
	}
	return basicAuth{connID: connID, key: key}
}

// credential is the API key of b, as the limits count it.
func (b basicAuth) credential() credential {
	return parseCredential(secret.APIKeyPrefix, b.key)
}

// proxyCredential reads the API key of a Proxy-Authorization header.
func proxyCredential(header string) credential {
	return parseBasic(header).credential()
}

// sourceKey is the address an attempt is charged to: the peer IP, or its
// /64 for IPv6.
func sourceKey(remoteAddr string) string {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return remoteAddr // not IP (a test's pipe); still one key per peer
	}
	a := ap.Addr().Unmap().WithZone("")
	if a.Is6() {
		p, err := a.Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return a.String()
}

// knownFor is how long the hash of a credential id stays in memory after
// a success or a lookup that found it. An id's hash never changes, so
// this bounds memory, not staleness.
const knownFor = time.Hour

// knownCredential is the stored hash of a credential id, as of at.
type knownCredential struct {
	hash []byte
	at   time.Time
}

// recall is what the node's memory says of a presented credential.
type recall int

const (
	recallUnknown recall = iota // no hash held for its id
	recallMatch                 // its secret matches the hash held
	recallDiffers               // its secret does not (or it has no id)
)

// guard applies the limits on refused credentials. Either limiter may be
// nil (that limit is off); lookups is nil when limited sources get no
// store lookups.
type guard struct {
	log     *slog.Logger
	sources *ratelimit.Limiter
	creds   *ratelimit.Limiter
	lookups *ratelimit.Limiter
	window  time.Duration
	keep    time.Duration
	verify  Verifier
	now     func() time.Time

	mu    sync.Mutex
	known *ratelimit.LRU[knownCredential]
}

// newGuard builds the guard of cfg; now is the clock.
func newGuard(cfg Config, verify Verifier, log *slog.Logger, now func() time.Time) *guard {
	g := &guard{
		log:    log,
		window: cfg.Window,
		keep:   max(knownFor, cfg.Window),
		verify: verify,
		now:    now,
		known:  ratelimit.NewLRU[knownCredential](ratelimit.MaxKeys),
	}
	if cfg.FailuresPerSource > 0 {
		g.sources = ratelimit.PerWindow(cfg.FailuresPerSource, cfg.Window, ratelimit.MaxKeys, now)
	}
	if cfg.FailuresPerCredential > 0 {
		g.creds = ratelimit.PerWindow(cfg.FailuresPerCredential, cfg.Window, ratelimit.MaxKeys, now)
	}
	if cfg.LookupsWhileLimited > 0 {
		g.lookups = ratelimit.New(cfg.LookupsWhileLimited, max(1, int(math.Ceil(cfg.LookupsWhileLimited))), 1, now)
	}
	return g
}

// admit decides, before any store lookup, whether an attempt from
// remoteAddr presenting c may be checked. It returns the refusal to send
// when not.
func (g *guard) admit(remoteAddr string, c credential) *protocol.Error {
	wait, what := g.wait(sourceKey(remoteAddr), c)
	if wait == 0 {
		return nil
	}
	switch g.recall(c) {
	case recallMatch:
		return nil
	case recallUnknown:
		if g.lookups != nil {
			if _, ok := g.lookups.Take(""); ok {
				return nil
			}
		}
	}
	secs := int(math.Ceil(wait.Seconds()))
	e := protocol.Errorf(protocol.RateLimited, "too many refused credentials %s; retry in %d s", what, secs)
	e.RetryAfter = max(1, secs)
	return e
}

// wait is how long an attempt from src presenting c is held back by the
// limits, and which limit holds it.
func (g *guard) wait(src string, c credential) (time.Duration, string) {
	var wait time.Duration
	what := ""
	if g.sources != nil {
		wait, what = g.sources.Wait(src), "from this address"
	}
	if wait == 0 && g.creds != nil && c.key != "" && (g.sources == nil || g.sources.Charged(src)) {
		wait, what = g.creds.Wait(c.key), "for this credential"
	}
	return wait, what
}

// recall compares c's secret with the hash held for its id, if any.
func (g *guard) recall(c credential) recall {
	if c.key == "" {
		return recallDiffers
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	kc, ok := g.known.Get(c.key)
	if !ok {
		return recallUnknown
	}
	if g.now().Sub(kc.at) >= g.keep {
		g.known.Remove(c.key)
		return recallUnknown
	}
	if g.verify(kc.hash, c.sec) {
		return recallMatch
	}
	return recallDiffers
}

// remember holds hash for c's id; the caller holds g.mu.
func (g *guard) remember(c credential, hash []byte, now time.Time) {
	g.known.Put(c.key, knownCredential{hash: hash, at: now})
	g.known.Sweep(ratelimit.SweepPerCall, func(kc *knownCredential) bool { return now.Sub(kc.at) >= g.keep })
}

// succeeded remembers c's hash. It does not touch any failure count.
func (g *guard) succeeded(c credential) {
	if c.key == "" {
		return
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.remember(c, secret.Hash(c.sec), now)
}

// failed charges a refused attempt to its source and credential. found is
// the hash of the record the store found for c's id, nil when none: it is
// held, so that further wrong secrets for that id are refused from memory
// while the source is limited. A real secret the store refused (revoked,
// expired) is forgotten instead.
func (g *guard) failed(remoteAddr string, c credential, found []byte) {
	src := sourceKey(remoteAddr)
	if g.sources != nil && g.sources.Charge(src) {
		g.log.Warn("auth failures from a source address are rate limited", "source", src)
	}
	if c.key == "" {
		return
	}
	if g.creds != nil && g.creds.Charge(c.key) {
		g.log.Warn("auth failures for a credential are rate limited", "credential", c.key)
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	hash := dummyHash
	kc, held := g.known.Get(c.key)
	switch {
	case found != nil:
		hash = found
	case held:
		hash = kc.hash
	}
	// Compare in every case, so that a refusal costs the same whether or
	// not its id exists or is held.
	genuine := g.verify(hash, c.sec) && (found != nil || held)
	switch {
	case genuine:
		g.known.Remove(c.key)
	case found != nil:
		g.remember(c, found, now)
	}
}
