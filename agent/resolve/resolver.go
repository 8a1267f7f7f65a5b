package resolve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Sentinel errors. Lookup wraps them with the name and what the servers said, e.g.
// "lookup jira.corp: DNS timeout: no answer from 10.0.0.2:53 after 2 tries".
var (
	ErrNXDomain    = errors.New("no such host (NXDOMAIN)")
	ErrServFail    = errors.New("DNS server failure (SERVFAIL)")
	ErrTimeout     = errors.New("DNS timeout")
	ErrNoAddress   = errors.New("name has no A or AAAA records")
	ErrInvalidName = errors.New("invalid host name")
)

// Sources of an Answer.
const (
	SourceLiteral = "literal" // the host was an IP address; nothing was looked up
	SourceHosts   = "hosts"   // from the hosts file
	SourceCache   = "cache"   // every record set came from the cache
	SourceDNS     = "dns"     // at least one record set came from a server just now
)

// Defaults for the zero values of Config.
const (
	DefaultResolvConf  = "/etc/resolv.conf"
	DefaultHostsFile   = "/etc/hosts"
	DefaultTimeout     = 2 * time.Second
	DefaultAttempts    = 2
	DefaultNdots       = 1
	DefaultMaxTTL      = 5 * time.Minute
	DefaultNegativeTTL = 5 * time.Second
	// fallbackServer is used only when resolv.conf does not exist and no servers are
	// configured, which is what the C library does too. It is logged, because on a host
	// without a local resolver every lookup will then time out.
	fallbackServer = "127.0.0.1:53"
)

// Config says which servers to ask and how. Zero values take the value from resolv.conf, then
// the package default.
type Config struct {
	// Servers are "ip:port" (a bare IP means port 53), asked in this order. Empty means
	// the nameserver lines of ResolvConf.
	Servers []string
	// Search domains appended to names with fewer than Ndots dots. Empty means the
	// search (or domain) line of ResolvConf.
	Search []string
	// Ndots: a name with at least this many dots is tried as given before the search
	// list. 0 means resolv.conf's "options ndots:N", else 1; negative means 0.
	Ndots int
	// Timeout for one try against one server. 0 means resolv.conf's "options timeout:N",
	// else 2s.
	Timeout time.Duration
	// Attempts is how many times the server list is tried. 0 means resolv.conf's
	// "options attempts:N", else 2.
	Attempts int
	// ResolvConf is the resolv.conf to read; default /etc/resolv.conf. It is read once, by New.
	ResolvConf string
	// HostsFile is consulted before DNS; default /etc/hosts. It is re-read when it changes.
	HostsFile string
	// MaxTTL caps how long an answer is cached; default 5m. Negative disables the cache.
	MaxTTL time.Duration
	// NegativeTTL is how long NXDOMAIN and NODATA answers are cached (or the zone's SOA
	// negative TTL if smaller); default 5s. Negative disables negative caching.
	NegativeTTL time.Duration
	// Logger receives debug lines per lookup and warnings about the system files.
	Logger *slog.Logger
	// Now is the clock for cache expiry and hosts-file checks; default time.Now. Tests set it.
	Now func() time.Time
}

// Answer says how a Lookup was answered. It is filled in on failure too, as far as known.
type Answer struct {
	Server   string        // the server that answered ("ip:port"); empty for hosts and literals
	Name     string        // the FQDN that answered, after search expansion
	Rcode    string        // "NOERROR", "NXDOMAIN", "SERVFAIL", ...; empty if no server answered
	Source   string        // SourceLiteral, SourceHosts, SourceCache or SourceDNS
	Duration time.Duration // time spent in Lookup
	TTL      time.Duration // how long the answer stays valid (remaining time for a cache hit)
	// CNAMEs are the aliases the resolver followed from Name to the addresses (lower-case
	// FQDNs, in order: the A answer's chain, then any other names of the AAAA answer's),
	// from the cache as from a server. Empty for hosts-file answers and literals.
	CNAMEs []string
}

// Stats are counters since New.
type Stats struct {
	Lookups   uint64 // calls to Lookup
	Queries   uint64 // DNS messages sent (each UDP and TCP try)
	CacheHits uint64 // (name, type) questions answered from the cache
	HostsHits uint64 // lookups answered from the hosts file
	NXDomain  uint64 // lookups that ended in ErrNXDomain
	NoAddress uint64 // lookups that ended in ErrNoAddress
	ServFail  uint64 // lookups that ended in ErrServFail
	Timeouts  uint64 // lookups that ended in ErrTimeout
}

type counters struct {
	lookups, queries, cacheHits, hostsHits  atomic.Uint64
	nxdomain, noAddress, servFail, timeouts atomic.Uint64
}

// Resolver looks names up. It is safe for concurrent use and starts no background goroutines;
// the goroutines of a Lookup end before it returns.
type Resolver struct {
	servers     []string
	search      []string
	ndots       int
	timeout     time.Duration
	attempts    int
	maxTTL      time.Duration
	negativeTTL time.Duration
	now         func() time.Time
	log         *slog.Logger
	dialer      net.Dialer
	hosts       *hostsFile
	cache       *cache
	stats       counters
	lastErr     atomic.Pointer[string]
}

// Servers returns the DNS servers in use, in the order they are asked.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

// LastError returns the newest lookup error, or "".
func (r *Resolver) LastError() string {
	if p := r.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// New builds a Resolver from cfg, reading resolv.conf and the hosts file.
func New(cfg Config) (*Resolver, error) {
	r := &Resolver{log: cfg.Logger, now: cfg.Now}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	rcPath := orDefault(cfg.ResolvConf, DefaultResolvConf)
	data, rcErr := readBounded(rcPath, maxResolvConfSize)
	rc := parseResolvConf(data)

	switch {
	case len(cfg.Servers) > 0:
		for _, s := range cfg.Servers {
			ap, err := parseServer(s)
			if err != nil {
				return nil, err
			}
			r.servers = append(r.servers, ap)
		}
	case rcErr == nil && len(rc.servers) > 0:
		r.servers = rc.servers
	case rcErr == nil:
		return nil, fmt.Errorf("%s: no usable nameserver line; set dns.servers", rcPath)
	case errors.Is(rcErr, fs.ErrNotExist):
		r.log.Warn("resolv.conf missing and no DNS servers configured; using 127.0.0.1:53", "path", rcPath)
		r.servers = []string{fallbackServer}
	default:
		return nil, fmt.Errorf("read resolv.conf: %w", rcErr)
	}

	if len(cfg.Search) > 0 {
		for _, d := range cfg.Search {
			r.search = appendSearch(r.search, d)
		}
	} else {
		r.search = rc.search
	}

	switch {
	case cfg.Ndots > 0:
		r.ndots = min(cfg.Ndots, maxNdots)
	case cfg.Ndots < 0:
		r.ndots = 0
	case rc.ndotsSet:
		r.ndots = rc.ndots
	default:
		r.ndots = DefaultNdots
	}
	r.timeout = firstPositive(cfg.Timeout, rc.timeout, DefaultTimeout)
	r.attempts = firstPositive(cfg.Attempts, rc.attempts, DefaultAttempts)
	r.maxTTL = firstNonZero(cfg.MaxTTL, DefaultMaxTTL)
	r.negativeTTL = firstNonZero(cfg.NegativeTTL, DefaultNegativeTTL)

	cacheSize := defaultCacheSize
	if r.maxTTL < 0 {
		cacheSize = 0
	}
	r.cache = newCache(cacheSize)
	r.hosts = newHostsFile(orDefault(cfg.HostsFile, DefaultHostsFile), r.now(), r.log)
	return r, nil
}

// parseServer accepts "ip:port" or a bare IP (port 53).
func parseServer(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
		return ap.String(), nil
	}
	if ip, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return netip.AddrPortFrom(ip, 53).String(), nil
	}
	return "", fmt.Errorf("dns server %q: want ip:port", s)
}

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	c := &r.stats
	return Stats{
		Lookups: c.lookups.Load(), Queries: c.queries.Load(), CacheHits: c.cacheHits.Load(),
		HostsHits: c.hostsHits.Load(), NXDomain: c.nxdomain.Load(), NoAddress: c.noAddress.Load(),
		ServFail: c.servFail.Load(), Timeouts: c.timeouts.Load(),
	}
}

// Lookup returns the addresses of host. An IP literal is returned as is; a name in the hosts
// file gets its addresses from there; otherwise the search candidates are asked for A and AAAA
// in parallel, and the first candidate with any address wins.
//
// Order: IPv4 addresses first, then IPv6, each in the order the server (or hosts file) gave.
//
// Errors wrap ErrNXDomain, ErrNoAddress, ErrServFail, ErrTimeout or ErrInvalidName, or the
// context's error if ctx ended first. Over several search candidates the error reported is
// the most informative one: a timeout (which also stops the search, as glibc does) beats
// SERVFAIL, which beats NODATA (ErrNoAddress), which beats NXDOMAIN. So ErrNXDomain means
// every candidate was answered and none exists.
func (r *Resolver) Lookup(ctx context.Context, host string) ([]netip.Addr, Answer, error) {
	start := time.Now()
	r.stats.lookups.Add(1)
	addrs, ans, err := r.lookup(ctx, host)
	ans.Duration = time.Since(start)
	if dl, ok := ctx.Deadline(); ok && errors.Is(err, ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && !time.Now().Before(dl) {
		// The tries were cut by the caller's deadline a moment before the
		// context noticed it: report the deadline, as the context will.
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	if err != nil {
		switch {
		case errors.Is(err, ErrNXDomain):
			r.stats.nxdomain.Add(1)
		case errors.Is(err, ErrNoAddress):
			r.stats.noAddress.Add(1)
		case errors.Is(err, ErrServFail):
			r.stats.servFail.Add(1)
		case errors.Is(err, ErrTimeout):
			r.stats.timeouts.Add(1)
		}
		msg := err.Error()
		r.lastErr.Store(&msg)
		r.log.Debug("dns lookup", "host", host, "name", ans.Name, "server", ans.Server,
			"rcode", ans.Rcode, "source", ans.Source, "duration", ans.Duration, "err", err)
		return nil, ans, err
	}
	r.log.Debug("dns lookup", "host", host, "name", ans.Name, "server", ans.Server,
		"source", ans.Source, "addrs", len(addrs), "ttl", ans.TTL, "duration", ans.Duration)
	return addrs, ans, nil
}

func (r *Resolver) lookup(ctx context.Context, host string) ([]netip.Addr, Answer, error) {
	name, literal, absolute, err := normalizeHost(host)
	if err != nil {
		return nil, Answer{}, fmt.Errorf("lookup %q: %w", host, err)
	}
	if literal.IsValid() {
		return []netip.Addr{literal}, Answer{Name: literal.String(), Source: SourceLiteral}, nil
	}
	if addrs := r.hosts.lookup(r.now(), name); len(addrs) > 0 {
		r.stats.hostsHits.Add(1)
		return sortFamilies(addrs), Answer{Name: dns.Fqdn(name), Source: SourceHosts}, nil
	}

	cands := r.candidates(name, absolute)
	var worst *pairResult
	var tried []string
	for _, qname := range cands {
		p := r.resolvePair(ctx, qname)
		if p.kind == outcomeCanceled {
			return nil, p.answer(), fmt.Errorf("lookup %s: %w", host, p.err)
		}
		if p.kind == outcomeAddrs {
			return p.addrs, p.answer(), nil
		}
		tried = append(tried, qname)
		if worst == nil || severity(p.kind) >= severity(worst.kind) {
			worst = &p
		}
		if p.kind == outcomeTimeout {
			break
		}
	}
	ans := worst.answer()
	via := "answered by " + worst.server
	if worst.source == SourceCache {
		via = "cached answer from " + worst.server
	}
	switch worst.kind {
	case outcomeTimeout:
		return nil, ans, fmt.Errorf("lookup %s: %w: %s", host, ErrTimeout, worst.detail)
	case outcomeServFail:
		return nil, ans, fmt.Errorf("lookup %s: %w: %s", host, ErrServFail, worst.detail)
	case outcomeNoData:
		return nil, ans, fmt.Errorf("lookup %s: %w: %s (%s)", host, ErrNoAddress, worst.name, via)
	default:
		return nil, ans, fmt.Errorf("lookup %s: %w: tried %s (%s)", host, ErrNXDomain, strings.Join(tried, ", "), via)
	}
}

func severity(k outcome) int {
	switch k {
	case outcomeTimeout:
		return 4
	case outcomeServFail:
		return 3
	case outcomeNoData:
		return 2
	case outcomeNXDomain:
		return 1
	}
	return 0
}

// normalizeHost returns either an IP literal, or the lower-case name without trailing dot and
// whether it was absolute (had the trailing dot).
func normalizeHost(host string) (name string, literal netip.Addr, absolute bool, err error) {
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return "", ip, false, nil
	}
	name = strings.ToLower(host)
	absolute = strings.HasSuffix(name, ".")
	name = strings.TrimSuffix(name, ".")
	if !validName(name) {
		return "", netip.Addr{}, false, ErrInvalidName
	}
	return name, netip.Addr{}, absolute, nil
}

// candidates lists the FQDNs to try, in order, following glibc's res_search: an absolute
// name is tried alone; a name with at least ndots dots is tried as is, then with each search
// domain; a shorter name is tried with each search domain, then as is.
func (r *Resolver) candidates(name string, absolute bool) []string {
	asIs := name + "."
	if absolute {
		return []string{asIs}
	}
	dotsEnough := strings.Count(name, ".") >= r.ndots
	var out []string
	if dotsEnough {
		out = append(out, asIs)
	}
	for _, s := range r.search {
		c := name + "." + s
		if len(c) <= 254 && c != asIs {
			out = append(out, c)
		}
	}
	if !dotsEnough {
		out = append(out, asIs)
	}
	return out
}

// pairResult combines the A and AAAA answers for one candidate name.
type pairResult struct {
	kind   outcome
	name   string
	addrs  []netip.Addr
	server string
	rcode  int
	source string
	ttl    time.Duration
	detail string
	err    error
	chain  []string // CNAME targets of both answers, without repeats
}

func (p pairResult) answer() Answer {
	return Answer{Server: p.server, Name: p.name, Rcode: rcodeName(p.rcode), Source: p.source, TTL: p.ttl,
		CNAMEs: p.chain}
}

// resolvePair asks for A and AAAA of qname concurrently and combines them.
func (r *Resolver) resolvePair(ctx context.Context, qname string) pairResult {
	var a, aaaa result
	var wg sync.WaitGroup
	wg.Go(func() { aaaa = r.resolveType(ctx, qname, dns.TypeAAAA) })
	a = r.resolveType(ctx, qname, dns.TypeA)
	wg.Wait()

	p := pairResult{name: qname, source: SourceDNS, chain: mergeChains(a.chain, aaaa.chain)}
	if a.fromCache && aaaa.fromCache {
		p.source = SourceCache
	}
	if a.kind == outcomeCanceled || aaaa.kind == outcomeCanceled {
		p.kind, p.rcode, p.err = outcomeCanceled, -1, cmpErr(a.err, aaaa.err)
		return p
	}
	if a.kind == outcomeAddrs || aaaa.kind == outcomeAddrs {
		p.kind, p.rcode = outcomeAddrs, dns.RcodeSuccess
		p.addrs = append(append([]netip.Addr(nil), a.addrs...), aaaa.addrs...)
		p.ttl = -1
		for _, res := range []result{a, aaaa} {
			if res.kind != outcomeAddrs {
				continue
			}
			if p.server == "" {
				p.server = res.server
			}
			if p.ttl < 0 || res.ttl < p.ttl {
				p.ttl = res.ttl
			}
		}
		return p
	}
	// No addresses: report the more severe of the two answers.
	worse := a
	if severity(aaaa.kind) > severity(a.kind) {
		worse = aaaa
	}
	p.kind, p.server, p.rcode, p.detail = worse.kind, worse.server, worse.rcode, worse.detail
	if p.kind == outcomeNXDomain && a.kind != aaaa.kind {
		// One type says the name does not exist, the other that it exists without data:
		// the name exists.
		p.kind = outcomeNoData
		p.rcode = dns.RcodeSuccess
	}
	if p.kind == outcomeNoData || p.kind == outcomeNXDomain {
		p.ttl = min(max(a.ttl, 0), max(aaaa.ttl, 0))
	}
	return p
}

// resolveType answers one (name, type) question from the cache or the servers, and caches
// what may be cached.
func (r *Resolver) resolveType(ctx context.Context, qname string, qtype uint16) result {
	key := cacheKey{name: qname, qtype: qtype}
	now := r.now()
	if e, ok := r.cache.get(now, key); ok {
		r.stats.cacheHits.Add(1)
		return result{
			reply:     reply{kind: e.kind, addrs: e.addrs, rcode: e.rcode, chain: e.chain, ttl: e.expires.Sub(now)},
			server:    e.server,
			fromCache: true,
		}
	}
	res := r.exchange(ctx, qname, qtype)
	switch res.kind {
	case outcomeAddrs:
		res.ttl = max(0, min(res.ttl, r.maxTTL))
	case outcomeNXDomain, outcomeNoData:
		ttl := r.negativeTTL
		if res.ttl >= 0 && res.ttl < ttl {
			ttl = res.ttl
		}
		res.ttl = max(0, min(ttl, r.maxTTL))
	default:
		return res // failures are never cached
	}
	if res.ttl > 0 {
		r.cache.put(key, cacheEntry{kind: res.kind, addrs: res.addrs, chain: res.chain, rcode: res.rcode,
			server: res.server, expires: now.Add(res.ttl)})
	}
	return res
}

// mergeChains returns the names of a, then those of b not in a, in a new slice (the cache
// keeps the originals); nil when both are empty.
func mergeChains(a, b []string) []string {
	var out []string
	for _, n := range slices.Concat(a, b) {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// sortFamilies returns addrs with IPv4 (including IPv4-mapped) first, keeping relative order.
func sortFamilies(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a.Unmap().Is4() {
			out = append(out, a)
		}
	}
	for _, a := range addrs {
		if !a.Unmap().Is4() {
			out = append(out, a)
		}
	}
	return out
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func firstPositive[T int | time.Duration](vals ...T) T {
	for _, v := range vals {
		if v > 0 {
			return v
		}
	}
	return 0
}

func firstNonZero(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}
