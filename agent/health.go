package agent

import (
	"time"

	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/protocol"
)

// reporter is the agent as every tunnel session reports it to the relay:
// who it is (Hello) and how it does (Health), at once when the policy
// changes.
type reporter struct{ a *Agent }

func (r reporter) Hello() protocol.Hello {
	a := r.a
	return protocol.Hello{
		ProtocolVersion: protocol.Version,
		AgentID:         a.agentID,
		InstanceID:      a.instanceID,
		Hostname:        a.hostname,
		Version:         a.opts.Version,
		Tunnels:         a.tunnelsWanted(),
		StartedAt:       a.started.UTC(),
		Allowlist:       a.Policy().Summary,
	}
}

func (r reporter) Health() protocol.Health {
	a := r.a
	st := a.streams.Stats()
	return protocol.Health{
		Resolver:      a.resolverHealth(),
		Time:          time.Now().UTC(),
		TunnelsUp:     a.TunnelsUp(),
		ActiveStreams: st.Active,
		BytesIn:       st.BytesIn,
		BytesOut:      st.BytesOut,
		UptimeSeconds: int64(time.Since(a.started).Seconds()),
		Version:       a.opts.Version,
		Allowlist:     a.Policy().Summary,
		Errors:        a.streams.TakeErrors(),
	}
}

func (r reporter) Changed() <-chan struct{} { return r.a.gate.Changed() }

// resolverHealth reports the resolver's counters when it keeps them.
func (a *Agent) resolverHealth() *protocol.ResolverHealth {
	rs, ok := a.opts.Resolver.(interface {
		Stats() resolve.Stats
		Servers() []string
		LastError() string
	})
	if !ok {
		return nil
	}
	cur := rs.Stats()
	a.mu.Lock()
	prev := a.lastDNS
	a.lastDNS = cur
	a.mu.Unlock()
	failed := (cur.ServFail - prev.ServFail) + (cur.Timeouts - prev.Timeouts)
	okNow := (cur.Lookups - prev.Lookups) - failed - (cur.NXDomain - prev.NXDomain) - (cur.NoAddress - prev.NoAddress)
	status := "ok"
	if failed > 0 && okNow == 0 {
		status = "failing"
	}
	return &protocol.ResolverHealth{
		Status: status, Servers: rs.Servers(), Lookups: cur.Lookups, Queries: cur.Queries,
		CacheHits: cur.CacheHits, NXDomain: cur.NXDomain + cur.NoAddress, ServFail: cur.ServFail,
		Timeouts: cur.Timeouts, LastError: rs.LastError(),
	}
}
