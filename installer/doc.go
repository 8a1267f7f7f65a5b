// Package installer installs postern-agent as a system service and controls
// it through the host's service manager: systemd on Linux, the Service
// Control Manager on Windows, launchd on macOS.
//
// It owns the on-disk layout of an installed agent (config, token,
// environment file, state directory, binary), the service definitions we
// write ourselves (a hardened systemd unit and a launchd plist, never the
// service library's defaults) and the checks that refuse to install where
// no service manager can run (containers, hosts without systemd) or without
// the privileges to do so.
//
// Every filesystem path it writes is joined under Options.Root, so the whole
// install can be exercised against a temporary directory; the service
// manager and the account database are seams (Manager, Accounts) for the
// same reason. The agent token is copied from a file or the environment and
// is never printed, logged, passed in argv or written into a service
// definition.
package installer
