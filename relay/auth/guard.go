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
//   - The source is the peer address of the TCP connection. An IPv6 source
//     is counted per /64, since one host commonly owns a whole /64.
//     X-Forwarded-For and the like are never trusted: a relay behind a
//     load balancer that hides peer addresses needs a trusted-proxy list,
//     which does not exist yet, and until then counts per balancer address.
//   - The per-credential limit applies only to sources that have been
//     refused themselves within the window. Credential ids are not secret
//     (they appear in logs and status), so without this anyone who learned
//     an agent's token id could lock that agent out by failing on purpose;
//     with it, the legitimate agent, whose own record is clean, still gets
//     through, while the attacker's failing sources are held back.
//   - A source that is over its limit may still use a credential that was
//     verified on this node within the window: its secret is checked
//     against the hash kept from that success, in memory, before anything
//     else happens. So a shared egress address (the product's NAT, a
//     corporate proxy) that also carries an attacker, or a client with one
//     stale key, does not take down the valid keys that come from it. Only
//     the holder of the real secret gets past this way, and a credential
//     the store later refuses (revoked, expired) is dropped at once.
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
// the store. Anything unparsable has an empty key.
func parseCredential(prefix, raw string) credential {
	id, sec, err := secret.Parse(prefix, strings.TrimSpace(raw))
	if err != nil {
		return credential{}
	}
	return credential{key: prefix + ":" + id, sec: sec}
}

// proxyCredential reads the API key of a Proxy-Authorization header.
func proxyCredential(header string) credential {
	raw, ok := strings.CutPrefix(header, "Basic ")
	if !ok {
		return credential{}
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(raw))
	if err != nil {
		return credential{}
	}
	_, key, ok := strings.Cut(string(dec), ":")
	if !ok {
		return credential{}
	}
	return parseCredential(secret.APIKeyPrefix, key)
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

// goodCredential is the hash of a secret that authenticated at at.
type goodCredential struct {
	hash []byte
	at   time.Time
}

// guard applies the limits on refused credentials. Either limiter may be
// nil (that limit is off).
type guard struct {
	log     *slog.Logger
	sources *ratelimit.Limiter
	creds   *ratelimit.Limiter
	window  time.Duration
	verify  Verifier
	now     func() time.Time

	mu   sync.Mutex
	good *ratelimit.LRU[goodCredential]
}

// newGuard builds the guard of cfg; now is the clock.
func newGuard(cfg Config, verify Verifier, log *slog.Logger, now func() time.Time) *guard {
	g := &guard{
		log:    log,
		window: cfg.Window,
		verify: verify,
		now:    now,
		good:   ratelimit.NewLRU[goodCredential](ratelimit.MaxKeys),
	}
	if cfg.FailuresPerSource > 0 {
		g.sources = ratelimit.PerWindow(cfg.FailuresPerSource, cfg.Window, ratelimit.MaxKeys, now)
	}
	if cfg.FailuresPerCredential > 0 {
		g.creds = ratelimit.PerWindow(cfg.FailuresPerCredential, cfg.Window, ratelimit.MaxKeys, now)
	}
	return g
}

// admit decides, before any store lookup, whether an attempt from
// remoteAddr presenting c may be checked. It returns the refusal to send
// when not.
func (g *guard) admit(remoteAddr string, c credential) *protocol.Error {
	src := sourceKey(remoteAddr)
	var wait time.Duration
	what := ""
	if g.sources != nil {
		wait, what = g.sources.Wait(src), "from this address"
	}
	if wait == 0 && g.creds != nil && c.key != "" && (g.sources == nil || g.sources.Charged(src)) {
		wait, what = g.creds.Wait(c.key), "for this credential"
	}
	if wait == 0 || g.recentlyGood(c) {
		return nil
	}
	secs := int(math.Ceil(wait.Seconds()))
	e := protocol.Errorf(protocol.RateLimited, "too many refused credentials %s; retry in %d s", what, secs)
	e.RetryAfter = max(1, secs)
	return e
}

// recentlyGood reports whether c's secret matches one that authenticated
// on this node within the window.
func (g *guard) recentlyGood(c credential) bool {
	if c.key == "" {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	gc, ok := g.good.Get(c.key)
	if !ok {
		return false
	}
	if g.now().Sub(gc.at) >= g.window {
		g.good.Remove(c.key)
		return false
	}
	return g.verify(gc.hash, c.sec)
}

// succeeded remembers c as good. It does not touch any failure count.
func (g *guard) succeeded(c credential) {
	if c.key == "" {
		return
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.good.Put(c.key, goodCredential{hash: secret.Hash(c.sec), at: now})
	g.good.Sweep(ratelimit.SweepPerCall, func(gc *goodCredential) bool { return now.Sub(gc.at) >= g.window })
}

// failed charges a refused attempt to its source and credential. A real
// secret the store refused (revoked, expired) is no longer good.
func (g *guard) failed(remoteAddr string, c credential) {
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
	g.mu.Lock()
	defer g.mu.Unlock()
	hash := dummyHash
	gc, ok := g.good.Get(c.key)
	if ok {
		hash = gc.hash
	}
	// Compare either way, so that a refusal costs the same whether or not
	// its id was recently good.
	if g.verify(hash, c.sec) && ok {
		g.good.Remove(c.key)
	}
}
