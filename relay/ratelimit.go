package relay

import (
	"container/list"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/secret"
)

// Abuse limits.
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

// maxLimiterKeys bounds each table: a bucket costs about 150 bytes, so a
// full table is some 15 MB.
const maxLimiterKeys = 100_000

// sweepPerCall is how many stale entries one call may remove, so that a
// table empties as traffic passes without any call doing much work.
const sweepPerCall = 2

// lruMap is a map bounded to max entries; the least recently touched entry
// is evicted to make room. It is not safe for concurrent use.
type lruMap[V any] struct {
	max  int
	keys map[string]*list.Element
	lru  list.List // front = most recently touched; elements are *lruEntry[V]
}

type lruEntry[V any] struct {
	key string
	val V
}

func newLRUMap[V any](maxKeys int) *lruMap[V] {
	return &lruMap[V]{max: maxKeys, keys: make(map[string]*list.Element)}
}

func (m *lruMap[V]) get(key string) (*V, bool) {
	el, ok := m.keys[key]
	if !ok {
		return nil, false
	}
	return &el.Value.(*lruEntry[V]).val, true
}

// put stores val under key as the most recent entry and reports whether
// another entry was evicted to make room.
func (m *lruMap[V]) put(key string, val V) (evicted bool) {
	if el, ok := m.keys[key]; ok {
		el.Value.(*lruEntry[V]).val = val
		m.lru.MoveToFront(el)
		return false
	}
	if len(m.keys) >= m.max {
		m.remove(m.lru.Back().Value.(*lruEntry[V]).key)
		evicted = true
	}
	m.keys[key] = m.lru.PushFront(&lruEntry[V]{key: key, val: val})
	return evicted
}

func (m *lruMap[V]) remove(key string) {
	if el, ok := m.keys[key]; ok {
		m.lru.Remove(el)
		delete(m.keys, key)
	}
}

// sweep removes up to n of the least recently touched entries for which
// stale is true, stopping at the first that is not.
func (m *lruMap[V]) sweep(n int, stale func(*V) bool) {
	for range n {
		el := m.lru.Back()
		if el == nil {
			return
		}
		e := el.Value.(*lruEntry[V])
		if !stale(&e.val) {
			return
		}
		m.remove(e.key)
	}
}

func (m *lruMap[V]) len() int { return len(m.keys) }

// bucket is one token bucket: tokens as of at.
type bucket struct {
	tokens float64
	at     time.Time
}

// limiter keeps a token bucket per key, at most maxKeys of them. A missing
// key is a full bucket, so an entry that has refilled is dropped.
type limiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets *lruMap[bucket]
}

// newLimiter allows burst events at once and refills at rate per second.
func newLimiter(rate float64, burst, maxKeys int, now func() time.Time) *limiter {
	if now == nil {
		now = time.Now
	}
	return &limiter{rate: rate, burst: float64(burst), now: now, buckets: newLRUMap[bucket](maxKeys)}
}

// perWindow allows n events per window, all of them at once if need be.
func perWindow(n int, window time.Duration, maxKeys int, now func() time.Time) *limiter {
	return newLimiter(float64(n)/window.Seconds(), n, maxKeys, now)
}

// level is the bucket's content at now.
func (l *limiter) level(b *bucket, now time.Time) float64 {
	return math.Min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
}

func (l *limiter) levelLocked(key string, now time.Time) float64 {
	b, ok := l.buckets.get(key)
	if !ok {
		return l.burst
	}
	return l.level(b, now)
}

// untilOne is how long a bucket at level needs to hold one whole token.
func (l *limiter) untilOne(level float64) time.Duration {
	if level >= 1 {
		return 0
	}
	return time.Duration((1 - level) / l.rate * float64(time.Second))
}

// wait returns how long key must wait for one token; 0 means one is there.
// It changes nothing.
func (l *limiter) wait(key string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.untilOne(l.levelLocked(key, l.now()))
}

// charged reports whether key has used any of its burst that has not
// refilled yet.
func (l *limiter) charged(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.levelLocked(key, l.now()) < l.burst
}

// charge takes one token from key, never going below zero, and reports
// whether this charge emptied the bucket (the next event would wait).
func (l *limiter) charge(key string) (emptied bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	before := l.levelLocked(key, now)
	after := math.Max(0, before-1)
	l.store(key, after, now)
	return before >= 1 && after < 1
}

// take takes one token from key if there is one; otherwise it returns how
// long to wait and takes nothing.
func (l *limiter) take(key string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	lvl := l.levelLocked(key, now)
	if lvl < 1 {
		return l.untilOne(lvl), false
	}
	l.store(key, lvl-1, now)
	return 0, true
}

func (l *limiter) store(key string, level float64, now time.Time) {
	l.buckets.put(key, bucket{tokens: level, at: now})
	l.buckets.sweep(sweepPerCall, func(b *bucket) bool { return l.level(b, now) >= l.burst })
}

// size is the number of keys held, for tests.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buckets.len()
}

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
	return parseCredential(apiKeyPrefix, key)
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

// authGuard applies the auth failure limits. Either limiter may be nil
// (that limit is off).
type authGuard struct {
	log     *slog.Logger
	sources *limiter
	creds   *limiter
	window  time.Duration
	verify  func(hash, sec []byte) bool
	now     func() time.Time

	mu   sync.Mutex
	good *lruMap[goodCredential]
}

// newAuthGuard builds the guard of a filled Config; now is the clock.
func newAuthGuard(cfg Config, log *slog.Logger, now func() time.Time) *authGuard {
	g := &authGuard{
		log:    log,
		window: cfg.AuthLimitWindow,
		verify: cfg.verifySecret,
		now:    now,
		good:   newLRUMap[goodCredential](maxLimiterKeys),
	}
	if cfg.AuthFailuresPerSource > 0 {
		g.sources = perWindow(cfg.AuthFailuresPerSource, cfg.AuthLimitWindow, maxLimiterKeys, now)
	}
	if cfg.AuthFailuresPerCredential > 0 {
		g.creds = perWindow(cfg.AuthFailuresPerCredential, cfg.AuthLimitWindow, maxLimiterKeys, now)
	}
	return g
}

// admit decides, before any store lookup, whether an attempt from
// remoteAddr presenting c may be checked. It returns the refusal to send
// when not.
func (g *authGuard) admit(remoteAddr string, c credential) *apiError {
	src := sourceKey(remoteAddr)
	var wait time.Duration
	what := ""
	if g.sources != nil {
		wait, what = g.sources.wait(src), "from this address"
	}
	if wait == 0 && g.creds != nil && c.key != "" && (g.sources == nil || g.sources.charged(src)) {
		wait, what = g.creds.wait(c.key), "for this credential"
	}
	if wait == 0 || g.recentlyGood(c) {
		return nil
	}
	secs := int(math.Ceil(wait.Seconds()))
	return &apiError{
		reason:     protocol.RateLimited,
		msg:        fmt.Sprintf("too many refused credentials %s; retry in %d s", what, secs),
		retryAfter: max(1, secs),
	}
}

// recentlyGood reports whether c's secret matches one that authenticated
// on this node within the window.
func (g *authGuard) recentlyGood(c credential) bool {
	if c.key == "" {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	gc, ok := g.good.get(c.key)
	if !ok {
		return false
	}
	if g.now().Sub(gc.at) >= g.window {
		g.good.remove(c.key)
		return false
	}
	return g.verify(gc.hash, c.sec)
}

// succeeded remembers c as good. It does not touch any failure count.
func (g *authGuard) succeeded(c credential) {
	if c.key == "" {
		return
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.good.put(c.key, goodCredential{hash: secret.Hash(c.sec), at: now})
	g.good.sweep(sweepPerCall, func(gc *goodCredential) bool { return now.Sub(gc.at) >= g.window })
}

// failed charges a refused attempt to its source and credential. A real
// secret the store refused (revoked, expired) is no longer good.
func (g *authGuard) failed(remoteAddr string, c credential) {
	src := sourceKey(remoteAddr)
	if g.sources != nil && g.sources.charge(src) {
		g.log.Warn("auth failures from a source address are rate limited", "source", src)
	}
	if c.key == "" {
		return
	}
	if g.creds != nil && g.creds.charge(c.key) {
		g.log.Warn("auth failures for a credential are rate limited", "credential", c.key)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	hash := dummyHash
	gc, ok := g.good.get(c.key)
	if ok {
		hash = gc.hash
	}
	// Compare either way, so that a refusal costs the same whether or not
	// its id was recently good.
	if g.verify(hash, c.sec) && ok {
		g.good.remove(c.key)
	}
}

// proxyRate caps proxy requests per API key; nil when off.
func newProxyRate(cfg Config) *limiter {
	if cfg.ProxyRatePerKey <= 0 {
		return nil
	}
	return newLimiter(cfg.ProxyRatePerKey, cfg.ProxyBurstPerKey, maxLimiterKeys, nil)
}

// admitProxyRequest takes one request from the key's proxy rate.
func (s *Server) admitProxyRequest(keyID string) *apiError {
	if s.proxyRate == nil {
		return nil
	}
	wait, ok := s.proxyRate.take(keyID)
	if ok {
		return nil
	}
	secs := max(1, int(math.Ceil(wait.Seconds())))
	return &apiError{
		reason:     protocol.RateLimited,
		msg:        fmt.Sprintf("API key %s is over its proxy rate of %g requests per second", keyID, s.cfg.ProxyRatePerKey),
		retryAfter: secs,
	}
}
