// Package config reads, checks and holds the postern-agent configuration.
//
// It owns the on-disk YAML format, the POSTERN_* environment overrides and the
// loading of the agent token. Decoding is strict and reports every problem in
// one pass, each located by file:line (or by the environment variable that
// supplied it), so an admin can fix a file without a run-edit-run loop. The
// on-disk types are private; callers get a validated Config whose allowlist is
// already compiled.
//
// The package never opens a socket, never logs and reads only the files it is
// given: the config file in Load and the token file in Config.LoadToken.
package config
