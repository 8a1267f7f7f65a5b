package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/policy"
)

// Reload loads the config file, and on success swaps the allowlist and
// mode; in-flight streams keep the rules they started with. A file that
// does not validate keeps the rules in force and marks the reported
// summary invalid with the error, so the relay's status shows it.
// Settings other than allow, deny, blocked and mode need a restart; a
// change to them is logged by name, and logged again at every reload
// until the agent restarts.
func (a *Agent) Reload(load func() (*config.Config, error)) error {
	next, err := load()
	cur := a.Policy()
	if err != nil {
		a.SetPolicy(cur.Refused(err))
		a.log.Error("config reload refused; keeping the allowlist in force", "err", err)
		return err
	}
	if keys := restartChanges(a.opts.Config, next); len(keys) > 0 {
		a.log.Warn("config reload: restart the agent to apply the change to "+joinAnd(keys)+
			"; changes to allow, deny, blocked and mode apply now", "restart_needed", strings.Join(keys, ","))
	}
	p := policy.New(next, time.Now())
	a.SetPolicy(p)
	a.log.Info("allowlist reloaded", "rules", p.Summary.Count, "sha256", p.Summary.SHA256, "mode", p.Summary.Mode)
	return nil
}

// WatchConfig reloads on every value from trigger (SIGHUP) and when the
// file's modification time or size changes, checked every poll. It
// returns when ctx ends.
func (a *Agent) WatchConfig(ctx context.Context, path string, load func() (*config.Config, error), trigger <-chan os.Signal, poll time.Duration) error {
	last := fileStamp(path)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-trigger:
			last = fileStamp(path)
		case <-t.C:
			cur := fileStamp(path)
			if cur == last {
				continue
			}
			last = cur
			if cur.missing {
				// Editors replace files by rename; wait for the new one.
				continue
			}
		}
		_ = a.Reload(load) // Reload logs a refused file itself
	}
}

// restartChanges names, as the file spells them, the settings that differ
// between the running config and next and that a reload does not apply:
// the tunnels, the resolver, the status server, the audit log and the log
// handler are built once at start.
func restartChanges(running, next *config.Config) []string {
	urls := func(c *config.Config) string {
		var b strings.Builder
		for _, u := range c.RelayURLs {
			b.WriteString(u.String() + " ")
		}
		return b.String()
	}
	proxy := func(c *config.Config) string {
		if c.EgressProxy == nil {
			return ""
		}
		return c.EgressProxy.String() // compared, never logged
	}
	var out []string
	for _, s := range []struct {
		key     string
		changed bool
	}{
		{"relay_url", urls(running) != urls(next)},
		{"token_file", running.TokenFile != next.TokenFile},
		{"dns.servers", fmt.Sprint(running.DNSServers) != fmt.Sprint(next.DNSServers)},
		{"dns.timeout", running.DNSTimeout != next.DNSTimeout},
		{"egress_proxy", proxy(running) != proxy(next)},
		{"ca_file", running.CAFile != next.CAFile},
		{"tunnels", running.Tunnels != next.Tunnels},
		{"status_listen", running.StatusListen != next.StatusListen},
		{"audit_log", running.AuditLog != next.AuditLog},
		{"agent_id", running.AgentID != next.AgentID},
		{"log_level", running.LogLevel != next.LogLevel},
	} {
		if s.changed {
			out = append(out, s.key)
		}
	}
	return out
}

// joinAnd joins words as in "a, b and c".
func joinAnd(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

type stamp struct {
	mod     time.Time
	size    int64
	missing bool
}

func fileStamp(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{missing: true}
	}
	return stamp{mod: fi.ModTime(), size: fi.Size()}
}
