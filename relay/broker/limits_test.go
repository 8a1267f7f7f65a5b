package broker

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

func goodSummary() protocol.Allowlist {
	return protocol.Allowlist{
		Status: "configured", Mode: "enforce", Count: 2,
		SHA256: strings.Repeat("ab", 32),
		Allow:  []protocol.RuleSpec{{Host: "gitlab.corp.example", Ports: []string{"443", "8000-8100"}}},
		Deny:   []protocol.RuleSpec{{CIDR: "10.20.5.0/24"}},
	}
}

func goodHello() protocol.Hello {
	return protocol.Hello{ProtocolVersion: 1, AgentID: "agent-1", Hostname: "vm-1", Version: "1.0.0", Tunnels: 2, Allowlist: goodSummary()}
}

func goodHealth() protocol.Health {
	return protocol.Health{TunnelsUp: 2, Version: "1.0.0", Allowlist: goodSummary(),
		Errors:   map[protocol.Reason]int{protocol.ConnectRefused: 3},
		Resolver: &protocol.ResolverHealth{Status: "ok", Servers: []string{"10.0.0.2:53"}}}
}

// rules returns n host rules with the given number of ports each.
func rules(n, ports int) []protocol.RuleSpec {
	out := make([]protocol.RuleSpec, n)
	for i := range out {
		out[i] = protocol.RuleSpec{Host: fmt.Sprintf("h%d.example", i)}
		for p := range ports {
			out[i].Ports = append(out[i].Ports, fmt.Sprint(1000+p))
		}
	}
	return out
}

func TestHelloBounds(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		edit func(*protocol.Hello)
		want string // "" = accepted
	}{
		"a real agent's hello": {edit: func(*protocol.Hello) {}},
		"the most rules and ports": {edit: func(h *protocol.Hello) {
			h.Allowlist.Allow, h.Allowlist.Deny = rules(MaxRules, MaxPorts/MaxRules), nil
		}},
		"empty agent id":             {edit: func(h *protocol.Hello) { h.AgentID = "" }, want: "agent_id"},
		"agent id too long":          {edit: func(h *protocol.Hello) { h.AgentID = strings.Repeat("a", 129) }, want: "agent_id"},
		"hostname too long":          {edit: func(h *protocol.Hello) { h.Hostname = strings.Repeat("h", 256) }, want: "hostname"},
		"version too long":           {edit: func(h *protocol.Hello) { h.Version = strings.Repeat("1", 65) }, want: "version"},
		"tunnels beyond any agent":   {edit: func(h *protocol.Hello) { h.Tunnels = MaxHelloTunnels + 1 }, want: "tunnels"},
		"negative tunnels":           {edit: func(h *protocol.Hello) { h.Tunnels = -1 }, want: "tunnels"},
		"status outside its enum":    {edit: func(h *protocol.Hello) { h.Allowlist.Status = "pwned" }, want: "allowlist.status"},
		"empty status":               {edit: func(h *protocol.Hello) { h.Allowlist.Status = "" }, want: "allowlist.status"},
		"mode outside its enum":      {edit: func(h *protocol.Hello) { h.Allowlist.Mode = "permissive" }, want: "allowlist.mode"},
		"sha256 not hex":             {edit: func(h *protocol.Hello) { h.Allowlist.SHA256 = strings.Repeat("Z", 64) }, want: "sha256"},
		"count beyond the rule cap":  {edit: func(h *protocol.Hello) { h.Allowlist.Count = MaxRules + 1 }, want: "count"},
		"one rule too many":          {edit: func(h *protocol.Hello) { h.Allowlist.Deny = rules(MaxRules, 0) }, want: "rules, more than"},
		"one port entry too many":    {edit: func(h *protocol.Hello) { h.Allowlist.Allow = rules(1, MaxPorts+1) }, want: "port entries"},
		"rule host too long":         {edit: func(h *protocol.Hello) { h.Allowlist.Allow[0].Host = strings.Repeat("a", 256) }, want: "rule 1: host"},
		"rule cidr too long":         {edit: func(h *protocol.Hello) { h.Allowlist.Deny[0].CIDR = strings.Repeat("1", 65) }, want: "rule 2: ip or cidr"},
		"port entry that is no port": {edit: func(h *protocol.Hello) { h.Allowlist.Allow[0].Ports = []string{strings.Repeat("9", 12)} }, want: "port"},
		"empty port entry":           {edit: func(h *protocol.Hello) { h.Allowlist.Allow[0].Ports = []string{""} }, want: "port"},
		"a blocked entry beyond the rule cap": {edit: func(h *protocol.Hello) {
			h.Allowlist.Allow, h.Allowlist.Deny = rules(MaxRules, 0), nil
			h.Allowlist.Blocked = []string{"10.9.0.0/16"}
		}, want: "rules, more than 1024 (allow, deny and blocked"},
		"blocked entry too long":              {edit: func(h *protocol.Hello) { h.Allowlist.Blocked = []string{strings.Repeat("1", 65)} }, want: "blocked entry 1"},
		"empty blocked entry":                 {edit: func(h *protocol.Hello) { h.Allowlist.Blocked = []string{""} }, want: "blocked entry 1"},
		"long last_error is cut, not refused": {edit: func(h *protocol.Hello) { h.Allowlist.LastError = strings.Repeat("e", 100_000) }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := goodHello()
			tc.edit(&h)
			err := validateHello(&h)
			if tc.want == "" {
				require.NoError(t, err)
				assert.LessOrEqual(t, len(h.Allowlist.LastError), MaxText)
				return
			}
			require.ErrorIs(t, err, ErrAgentLimit)
			assert.Contains(t, err.Error(), tc.want)
			assert.Less(t, len(err.Error()), 300, "the message names the field, not the agent's text")
		})
	}
}

func TestHealthBounds(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		edit func(*protocol.Health)
		want string
	}{
		"a real agent's health":       {edit: func(*protocol.Health) {}},
		"no resolver":                 {edit: func(h *protocol.Health) { h.Resolver = nil }},
		"version too long":            {edit: func(h *protocol.Health) { h.Version = strings.Repeat("v", 65) }, want: "version"},
		"negative counters":           {edit: func(h *protocol.Health) { h.TunnelsUp = -5 }, want: "negative"},
		"status outside its enum":     {edit: func(h *protocol.Health) { h.Allowlist.Status = "x" }, want: "health allowlist.status"},
		"error key that is no reason": {edit: func(h *protocol.Health) { h.Errors["evil reason"] = 1 }, want: "errors"},
		"error key too long":          {edit: func(h *protocol.Health) { h.Errors[protocol.Reason(strings.Repeat("A", 65))] = 1 }, want: "errors"},
		"negative error count":        {edit: func(h *protocol.Health) { h.Errors[protocol.DNSTimeout] = -1 }, want: "errors"},
		"too many error kinds": {edit: func(h *protocol.Health) {
			for i := range MaxErrorKinds {
				h.Errors[protocol.Reason(fmt.Sprintf("KIND_%d", i))] = 1
			}
		}, want: "errors"},
		"resolver status outside its enum": {edit: func(h *protocol.Health) { h.Resolver.Status = "great" }, want: "resolver.status"},
		"many resolver servers are cut": {edit: func(h *protocol.Health) {
			h.Resolver.Servers = make([]string, 100)
			h.Resolver.Servers[0] = strings.Repeat("s", 1000)
		}},
		"long resolver error is cut": {edit: func(h *protocol.Health) { h.Resolver.LastError = strings.Repeat("é", 10_000) }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := goodHealth()
			tc.edit(&h)
			err := validateHealth(&h)
			if tc.want == "" {
				require.NoError(t, err)
				if h.Resolver != nil {
					assert.LessOrEqual(t, len(h.Resolver.LastError), MaxText)
					assert.LessOrEqual(t, len(h.Resolver.Servers), MaxResolverServers)
					for _, s := range h.Resolver.Servers {
						assert.LessOrEqual(t, len(s), maxServerLen)
					}
				}
				return
			}
			require.ErrorIs(t, err, ErrAgentLimit)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestControlFramesAreCountedBeforeDecoding(t *testing.T) {
	t.Parallel()
	// A frame of a million empty rules would decode into a million
	// structures; it is refused before that.
	flood := `{"agent_id":"a","allowlist":{"allow":[` + strings.Repeat(`{},`, 1_000_000) + `{}]}}`
	var h protocol.Hello
	err := decodeControl(protocol.Frame{Type: protocol.FrameHello, Body: []byte(flood)}, protocol.FrameHello, &h)
	require.ErrorIs(t, err, ErrAgentLimit)
	assert.Empty(t, h.Allowlist.Allow, "nothing was decoded")

	// The largest summary within the bounds decodes.
	big := goodHello()
	big.Allowlist.Allow = rules(MaxRules/2, MaxPorts/MaxRules)
	big.Allowlist.Deny = rules(MaxRules/2, MaxPorts/MaxRules)
	body, err := json.Marshal(big)
	require.NoError(t, err)
	require.Less(t, len(body), MaxReportBody, "the body limit leaves room for the largest summary")
	got, err := decodeHello(protocol.Frame{Type: protocol.FrameHello, Body: body})
	require.NoError(t, err)
	assert.Len(t, got.Allowlist.Allow, MaxRules/2)

	_, err = decodeHello(protocol.Frame{Type: protocol.FrameHello, Body: []byte(`{"agent_id":`)})
	require.Error(t, err, "not JSON")
}

func TestPacerLetsTheHeartbeatThroughAndStopsAFlood(t *testing.T) {
	t.Parallel()
	const beat = 15 * time.Second
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	t.Run("a day of heartbeats with an allowlist reload every minute", func(t *testing.T) {
		p := newPacer(beat, t0)
		for i := range 24 * 60 * 4 {
			at := t0.Add(time.Duration(i) * beat)
			require.True(t, p.take(at), "heartbeat %d", i)
			if i%4 == 0 {
				require.True(t, p.take(at.Add(time.Millisecond)), "reload after heartbeat %d", i)
			}
		}
	})
	t.Run("a burst of reloads", func(t *testing.T) {
		p := newPacer(beat, t0)
		for i := range healthBurst {
			require.True(t, p.take(t0.Add(time.Duration(i)*time.Millisecond)), "frame %d", i)
		}
		assert.False(t, p.take(t0.Add(time.Second)), "one more at once empties the bucket")
		assert.True(t, p.take(t0.Add(time.Second+beat/healthPerHeartbeat)), "it refills")
	})
	t.Run("a flood", func(t *testing.T) {
		p := newPacer(beat, t0)
		sent := 0
		for ; sent < 10_000 && p.take(t0.Add(time.Duration(sent)*time.Millisecond)); sent++ {
		}
		assert.Equal(t, healthBurst, sent, "a flood ends after the burst")
	})
}

func TestRepeatedRulesAreSharedNotCopied(t *testing.T) {
	t.Parallel()
	prev := goodSummary()
	next := goodSummary() // equal content, other memory
	shareRules(prev, &next)
	assert.Same(t, &prev.Allow[0], &next.Allow[0])
	assert.Same(t, &prev.Deny[0], &next.Deny[0])

	changed := goodSummary()
	changed.Allow[0].Ports = []string{"443"}
	shareRules(prev, &changed)
	assert.NotSame(t, &prev.Allow[0], &changed.Allow[0], "changed rules are kept as reported")
	assert.Equal(t, []string{"443"}, changed.Allow[0].Ports)
}

func TestTunnelPlacesPerConnection(t *testing.T) {
	t.Parallel()
	var r registry
	for i := range 3 {
		require.True(t, r.reserve("c1", 3), "place %d", i)
	}
	assert.False(t, r.reserve("c1", 3), "the cap is reached")
	assert.True(t, r.reserve("c2", 3), "another connection has its own places")
	r.release("c1")
	assert.True(t, r.reserve("c1", 3), "a place given back is taken again")
	assert.True(t, r.reserve("c3", 0), "zero means no cap")
	for range 3 {
		r.release("c1")
	}
	r.release("c2")
	r.release("c3")
	assert.Empty(t, r.held, "no entry outlives its tunnels")
}

func TestResultsAreBoundedBeforeTheyTravel(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		in         protocol.Result
		wantReason protocol.Reason
	}{
		"a table reason":                 {in: protocol.Result{Reason: protocol.DNSNXDomain}, wantReason: protocol.DNSNXDomain},
		"an unknown but well-formed one": {in: protocol.Result{Reason: "NEWER_AGENT_REASON"}, wantReason: "NEWER_AGENT_REASON"},
		"no reason":                      {in: protocol.Result{}, wantReason: protocol.ProtocolError},
		"lower case":                     {in: protocol.Result{Reason: "evil"}, wantReason: protocol.ProtocolError},
		"header injection":               {in: protocol.Result{Reason: "A\r\nSet-Cookie: x"}, wantReason: protocol.ProtocolError},
		"a reason too long":              {in: protocol.Result{Reason: protocol.Reason(strings.Repeat("A", 65))}, wantReason: protocol.ProtocolError},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res := tc.in
			res.Message = strings.Repeat("m", 60_000)
			res.RetryAfterSeconds = 1 << 30
			boundResult(&res)
			assert.Equal(t, tc.wantReason, res.Reason)
			assert.LessOrEqual(t, len(res.Message), MaxText)
			assert.Equal(t, MaxRetryAfter, res.RetryAfterSeconds)
		})
	}
	t.Run("check steps", func(t *testing.T) {
		res := protocol.Result{OK: true, Check: &protocol.CheckResult{Reason: "bad reason", Steps: make([]protocol.CheckStep, 100)}}
		res.Check.Steps[0] = protocol.CheckStep{Step: strings.Repeat("s", 100), Detail: strings.Repeat("d", 50_000), Reason: "x y"}
		boundResult(&res)
		assert.Equal(t, protocol.ProtocolError, res.Check.Reason)
		assert.Len(t, res.Check.Steps, maxCheckSteps)
		assert.LessOrEqual(t, len(res.Check.Steps[0].Detail), MaxText)
		assert.LessOrEqual(t, len(res.Check.Steps[0].Step), maxStepLen)
		assert.Equal(t, protocol.ProtocolError, res.Check.Steps[0].Reason)
	})
}
