package broker

import (
	"fmt"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
)

// PingTimeout bounds the ping that tells the previous run of a restarted
// agent from a second live process with the same agent id.
const PingTimeout = 3 * time.Second

// replaced closes the sessions of a process that reconnected (stale), and
// pings the live sessions of other processes of the same agent id in the
// background: one that does not answer within PingTimeout and carries no
// stream is the previous run of a restarted agent, and is closed; one
// that answers is a second live process, kept serving and flagged as a
// duplicate. A session with streams in flight is never closed here: if
// its peer is dead, keepalive ends it.
func (b *Broker) replaced(sess *Session, stale, others []*Session) {
	for _, old := range stale {
		b.log.Info("closing an older tunnel of the same agent process: its newest sessions win",
			"connection", old.ConnectionID, "agent", old.Hello.AgentID, "session", old.ID, "replaced_by", sess.ID)
		_ = old.Close()
	}
	if len(others) == 0 {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		var wg sync.WaitGroup
		for _, o := range others {
			wg.Go(func() { b.closeIfGone(o, sess) })
		}
		wg.Wait()
		b.checkDuplicate(sess.ConnectionID, sess.Hello.AgentID)
	}()
}

// closeIfGone closes o when it answers no ping within PingTimeout and
// carries no stream.
func (b *Broker) closeIfGone(o, newer *Session) {
	if answers(o, PingTimeout) || o.Active() > 0 {
		return
	}
	b.log.Info("closing a tunnel of an earlier run of a restarted agent: it answered no ping",
		"connection", o.ConnectionID, "agent", o.Hello.AgentID, "session", o.ID, "replaced_by", newer.ID)
	_ = o.Close()
}

// answers reports whether s answers a ping within d.
func answers(s *Session, d time.Duration) bool {
	done := make(chan error, 1)
	go func() { // ends with the ping: at yamux's own timeout, or at Close
		_, err := s.mux.Ping()
		done <- err
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err == nil
	case <-t.C:
		return false
	}
}

// checkDuplicate tells every live session of the agent id whether more
// than one process uses it on this node, when that changed for the
// session: a Notice DUPLICATE_AGENT, or one with cleared set.
func (b *Broker) checkDuplicate(connID, agentID string) {
	var mine []*Session
	for _, s := range b.reg.live(connID) {
		if s.Hello.AgentID == agentID {
			mine = append(mine, s)
		}
	}
	procs := processes(mine)
	dup := len(procs) > 1
	msg := duplicateMessage(agentID, procs)
	told := false
	for _, s := range mine {
		told = s.tellDuplicate(dup, msg) || told
	}
	switch {
	case told && dup:
		b.log.Warn("duplicate agent: "+msg, "connection", connID, "agent", agentID, "processes", len(procs))
	case told:
		b.log.Info("duplicate agent cleared: one agent process is left", "connection", connID, "agent", agentID)
	}
}

// processes maps the process key of each session to its host name.
func processes(ss []*Session) map[string]string {
	out := map[string]string{}
	for _, s := range ss {
		out[s.Hello.ProcessKey()] = s.Hello.Hostname
	}
	return out
}

// duplicateMessage says which agent id how many processes use, and on
// which hosts.
func duplicateMessage(agentID string, procs map[string]string) string {
	hosts := make([]string, 0, len(procs))
	for _, h := range procs {
		hosts = append(hosts, h)
	}
	return clip(protocol.DuplicateAgentMessage(agentID, hosts)+
		"; all of them serve, but give each its own agent_id or stop the extra process", MaxText)
}

// tellDuplicate sends the session a DUPLICATE_AGENT notice when dup
// differs from what it was last told, and reports whether it did.
func (s *Session) tellDuplicate(dup bool, msg string) bool {
	s.noticeMu.Lock()
	defer s.noticeMu.Unlock()
	if s.duplicate == dup {
		return false
	}
	s.duplicate = dup
	n := protocol.Notice{Code: protocol.NoticeDuplicateAgent, Message: msg, Cleared: !dup}
	if !dup {
		n.Message = fmt.Sprintf("agent id %q is used by one agent process again", s.Hello.AgentID)
	}
	_ = s.Notify(protocol.FrameNotice, n)
	return true
}
