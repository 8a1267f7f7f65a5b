package agent

import (
	"log/slog"
	"time"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/agent/stream"
)

// Options configure an Agent.
type Options struct {
	// Config is the validated configuration. Required.
	Config *config.Config
	// Token is the agent token; it never leaves this process except in
	// the Authorization header of the tunnel request.
	Token string
	// Version is reported in Hello and Health.
	Version string
	// Logger receives operational logs.
	Logger *slog.Logger
	// Resolver resolves target names; required.
	Resolver policy.Resolver
	// Audit receives one entry per stream; nil disables auditing.
	Audit stream.Auditor
	// Dial dials targets; defaults to a net.Dialer.
	Dial policy.DialFunc
	// OpenTimeout bounds resolve+connect of one stream when the relay's
	// request carries no earlier deadline.
	OpenTimeout time.Duration
	// IdleTimeout ends a stream with no traffic either way.
	IdleTimeout time.Duration
	// DrainTimeout bounds how long open streams may finish after a stop
	// (Run's context ends) or a relay's GoAway. Default 30 s.
	DrainTimeout time.Duration
	// RefusedTokenPause is the least wait after the relay refused the
	// token (401). Default 15 s.
	RefusedTokenPause time.Duration
	// BackoffBase and BackoffMax shape reconnect delays.
	BackoffBase, BackoffMax time.Duration
}
