package allowlist

import (
	"net/netip"
	"slices"
	"strings"
)

// hostTable finds host rules for a name with map lookups only: one for the
// exact name and one per parent suffix for wildcards, so its cost depends on
// the name's label count, not on the number of rules.
type hostTable struct {
	exact map[string][]*rule
	wild  map[string][]*rule // keyed by the suffix after "*."
}

func (t *hostTable) add(r *rule) {
	m := &t.exact
	if r.kind == kindWildcard {
		m = &t.wild
	}
	if *m == nil {
		*m = make(map[string][]*rule)
	}
	(*m)[r.name] = append((*m)[r.name], r)
}

// lookup returns the first rule (lowest index) matching name and port, and,
// when none does, the first rule matching the name at any port.
func (t *hostTable) lookup(name string, port int) (hit, nameOnly *rule) {
	var b best
	for _, r := range t.exact[name] {
		b.consider(r, port)
	}
	if len(t.wild) > 0 {
		// Only parent suffixes: a wildcard never matches its apex.
		for s := name; ; {
			i := strings.IndexByte(s, '.')
			if i < 0 {
				break
			}
			s = s[i+1:]
			for _, r := range t.wild[s] {
				b.consider(r, port)
			}
		}
	}
	return b.hit, b.nameOnly
}

// addrTable finds ip and cidr rules for an address in O(log n + depth)
// without scanning the rules. CIDR blocks are laminar (two blocks are either
// disjoint or nested), so sorting the distinct blocks by start address, most
// general first, makes the deepest block containing an address an ancestor
// (or self) of the last block starting at or before it. Each node links to
// its nearest enclosing block, and a lookup walks that chain.
type addrTable struct {
	v4, v6 []addrNode
	// exact holds the rules naming exactly one address, keyed by it.
	exact map[netip.Addr][]*rule
	// pending collects rules by block until build sorts them into nodes.
	pending map[netip.Prefix][]*rule
}

type addrNode struct {
	prefix netip.Prefix
	rules  []*rule
	parent int // index of the nearest enclosing block, or -1
}

func (t *addrTable) add(r *rule) {
	if t.pending == nil {
		t.pending = make(map[netip.Prefix][]*rule)
		t.exact = make(map[netip.Addr][]*rule)
	}
	t.pending[r.prefix] = append(t.pending[r.prefix], r)
	if r.prefix.IsSingleIP() {
		t.exact[r.prefix.Addr()] = append(t.exact[r.prefix.Addr()], r)
	}
}

// build turns the collected rules into the sorted node arrays.
func (t *addrTable) build() {
	for p, rs := range t.pending {
		n := addrNode{prefix: p, rules: rs, parent: -1}
		if p.Addr().Is4() {
			t.v4 = append(t.v4, n)
		} else {
			t.v6 = append(t.v6, n)
		}
	}
	t.pending = nil
	for _, nodes := range [][]addrNode{t.v4, t.v6} {
		slices.SortFunc(nodes, func(a, b addrNode) int {
			if c := a.prefix.Addr().Compare(b.prefix.Addr()); c != 0 {
				return c
			}
			return a.prefix.Bits() - b.prefix.Bits()
		})
		var stack []int
		for i := range nodes {
			for len(stack) > 0 && !nodes[stack[len(stack)-1]].prefix.Contains(nodes[i].prefix.Addr()) {
				stack = stack[:len(stack)-1]
			}
			if len(stack) > 0 {
				nodes[i].parent = stack[len(stack)-1]
			}
			stack = append(stack, i)
		}
	}
}

// lookup returns the first rule (lowest index) covering addr and port, and,
// when none does, the first rule covering addr at any port. addr must not be
// IPv4-mapped; callers unmap first.
func (t *addrTable) lookup(addr netip.Addr, port int) (hit, addrOnly *rule) {
	nodes := t.v6
	if addr.Is4() {
		nodes = t.v4
	}
	// Find the last node starting at or before addr.
	lo, hi := 0, len(nodes)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if nodes[mid].prefix.Addr().Compare(addr) <= 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	var b best
	for i := lo - 1; i >= 0; i = nodes[i].parent {
		if nodes[i].prefix.Contains(addr) {
			for _, r := range nodes[i].rules {
				b.consider(r, port)
			}
		}
	}
	return b.hit, b.nameOnly
}

// exactAllow returns the first rule naming exactly addr that allows port,
// and, when none does, the first rule naming it for other ports.
func (t *addrTable) exactAllow(addr netip.Addr, port int) (hit, other *rule) {
	var b best
	for _, r := range t.exact[addr] {
		b.consider(r, port)
	}
	return b.hit, b.nameOnly
}

// best keeps the lowest-index rule among candidates, for the port and for
// any port.
type best struct {
	hit, nameOnly *rule // nameOnly: matched the host or address, not the port
}

func (b *best) consider(r *rule, port int) {
	if r.ports.contains(port) {
		if b.hit == nil || r.index < b.hit.index {
			b.hit = r
		}
		return
	}
	if b.nameOnly == nil || r.index < b.nameOnly.index {
		b.nameOnly = r
	}
}
