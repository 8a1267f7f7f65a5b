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
// Settings other than allow, deny and mode need a restart; a change to
// them is logged.
func (a *Agent) Reload(load func() (*config.Config, error)) error {
	next, err := load()
	cur := a.Policy()
	if err != nil {
		a.SetPolicy(cur.Refused(err))
		a.log.Error("config reload refused; keeping the allowlist in force", "err", err)
		return err
	}
	if restartSettings(next) != restartSettings(a.opts.Config) {
		a.log.Warn("config reload: only allow, deny and mode apply without a restart; other changes wait for one")
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

// restartSettings fingerprints the settings a reload does not apply.
func restartSettings(c *config.Config) string {
	var b strings.Builder
	for _, u := range c.RelayURLs {
		b.WriteString(u.String() + " ")
	}
	fmt.Fprintf(&b, "|%d|%v|%s|%s|%s|%s|%s|", c.Tunnels, c.DNSServers, c.DNSTimeout, c.CAFile,
		c.StatusListen, c.AuditLog, c.AgentID)
	if c.EgressProxy != nil {
		b.WriteString(c.EgressProxy.Redacted())
	}
	return b.String()
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
