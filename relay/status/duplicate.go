package status

import (
	"slices"
	"strings"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// agentKey names one agent process: its agent id and process key.
func agentKey(h protocol.Hello) string { return h.AgentID + "\x00" + h.ProcessKey() }

// duplicateWarning is the DUPLICATE_AGENT warning when more than one
// process (entry of agents) has the same agent id, naming each such id,
// how many processes use it and on which hosts.
func duplicateWarning(agents []api.Agent) (api.Warning, bool) {
	hosts := map[string][]string{}
	var ids []string
	for _, a := range agents {
		if _, ok := hosts[a.AgentID]; !ok {
			ids = append(ids, a.AgentID)
		}
		hosts[a.AgentID] = append(hosts[a.AgentID], a.Hostname)
	}
	var parts []string
	for _, id := range ids {
		if len(hosts[id]) > 1 {
			parts = append(parts, protocol.DuplicateAgentMessage(id, hosts[id]))
		}
	}
	if len(parts) == 0 {
		return api.Warning{}, false
	}
	return api.Warning{Code: api.WarningDuplicateAgent, Message: strings.Join(parts, "; ") +
		"; all of them serve, but each process should have its own agent_id: stop the extra process, " +
		"or set agent_id in each machine's config"}, true
}

// HasWarning reports whether st carries a warning with code.
func HasWarning(st api.Status, code string) bool {
	return slices.ContainsFunc(st.Warnings, func(w api.Warning) bool { return w.Code == code })
}
