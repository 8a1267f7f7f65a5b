package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/postern/postern/agent/config"
)

// Uninstall stops the service and removes it from the service manager. The
// config, token, environment file, state directory and binary stay unless
// purge is set. Audit logs always stay: they are the customer's record of
// what was reached. Uninstalling what is not installed is not an error.
func (in *Installer) Uninstall(ctx context.Context, purge bool) (*Report, error) {
	if err := in.o.Host.Check("uninstall"); err != nil {
		return nil, err
	}
	p := in.o.Paths
	auditLog := in.installedAuditLog()
	m, err := in.manager(in.spec(auditLog))
	if err != nil {
		return nil, err
	}
	r := &Report{}
	err = m.Unregister(ctx, func() error {
		if p.ServiceFile == "" {
			return nil
		}
		ok, err := removeIfExists(in.at(p.ServiceFile))
		r.changed(ok, "removed service definition %s", p.ServiceFile)
		return err
	})
	if err != nil {
		return r, err
	}
	r.Changed = append(r.Changed, "service "+ServiceName+" is not registered")
	if !purge {
		r.Kept = append(r.Kept, fmt.Sprintf("config, token and environment file in %s, state in %s, binary %s (remove them with --purge)", p.ConfigDir, p.StateDir, p.Binary))
		return r, nil
	}
	for _, f := range []string{p.TokenFile, p.ConfigFile, p.EnvFile, p.Binary} {
		if f == "" {
			continue
		}
		ok, err := removeIfExists(in.at(f))
		if err != nil {
			return r, fmt.Errorf("purge: %w", err)
		}
		r.changed(ok, "removed %s", f)
	}
	if _, err := os.Stat(in.at(p.StateDir)); err == nil {
		if err := os.RemoveAll(in.at(p.StateDir)); err != nil {
			return r, fmt.Errorf("purge: %w", err)
		}
		r.Changed = append(r.Changed, "removed "+p.StateDir)
	}
	in.removeDirIfEmpty(p.ConfigDir, "it holds files the installer did not write", r)
	if auditLog != "" {
		in.removeDirIfEmpty(filepath.Dir(auditLog), "audit logs are kept; delete them yourself when no longer needed", r)
	}
	return r, nil
}

// removeDirIfEmpty removes dir when it is empty, and says why it was kept
// otherwise.
func (in *Installer) removeDirIfEmpty(dir, why string, r *Report) {
	entries, err := os.ReadDir(in.at(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil || len(entries) > 0 {
		r.Kept = append(r.Kept, fmt.Sprintf("%s: %s", dir, why))
		return
	}
	if err := os.Remove(in.at(dir)); err != nil {
		r.Kept = append(r.Kept, fmt.Sprintf("%s: %v", dir, err))
		return
	}
	r.Changed = append(r.Changed, "removed "+dir)
}

// installedAuditLog reads the installed config's audit_log as the service
// sees it; "" when there is none or the config cannot be read.
func (in *Installer) installedAuditLog() string {
	data, err := os.ReadFile(in.at(in.o.Paths.ConfigFile))
	if err != nil {
		return ""
	}
	c, err := config.Parse(in.o.Paths.ConfigFile, data, nil)
	if err != nil {
		return ""
	}
	return c.AuditLog
}

// Control starts, stops or restarts the installed service.
func (in *Installer) Control(ctx context.Context, a Action) error {
	if err := in.o.Host.Check(string(a)); err != nil {
		return err
	}
	m, err := in.manager(in.spec(in.installedAuditLog()))
	if err != nil {
		return err
	}
	st, err := m.State(ctx)
	if err != nil {
		return err
	}
	if st == StateNotInstalled {
		return fmt.Errorf("%w: run `postern-agent install --config FILE` first", ErrNotInstalled)
	}
	return m.Control(ctx, a)
}

// State reports the service manager's view of the agent service. It needs
// no privileges.
func (in *Installer) State(ctx context.Context) (State, error) {
	if err := in.o.Host.CheckServiceManager(); err != nil {
		return StateUnknown, err
	}
	m, err := in.manager(in.spec(in.installedAuditLog()))
	if err != nil {
		return StateUnknown, err
	}
	return m.State(ctx)
}

// ServiceState is the agent service's state on this machine as one word or
// phrase for `postern-agent status`: "running", "stopped", "failed", "not
// installed" or "unknown". Where no service manager runs (a container) it
// returns "unknown" and an error matching ErrNoServiceManager.
func ServiceState() (string, error) {
	st, err := New(Options{}).State(context.Background())
	return string(st), err
}
