package installer

import (
	"encoding/xml"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// Spec describes the agent service independently of the service manager.
// SystemdUnit and LaunchdPlist render it; no field may hold a secret.
type Spec struct {
	Binary     string // absolute path of the agent executable
	ConfigFile string // passed as run --config
	EnvFile    string // systemd EnvironmentFile (optional, "-" prefixed)
	User       string // the account the service runs as (systemd)
	StateDir   string // writable state directory
	AuditDir   string // directory of the audit log; empty when none is configured
	LogFile    string // launchd stdout/stderr
}

// Args are the agent's arguments after the binary.
func (s Spec) Args() []string { return []string{"run", "--config", s.ConfigFile} }

// RestartDelay is how long every service manager waits before restarting a
// stopped agent. Reconnecting quickly matters more than backing off: the
// agent backs off its own relay dials.
const RestartDelay = "2s"

// SystemdUnit renders the agent's systemd unit. It is our own unit rather
// than the service library's template, whose restart delay is 120 s and which
// applies none of the sandboxing below.
func SystemdUnit(s Spec) (string, error) {
	writable := []string{s.StateDir}
	if s.AuditDir != "" && s.AuditDir != s.StateDir {
		writable = append(writable, s.AuditDir)
	}
	for what, p := range map[string]string{"binary": s.Binary, "config": s.ConfigFile, "environment file": s.EnvFile, "state directory": s.StateDir} {
		if err := checkPath(what, p); err != nil {
			return "", err
		}
	}
	if s.AuditDir != "" {
		if err := checkPath("audit log directory", s.AuditDir); err != nil {
			return "", err
		}
	}
	if s.User == "" || strings.ContainsFunc(s.User, func(r rune) bool { return r <= ' ' || r == '%' }) {
		return "", fmt.Errorf("service user %q is not a plain account name", s.User)
	}
	stateName, err := stateDirectoryName(s.StateDir)
	if err != nil {
		return "", err
	}

	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("# Written by `postern-agent install`; running it again rewrites this file.")
	line("# Put HTTPS_PROXY / NO_PROXY in %s, never the agent token.", s.EnvFile)
	line("[Unit]")
	line("Description=Postern agent (outbound tunnel to the Postern relay)")
	line("Documentation=https://github.com/postern/postern#install-the-agent-as-a-service")
	line("Wants=network-online.target")
	line("After=network-online.target")
	line("# Keep restarting for as long as it takes; never give up after a burst.")
	line("StartLimitIntervalSec=0")
	line("")
	line("[Service]")
	line("Type=simple")
	line("User=%s", s.User)
	line("Group=%s", s.User)
	line("ExecStart=%s %s", s.Binary, strings.Join(s.Args(), " "))
	line("ExecReload=/bin/kill -HUP $MAINPID")
	line("EnvironmentFile=-%s", s.EnvFile)
	line("Restart=always")
	line("RestartSec=%s", RestartDelay)
	line("TimeoutStopSec=45s") // longer than the agent's 30 s drain
	line("")
	line("# Writable: the state and audit log directories, nothing else.")
	line("StateDirectory=%s", stateName)
	line("StateDirectoryMode=0750")
	line("ReadWritePaths=%s", strings.Join(writable, " "))
	line("UMask=0027")
	line("")
	line("NoNewPrivileges=yes")
	line("ProtectSystem=strict")
	line("ProtectHome=yes")
	line("PrivateTmp=yes")
	line("PrivateDevices=yes")
	line("ProtectKernelTunables=yes")
	line("ProtectKernelModules=yes")
	line("ProtectKernelLogs=yes")
	line("ProtectControlGroups=yes")
	line("ProtectClock=yes")
	line("ProtectHostname=yes")
	line("RestrictNamespaces=yes")
	line("RestrictRealtime=yes")
	line("RestrictSUIDSGID=yes")
	line("LockPersonality=yes")
	line("MemoryDenyWriteExecute=yes")
	line("RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK")
	line("CapabilityBoundingSet=")
	line("AmbientCapabilities=")
	line("SystemCallArchitectures=native")
	line("")
	line("[Install]")
	line("WantedBy=multi-user.target")
	return b.String(), nil
}

// stateDirectoryName turns /var/lib/NAME into NAME for StateDirectory=,
// which systemd always places under /var/lib.
func stateDirectoryName(dir string) (string, error) {
	rel, err := filepath.Rel("/var/lib", dir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("state directory %s is not under /var/lib", dir)
	}
	return rel, nil
}

// LaunchdPlist renders the agent's launchd job: started at boot (RunAtLoad)
// and restarted whenever it exits (KeepAlive). The job's label is
// ServiceName, which is what the service library addresses it by.
func LaunchdPlist(s Spec) (string, error) {
	for what, p := range map[string]string{"binary": s.Binary, "config": s.ConfigFile, "state directory": s.StateDir, "log file": s.LogFile} {
		if err := checkPath(what, p); err != nil {
			return "", err
		}
	}
	str := func(v string) string {
		var b strings.Builder
		_ = xml.EscapeText(&b, []byte(v))
		return "<string>" + b.String() + "</string>"
	}
	var b strings.Builder
	line := func(v string) { b.WriteString(v + "\n") }
	line(`<?xml version="1.0" encoding="UTF-8"?>`)
	line(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">`)
	line(`<!-- Written by postern-agent install; running it again rewrites this file. -->`)
	line(`<plist version="1.0">`)
	line(`<dict>`)
	line(`	<key>Label</key>` + str(ServiceName))
	line(`	<key>ProgramArguments</key>`)
	line(`	<array>`)
	for _, a := range slices.Concat([]string{s.Binary}, s.Args()) {
		line(`		` + str(a))
	}
	line(`	</array>`)
	line(`	<key>RunAtLoad</key><true/>`)
	line(`	<key>KeepAlive</key><true/>`)
	line(`	<key>ThrottleInterval</key><integer>` + strings.TrimSuffix(RestartDelay, "s") + `</integer>`)
	line(`	<key>WorkingDirectory</key>` + str(s.StateDir))
	line(`	<key>Umask</key><integer>23</integer>`)
	line(`	<key>StandardOutPath</key>` + str(s.LogFile))
	line(`	<key>StandardErrorPath</key>` + str(s.LogFile))
	line(`</dict>`)
	line(`</plist>`)
	return b.String(), nil
}
