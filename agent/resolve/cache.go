package resolve

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// defaultCacheSize bounds the number of (name, type) answers kept.
const defaultCacheSize = 10_000

type cacheKey struct {
	name  string // lower-case FQDN
	qtype uint16
}

// cacheEntry is one remembered answer: addresses, or a negative answer (NXDOMAIN / NODATA).
type cacheEntry struct {
	kind    outcome
	addrs   []netip.Addr
	chain   []string // the CNAME targets followed; shared, never changed
	rcode   int
	server  string
	expires time.Time
}

// cache holds answers until their TTL runs out. When full it evicts the entry stored longest
// ago, which for a TTL cache is close to the one that would expire first.
type cache struct {
	max int

	mu      sync.Mutex
	entries map[cacheKey]*list.Element // value: *cacheItem
	order   *list.List                 // front = oldest insertion
}

type cacheItem struct {
	key   cacheKey
	entry cacheEntry
}

func newCache(size int) *cache {
	return &cache{max: size, entries: make(map[cacheKey]*list.Element), order: list.New()}
}

// get returns the live entry for key, dropping it if it has expired.
func (c *cache) get(now time.Time, key cacheKey) (cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return cacheEntry{}, false
	}
	it := el.Value.(*cacheItem)
	if !now.Before(it.entry.expires) {
		c.order.Remove(el)
		delete(c.entries, key)
		return cacheEntry{}, false
	}
	e := it.entry
	e.addrs = append([]netip.Addr(nil), e.addrs...)
	return e, true
}

// put stores e under key, replacing any previous entry and evicting the oldest if full.
func (c *cache) put(key cacheKey, e cacheEntry) {
	if c.max <= 0 {
		return
	}
	e.addrs = append([]netip.Addr(nil), e.addrs...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.order.Remove(el)
		delete(c.entries, key)
	}
	for c.order.Len() >= c.max {
		oldest := c.order.Front()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*cacheItem).key)
	}
	c.entries[key] = c.order.PushBack(&cacheItem{key: key, entry: e})
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
