package installer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// ServiceName is the agent's name in every service manager (the systemd unit
// postern-agent.service, the launchd label, the Windows service name).
const ServiceName = "postern-agent"

// DefaultUser is the unprivileged account the agent runs as on Linux.
const DefaultUser = "postern"

// Paths is where an installed agent lives. They are the paths as the running
// service sees them; the installer joins them under Options.Root to write.
type Paths struct {
	ConfigDir   string // holds the config, token and environment file
	ConfigFile  string // the agent config the service runs with
	TokenFile   string // the agent token, readable only by the service user
	EnvFile     string // admin-maintained environment (HTTPS_PROXY, NO_PROXY); systemd only
	Binary      string // the agent executable the service starts
	StateDir    string // the agent's writable state directory
	ServiceFile string // the systemd unit or launchd plist; empty on Windows
	LogFile     string // stdout and stderr of the launchd job; macOS only
}

// DefaultPaths returns the standard layout for goos ("linux", "darwin",
// "windows"); other systems get the Linux layout.
func DefaultPaths(goos string) Paths {
	switch goos {
	case "windows":
		data := envOr("ProgramData", `C:\ProgramData`)
		prog := envOr("ProgramFiles", `C:\Program Files`)
		dir := data + `\Postern`
		return Paths{
			ConfigDir:  dir,
			ConfigFile: dir + `\agent.yaml`,
			TokenFile:  dir + `\agent.token`,
			Binary:     prog + `\Postern\postern-agent.exe`,
			StateDir:   dir + `\state`,
		}
	case "darwin":
		return Paths{
			ConfigDir:   "/etc/postern",
			ConfigFile:  "/etc/postern/agent.yaml",
			TokenFile:   "/etc/postern/agent.token",
			Binary:      "/usr/local/bin/postern-agent",
			StateDir:    "/var/lib/postern-agent",
			ServiceFile: "/Library/LaunchDaemons/" + ServiceName + ".plist",
			LogFile:     "/var/log/postern-agent.log",
		}
	default:
		return Paths{
			ConfigDir:   "/etc/postern",
			ConfigFile:  "/etc/postern/agent.yaml",
			TokenFile:   "/etc/postern/agent.token",
			EnvFile:     "/etc/postern/agent.env",
			Binary:      "/usr/local/bin/postern-agent",
			StateDir:    "/var/lib/postern-agent",
			ServiceFile: "/etc/systemd/system/" + ServiceName + ".service",
		}
	}
}

func envOr(name, def string) string {
	if runtime.GOOS != "windows" {
		return def
	}
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// checkPath reports a path that is not absolute or that a systemd unit or
// launchd plist could not carry verbatim: no quoting, no specifiers, no
// variables.
func checkPath(what, p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%w: %s %q is not absolute", ErrUnsafePath, what, p)
	}
	for _, r := range p {
		if r <= ' ' || r == 0x7f || strings.ContainsRune("\"'%$\\;`", r) {
			return fmt.Errorf("%w: %s %q contains %q", ErrUnsafePath, what, p, r)
		}
	}
	return nil
}
