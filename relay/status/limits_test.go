package status

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/allowlist"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// An agent that keeps changing its allowlist's status gets
// AllowlistEventBurst events, then one per AllowlistEventEvery, each from
// the state last announced; its tunnel events are not held back.
func TestAllowlistEventsHaveABudgetPerConnection(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	k := New(Config{NodeID: "n1", Now: func() time.Time { return now }}, nil, nil, nil)
	j := k.judge(now)
	conn := store.Connection{ID: "c1", Workspace: "w"}
	state := store.PublishedState{Tunnel: TunnelConnected, Auth: AuthActive, Allowlist: "configured"}
	flip := map[string]string{"configured": "empty", "empty": "configured"}

	announced := 0
	reported := "configured"
	for range 100 {
		reported = flip[reported]
		st := api.Status{TunnelStatus: TunnelConnected, AuthStatus: AuthActive, AllowlistStatus: reported}
		next, evs := j.Next(conn, state, st, nil)
		for _, e := range evs {
			require.Equal(t, api.EventAllowlist, e.Type)
			assert.Equal(t, state.Allowlist, e.From, "each event starts where the last announced one ended")
			announced++
		}
		state = next
	}
	assert.Equal(t, AllowlistEventBurst, announced, "a flood of changes: the burst, then nothing")

	// Other connections have budgets of their own.
	other := store.Connection{ID: "c2", Workspace: "w2"}
	_, evs := j.Next(other, store.PublishedState{Tunnel: TunnelConnected, Auth: AuthActive, Allowlist: "configured"},
		api.Status{TunnelStatus: TunnelConnected, AuthStatus: AuthActive, AllowlistStatus: "invalid"}, nil)
	assert.Len(t, evs, 1, "another connection's event is not held back")

	// The tunnel's own transitions are never held back.
	_, evs = j.Next(conn, state, api.Status{TunnelStatus: TunnelDisconnected, AuthStatus: AuthActive,
		AllowlistStatus: state.Allowlist, Reason: protocol.AgentOffline}, nil)
	require.Len(t, evs, 1)
	assert.Equal(t, TunnelDisconnected, evs[0].To)

	// Once the budget refills, the state the agent got to is announced.
	now = now.Add(AllowlistEventEvery + time.Second)
	j = k.judge(now)
	state.Allowlist = "configured"
	next, evs := j.Next(conn, state, api.Status{TunnelStatus: TunnelConnected, AuthStatus: AuthActive, AllowlistStatus: "invalid"}, nil)
	require.Len(t, evs, 1)
	assert.Equal(t, "configured", evs[0].From)
	assert.Equal(t, "invalid", evs[0].To)
	assert.Equal(t, "invalid", next.Allowlist)
}

func ruleSet(n, seed int) protocol.Allowlist {
	a := protocol.Allowlist{Status: "configured", Mode: "enforce"}
	for i := range n {
		a.Allow = append(a.Allow, protocol.RuleSpec{Host: fmt.Sprintf("h%d-%d.example", seed, i), Ports: []string{"443"}})
	}
	return a
}

func TestVerdictCacheIsBoundedByRules(t *testing.T) {
	t.Parallel()
	var vc verdictCache
	const perSet = 1024
	for seed := range 3 * MaxCachedRules / perSet {
		d := vc.decide(ruleSet(perSet, seed), fmt.Sprintf("h%d-7.example", seed), 443)
		require.Equal(t, allowlist.Allowed, d.Verdict, "set %d judges with its own rules", seed)
		sets, rules := vc.size()
		require.LessOrEqual(t, rules, MaxCachedRules)
		require.LessOrEqual(t, sets, MaxCachedRules/perSet)
	}
	sets, rules := vc.size()
	assert.Equal(t, MaxCachedRules/perSet, sets, "the newest sets stay")
	assert.Equal(t, MaxCachedRules, rules)

	// A set is still judged right after it was evicted.
	d := vc.decide(ruleSet(perSet, 0), "h0-9.example", 443)
	assert.Equal(t, allowlist.Allowed, d.Verdict)
	d = vc.decide(ruleSet(perSet, 0), "h1-9.example", 443)
	assert.Equal(t, allowlist.Missing, d.Verdict, "never judged by another set's rules")
}

// Compiling happens outside the cache's lock: a reader of a cached set is
// not held up while another set compiles.
func TestVerdictCacheCompilesOutsideItsLock(t *testing.T) {
	t.Parallel()
	compiling, release := make(chan struct{}), make(chan struct{})
	vc := verdictCache{compile: func(rs allowlist.Rules) (*allowlist.List, error) {
		if len(rs.Allow) > 1 {
			close(compiling)
			<-release
		}
		return allowlist.CompileRules(rs)
	}}
	small := ruleSet(1, 1)
	require.Equal(t, allowlist.Allowed, vc.decide(small, "h1-0.example", 443).Verdict)
	var wg sync.WaitGroup
	wg.Go(func() { vc.decide(ruleSet(2, 2), "x.example", 443) })
	<-compiling
	done := make(chan allowlist.Decision, 1)
	go func() { done <- vc.decide(small, "h1-0.example", 443) }()
	select {
	case d := <-done:
		assert.Equal(t, allowlist.Allowed, d.Verdict)
	case <-time.After(5 * time.Second):
		t.Error("a cached decision waited for another set's compilation")
	}
	close(release)
	wg.Wait()
	sets, _ := vc.size()
	assert.Equal(t, 2, sets)
}

// The customer's blocked list travels in the summary, so the relay's
// advisory verdict for a base URL matches the agent's: an address inside
// a blocked prefix is blocked even though an allow rule covers it, and
// two agents that differ only in their blocked lists are judged apart.
func TestVerdictHonoursTheReportedBlockedList(t *testing.T) {
	t.Parallel()
	var vc verdictCache
	broad := protocol.Allowlist{Allow: []protocol.RuleSpec{{CIDR: "10.0.0.0/8", Ports: []string{"443"}}}}
	blocked := broad
	blocked.Blocked = []string{"10.9.0.0/16"}

	assert.Equal(t, allowlist.Allowed, vc.decide(broad, "10.9.1.1", 443).Verdict)
	d := vc.decide(blocked, "10.9.1.1", 443)
	assert.Equal(t, allowlist.Blocked, d.Verdict, "%+v", d)
	assert.Equal(t, allowlist.Allowed, vc.decide(blocked, "10.8.1.1", 443).Verdict, "outside the blocked prefix")
	assert.Equal(t, allowlist.Allowed, vc.decide(broad, "10.9.1.1", 443).Verdict, "the set without it is cached apart")
}
