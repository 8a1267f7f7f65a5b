package resolve

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/resolve/dnstest"
)

func TestCache(t *testing.T) {
	type step struct {
		advance    time.Duration
		wantSource string
		wantTTL    time.Duration
		wantErr    error
		wantAsked  int // A questions the server has seen so far
	}
	tests := map[string]struct {
		records     []string
		soaMin      uint32
		maxTTL      time.Duration
		negativeTTL time.Duration
		reply       dnstest.Handler
		steps       []step
	}{
		"ttl honoured": {
			records: []string{"jira.corp.example. 60 IN A 10.0.0.1", "jira.corp.example. 90 IN AAAA fd00::1"},
			steps: []step{
				{wantSource: SourceDNS, wantTTL: 60 * time.Second, wantAsked: 1},
				{advance: 59 * time.Second, wantSource: SourceCache, wantTTL: time.Second, wantAsked: 1},
				// A is asked again; AAAA still has 30s of its 90s in the cache.
				{advance: time.Second, wantSource: SourceDNS, wantTTL: 30 * time.Second, wantAsked: 2},
			},
		},
		"capped at MaxTTL": {
			records: []string{"jira.corp.example. 86400 IN A 10.0.0.1", "jira.corp.example. 86400 IN AAAA fd00::1"},
			maxTTL:  10 * time.Second,
			steps: []step{
				{wantSource: SourceDNS, wantTTL: 10 * time.Second, wantAsked: 1},
				{advance: 9 * time.Second, wantSource: SourceCache, wantTTL: time.Second, wantAsked: 1},
				{advance: time.Second, wantSource: SourceDNS, wantAsked: 2, wantTTL: 10 * time.Second},
			},
		},
		"ttl zero is never cached": {
			records: []string{"jira.corp.example. 0 IN A 10.0.0.1", "jira.corp.example. 0 IN AAAA fd00::1"},
			steps: []step{
				{wantSource: SourceDNS, wantAsked: 1},
				{wantSource: SourceDNS, wantAsked: 2},
				{wantSource: SourceDNS, wantAsked: 3},
			},
		},
		"negative answer cached for NegativeTTL": {
			soaMin: 300,
			steps: []step{
				{wantErr: ErrNXDomain, wantSource: SourceDNS, wantTTL: 5 * time.Second, wantAsked: 1},
				{advance: 4 * time.Second, wantErr: ErrNXDomain, wantSource: SourceCache, wantTTL: time.Second, wantAsked: 1},
				{advance: time.Second, wantErr: ErrNXDomain, wantSource: SourceDNS, wantTTL: 5 * time.Second, wantAsked: 2},
			},
		},
		"negative answer cached for the SOA minimum when smaller": {
			soaMin: 2,
			steps: []step{
				{wantErr: ErrNXDomain, wantSource: SourceDNS, wantTTL: 2 * time.Second, wantAsked: 1},
				{advance: time.Second, wantErr: ErrNXDomain, wantSource: SourceCache, wantTTL: time.Second, wantAsked: 1},
				{advance: time.Second, wantErr: ErrNXDomain, wantSource: SourceDNS, wantTTL: 2 * time.Second, wantAsked: 2},
			},
		},
		"negative caching disabled": {
			soaMin: 300, negativeTTL: -1,
			steps: []step{
				{wantErr: ErrNXDomain, wantSource: SourceDNS, wantAsked: 1},
				{wantErr: ErrNXDomain, wantSource: SourceDNS, wantAsked: 2},
			},
		},
		"nodata cached like nxdomain": {
			records: []string{"jira.corp.example. 60 IN TXT x"},
			soaMin:  300,
			steps: []step{
				{wantErr: ErrNoAddress, wantSource: SourceDNS, wantTTL: 5 * time.Second, wantAsked: 1},
				{advance: time.Second, wantErr: ErrNoAddress, wantSource: SourceCache, wantTTL: 4 * time.Second, wantAsked: 1},
			},
		},
		"servfail is not cached": {
			reply: dnstest.Rcode(dns.RcodeServerFailure),
			steps: []step{
				{wantErr: ErrServFail, wantSource: SourceDNS, wantAsked: 1},
				{wantErr: ErrServFail, wantSource: SourceDNS, wantAsked: 2},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			z := dnstest.NewZone(t, tc.records...)
			z.SOAMinimum = tc.soaMin
			reply := tc.reply
			if reply == nil {
				reply = z.Reply
			}
			srv := dnstest.New(t, reply)
			clock := newFakeClock()
			cfg := testConfig(t, srv.Addr())
			cfg.Now, cfg.MaxTTL, cfg.NegativeTTL = clock.Now, tc.maxTTL, tc.negativeTTL
			cfg.Attempts = 1
			r := newResolver(t, cfg)

			for i, s := range tc.steps {
				clock.Advance(s.advance)
				got, ans, err := r.Lookup(t.Context(), "jira.corp.example.")
				if s.wantErr != nil {
					require.ErrorIs(t, err, s.wantErr, "step %d", i)
				} else {
					require.NoError(t, err, "step %d", i)
					assert.Equal(t, addrs("10.0.0.1", "fd00::1"), got, "step %d", i)
				}
				assert.Equal(t, s.wantSource, ans.Source, "step %d", i)
				assert.Equal(t, s.wantTTL, ans.TTL, "step %d", i)
				assert.Equal(t, srv.Addr(), ans.Server, "step %d", i)
				assert.Len(t, srv.Queries().For("jira.corp.example.", dns.TypeA), s.wantAsked, "step %d", i)
			}
		})
	}
}

func TestCacheEvictsOldest(t *testing.T) {
	c := newCache(3)
	now := time.Unix(1000, 0)
	for i, name := range []string{"a.", "b.", "c.", "d."} {
		c.put(cacheKey{name, dns.TypeA}, cacheEntry{kind: outcomeAddrs, expires: now.Add(time.Duration(i+1) * time.Minute)})
	}
	assert.Equal(t, 3, c.len())
	_, ok := c.get(now, cacheKey{"a.", dns.TypeA})
	assert.False(t, ok, "the oldest entry was evicted")
	for _, name := range []string{"b.", "c.", "d."} {
		_, ok := c.get(now, cacheKey{name, dns.TypeA})
		assert.True(t, ok, name)
	}
	_, ok = c.get(now, cacheKey{"b.", dns.TypeAAAA})
	assert.False(t, ok, "keyed by type too")

	// Replacing an entry does not grow the cache.
	c.put(cacheKey{"d.", dns.TypeA}, cacheEntry{kind: outcomeNoData, expires: now.Add(time.Hour)})
	assert.Equal(t, 3, c.len())
	e, ok := c.get(now, cacheKey{"d.", dns.TypeA})
	require.True(t, ok)
	assert.Equal(t, outcomeNoData, e.kind)

	// Expired entries are dropped on read.
	_, ok = c.get(now.Add(2*time.Minute), cacheKey{"b.", dns.TypeA})
	assert.False(t, ok)
	assert.Equal(t, 2, c.len())
}

func TestCacheReturnsCopies(t *testing.T) {
	c := newCache(10)
	now := time.Unix(1000, 0)
	in := []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	key := cacheKey{"a.", dns.TypeA}
	c.put(key, cacheEntry{kind: outcomeAddrs, addrs: in, expires: now.Add(time.Minute)})
	in[0] = netip.MustParseAddr("6.6.6.6")
	e, _ := c.get(now, key)
	e.addrs[0] = netip.MustParseAddr("7.7.7.7")
	e, _ = c.get(now, key)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("10.0.0.1")}, e.addrs)
}
