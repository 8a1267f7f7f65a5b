package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/postern/postern/agent/config"
)

// Options configures an Installer. The zero value installs into the real
// system for the running OS.
type Options struct {
	// Root prefixes every path the installer reads or writes; "" is the
	// real filesystem. Paths inside written files (the unit, the config)
	// stay as the service will see them.
	Root string
	// Paths is the layout; the zero value means DefaultPaths(runtime.GOOS).
	Paths Paths
	// User is the service account (Linux); "" means DefaultUser.
	User string
	// Host is what the pre-flight checks inspect; nil means RealHost().
	Host *Host
	// Manager registers and controls the service; nil means the host's
	// service manager.
	Manager Manager
	// EnsureUser finds or creates the service account; nil means the
	// system's (useradd on Linux).
	EnsureUser EnsureUserFunc
	// Executable is the agent binary to install; "" means this program.
	Executable string
	// Getenv supplies POSTERN_AGENT_TOKEN; nil means os.LookupEnv.
	Getenv config.Getenv
	// Logger receives warnings about the installed setup; nil discards.
	Logger *slog.Logger
}

// Installer installs, removes and controls the agent service.
type Installer struct {
	o Options

	mgrOnce sync.Once
	mgr     Manager
	mgrErr  error
}

// New returns an Installer for o, with defaults filled in.
func New(o Options) *Installer {
	if o.Paths == (Paths{}) {
		o.Paths = DefaultPaths(runtime.GOOS)
	}
	if o.User == "" {
		o.User = DefaultUser
	}
	if o.Host == nil {
		h := RealHost()
		o.Host = &h
	}
	if o.EnsureUser == nil {
		o.EnsureUser = ensureUser
	}
	if o.Getenv == nil {
		o.Getenv = os.LookupEnv
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Installer{o: o, mgr: o.Manager}
}

// InstallRequest is what `postern-agent install` was asked for.
type InstallRequest struct {
	// Config is the agent config to install; "" means the one already at
	// Paths.ConfigFile.
	Config string
	// TokenFile holds the agent token to install. When empty, the token
	// comes from POSTERN_AGENT_TOKEN, else from the config's token_file,
	// else the already installed token is kept.
	TokenFile string
}

// Report says what an operation did, one line per file or step, for the
// admin to read. It never holds a secret.
type Report struct {
	Changed   []string // written, created or removed
	Kept      []string // left in place, with the reason
	Restarted bool     // the running service was restarted to pick up changes
}

func (r *Report) changed(ok bool, format string, args ...any) {
	if ok {
		r.Changed = append(r.Changed, fmt.Sprintf(format, args...))
	}
}

// at is p as the installer touches it: under Root.
func (in *Installer) at(p string) string {
	if in.o.Root == "" {
		return p
	}
	return filepath.Join(in.o.Root, p)
}

// real is p as the service sees it: without Root.
func (in *Installer) real(p string) string {
	if in.o.Root == "" {
		return p
	}
	if rel, err := filepath.Rel(in.o.Root, p); err == nil && !strings.HasPrefix(rel, "..") {
		return string(filepath.Separator) + rel
	}
	return p
}

func (in *Installer) manager(spec Spec) (Manager, error) {
	in.mgrOnce.Do(func() {
		if in.mgr != nil {
			return
		}
		unit, plist := "", ""
		switch runtime.GOOS {
		case "linux":
			unit, in.mgrErr = SystemdUnit(spec)
		case "darwin":
			plist, in.mgrErr = LaunchdPlist(spec)
		}
		if in.mgrErr == nil {
			in.mgr, in.mgrErr = newManager(spec, unit, plist)
		}
	})
	return in.mgr, in.mgrErr
}

// spec is the service definition for a config whose audit log is auditLog
// (as the service sees it; "" for none).
func (in *Installer) spec(auditLog string) Spec {
	p := in.o.Paths
	s := Spec{
		Binary:     p.Binary,
		ConfigFile: p.ConfigFile,
		EnvFile:    p.EnvFile,
		User:       in.o.User,
		StateDir:   p.StateDir,
		LogFile:    p.LogFile,
	}
	if auditLog != "" {
		s.AuditDir = filepath.Dir(auditLog)
	}
	return s
}

// serviceDefinition renders the unit or plist for this OS; "" where the
// service manager keeps the definition itself (Windows).
func (in *Installer) serviceDefinition(spec Spec) (string, error) {
	switch {
	case in.o.Paths.ServiceFile == "":
		return "", nil
	case strings.HasSuffix(in.o.Paths.ServiceFile, ".plist"):
		return LaunchdPlist(spec)
	default:
		return SystemdUnit(spec)
	}
}

// Install validates the config, places config, token, environment file,
// binary and service definition, and registers the service. Running it
// again brings an existing install up to date; a running service is
// restarted when anything changed. Nothing is written when the config is
// invalid or no token is available.
func (in *Installer) Install(ctx context.Context, req InstallRequest) (*Report, error) {
	if err := in.o.Host.Check("install"); err != nil {
		return nil, err
	}
	plan, err := in.plan(req)
	if err != nil {
		return nil, err
	}
	in.warnUnreadable(plan.installed)

	acct, err := in.o.EnsureUser(ctx, in.o.User)
	if err != nil {
		return nil, err
	}
	m, err := in.manager(plan.spec)
	if err != nil {
		return nil, err
	}
	before, err := m.State(ctx)
	if err != nil {
		return nil, err
	}

	r := &Report{}
	if err := in.place(plan, acct, r); err != nil {
		return r, fmt.Errorf("install: %w", err)
	}
	if err := m.Register(ctx, plan.spec); err != nil {
		return r, err
	}
	if before == StateNotInstalled {
		r.Changed = append(r.Changed, "registered service "+ServiceName)
	}
	if before == StateRunning && len(r.Changed) > 0 {
		if err := m.Control(ctx, ActionRestart); err != nil {
			return r, err
		}
		r.Restarted = true
	}
	return r, nil
}

// installPlan is what Install writes, all worked out before anything is.
type installPlan struct {
	installed  *config.Config // the config as the service will read it
	content    []byte         // the config file as installed
	token      string
	spec       Spec
	definition string // unit or plist; "" where the manager keeps it
}

// plan loads and checks the config, and works out every file Install
// writes.
func (in *Installer) plan(req InstallRequest) (installPlan, error) {
	p := in.o.Paths
	src := req.Config
	if src == "" {
		src = in.at(p.ConfigFile)
	}
	src, err := filepath.Abs(src)
	if err != nil {
		return installPlan{}, fmt.Errorf("config: %w", err)
	}
	// The service will not see this shell's POSTERN_* variables, so they
	// must not make an invalid file look valid.
	cfg, err := config.Load(src, nil)
	if errors.Is(err, fs.ErrNotExist) && req.Config == "" {
		return installPlan{}, fmt.Errorf("no config at %s: pass --config FILE", src)
	}
	if err != nil {
		return installPlan{}, fmt.Errorf("%s is invalid; nothing was installed:\n%w", src, err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return installPlan{}, fmt.Errorf("config: %w", err)
	}
	content, err := installedConfig(data, in.real(filepath.Dir(src)), filepath.Dir(p.ConfigFile), p.TokenFile)
	if err != nil {
		return installPlan{}, err
	}
	installed, err := config.Parse(p.ConfigFile, content, nil)
	if err != nil {
		return installPlan{}, fmt.Errorf("%s as installed is invalid; nothing was installed:\n%w", src, err)
	}
	token, err := in.token(req, cfg)
	if err != nil {
		return installPlan{}, err
	}
	spec := in.spec(installed.AuditLog)
	definition, err := in.serviceDefinition(spec)
	if err != nil {
		return installPlan{}, err
	}
	return installPlan{installed: installed, content: content, token: token, spec: spec, definition: definition}, nil
}

// place writes the plan's directories and files, owned by root, by root
// with acct's group, or by acct, and records in r what changed.
func (in *Installer) place(plan installPlan, acct Account, r *Report) error {
	p := in.o.Paths
	rootOwned := owner{0, 0}
	group := owner{0, acct.GID}
	self := owner{acct.UID, acct.GID}
	if acct.UID < 0 {
		rootOwned, group = owner{-1, -1}, owner{-1, -1}
	}
	steps := []func() error{
		func() error {
			ok, err := ensureDir(in.at(p.ConfigDir), 0o750, group)
			r.changed(ok, "directory %s", p.ConfigDir)
			return err
		},
		func() error {
			ok, err := ensureDir(in.at(p.StateDir), 0o750, self)
			r.changed(ok, "state directory %s", p.StateDir)
			return err
		},
		func() error { return in.auditDir(plan.installed.AuditLog, self, r) },
		func() error {
			exe := in.o.Executable
			if exe == "" {
				var err error
				if exe, err = os.Executable(); err != nil {
					return err
				}
			}
			ok, err := copyFile(exe, in.at(p.Binary), 0o755, rootOwned)
			r.changed(ok, "binary %s", p.Binary)
			return err
		},
		func() error {
			ok, err := writeFile(in.at(p.ConfigFile), plan.content, 0o640, group)
			r.changed(ok, "config %s", p.ConfigFile)
			return err
		},
		func() error {
			ok, err := writeFile(in.at(p.TokenFile), []byte(plan.token+"\n"), 0o600, self)
			r.changed(ok, "token %s (mode 0600, owner %s)", p.TokenFile, acct.Name)
			return err
		},
		func() error { return in.envFile(group, r) },
		func() error {
			if p.ServiceFile == "" {
				return nil
			}
			ok, err := writeFile(in.at(p.ServiceFile), []byte(plan.definition), 0o644, rootOwned)
			r.changed(ok, "service definition %s", p.ServiceFile)
			return err
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// token finds the agent token to install; see InstallRequest.TokenFile.
func (in *Installer) token(req InstallRequest, cfg *config.Config) (string, error) {
	if req.TokenFile != "" {
		abs, err := filepath.Abs(req.TokenFile)
		if err != nil {
			return "", err
		}
		return (&config.Config{TokenFile: abs}).LoadToken(nil)
	}
	if v, ok := in.o.Getenv(config.EnvAgentToken); ok {
		only := func(name string) (string, bool) {
			if name == config.EnvAgentToken {
				return v, true
			}
			return "", false
		}
		return (&config.Config{}).LoadToken(only)
	}
	installed := in.at(in.o.Paths.TokenFile)
	if cfg.TokenFile != "" && cfg.TokenFile != installed {
		if _, err := os.Stat(cfg.TokenFile); err == nil {
			return (&config.Config{TokenFile: cfg.TokenFile}).LoadToken(nil)
		}
	}
	if fi, err := os.Stat(installed); err == nil {
		// Our own file: a mode loosened by hand is put right rather than
		// refused, since the agent would refuse to start with it.
		if fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 && runtime.GOOS != "windows" {
			in.o.Logger.Warn("the installed token file was readable by other users; setting mode 0600 (consider rotating the token)",
				"file", in.o.Paths.TokenFile)
			if err := os.Chmod(installed, 0o600); err != nil {
				return "", fmt.Errorf("token file: %w", err)
			}
		}
		return (&config.Config{TokenFile: installed}).LoadToken(nil)
	}
	return "", fmt.Errorf("%w: pass --token-file FILE or set %s (never on the command line)", ErrNoToken, config.EnvAgentToken)
}

// auditDir creates the audit log's directory for the service user. An
// existing directory is left alone (it may be /var/log itself), with a
// warning if the service user does not own it.
func (in *Installer) auditDir(auditLog string, self owner, r *Report) error {
	if auditLog == "" {
		return nil
	}
	dir := filepath.Dir(auditLog)
	fi, err := os.Stat(in.at(dir))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		ok, err := ensureDir(in.at(dir), 0o750, self)
		r.changed(ok, "audit log directory %s", dir)
		return err
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("audit log directory %s is not a directory", dir)
	}
	if uid, _, ok := fileOwner(fi); ok && self.uid >= 0 && uid != self.uid {
		in.o.Logger.Warn("the audit log directory is not owned by the service user; make sure it can write there",
			"dir", dir, "user", in.o.User)
	}
	// A log left by a foreground run as root would lock the service out.
	if fi, err := os.Stat(in.at(auditLog)); err == nil && !fi.IsDir() {
		ok, err := fixMeta(in.at(auditLog), 0o640, self)
		r.changed(ok, "audit log %s (owner %s)", auditLog, in.o.User)
		return err
	}
	return nil
}

const envFileText = `# Environment of the postern-agent service (systemd EnvironmentFile).
# Read when the service starts; run "postern-agent restart" after editing.
# Put the egress proxy settings here, for example:
#   HTTPS_PROXY=http://proxy.corp.example:3128
#   NO_PROXY=.corp.example,10.0.0.0/8
# Never put the agent token here: it belongs in the token file.
`

// envFile creates the environment file with a comment when it is missing;
// an existing one keeps its content and gets its mode and owner fixed.
func (in *Installer) envFile(group owner, r *Report) error {
	p := in.o.Paths.EnvFile
	if p == "" {
		return nil
	}
	data, err := os.ReadFile(in.at(p))
	if errors.Is(err, fs.ErrNotExist) {
		ok, err := writeFile(in.at(p), []byte(envFileText), 0o640, group)
		r.changed(ok, "environment file %s", p)
		return err
	}
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, _, ok := strings.Cut(strings.TrimSpace(line), "="); ok && strings.TrimSpace(strings.TrimPrefix(k, "export ")) == config.EnvAgentToken {
			in.o.Logger.Warn("the environment file sets the agent token; remove it from there, the token file is the place for it",
				"file", p, "variable", config.EnvAgentToken)
		}
	}
	ok, err := fixMeta(in.at(p), 0o640, group)
	r.changed(ok, "environment file %s (mode 0640)", p)
	return err
}

// warnUnreadable warns about files the sandboxed service cannot read.
func (in *Installer) warnUnreadable(c *config.Config) {
	if runtime.GOOS != "linux" {
		return
	}
	for key, p := range map[string]string{"ca_file": c.CAFile, "audit_log": c.AuditLog} {
		for _, hidden := range []string{"/home/", "/root/", "/run/user/"} {
			if strings.HasPrefix(p, hidden) {
				in.o.Logger.Warn("the service cannot reach this path (ProtectHome=yes); move it, for example under /etc/postern or /var/log/postern",
					"key", key, "path", p)
			}
		}
	}
}
