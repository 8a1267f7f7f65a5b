package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/agent/stream"
)

// Defaults of Options. The first four are timers of protocol/spec.md
// section 10; session.DialTimeout, session.HelloTimeout and
// stream.RequestTimeout are the others on the agent's side.
const (
	// DefaultOpenTimeout caps the agent's own work on a dial request
	// (decide, resolve, connect) when the request's deadline is later.
	DefaultOpenTimeout = 15 * time.Second
	// DefaultIdleTimeout ends a data stream with no traffic either way.
	DefaultIdleTimeout = 15 * time.Minute
	// DefaultBackoffBase and DefaultBackoffMax shape reconnect delays:
	// 0.5 s doubling to 30 s, with jitter.
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
	// DefaultDrainTimeout bounds how long open streams may finish after a
	// stop or a relay's GoAway.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultRefusedTokenPause is the least wait after the relay refused
	// the token (401): long enough to stay under the relay's limit on
	// refused credentials, so doctor still sees the reason.
	DefaultRefusedTokenPause = 15 * time.Second
	// DefaultRevokedPause is the wait between tries after the relay said
	// the agent's connection or token was revoked: an admin may restore
	// it, but nothing the agent does will.
	DefaultRevokedPause = 5 * time.Minute
	// DefaultRespreadAfter is how long a tunnel that settled on a relay
	// node another tunnel holds serves before trying again for a node of
	// its own; the wait doubles while it keeps settling, up to ten minutes.
	DefaultRespreadAfter = 30 * time.Second
	// DefaultDialKeepAlive is the TCP keepalive of connections to targets.
	DefaultDialKeepAlive = 30 * time.Second
)

// Options configure an Agent. Start from DefaultOptions and set Config,
// Token and Resolver; New refuses options that do not Validate, it never
// fills in a missing value.
type Options struct {
	// Config is the validated configuration. Required.
	Config *config.Config
	// Token is the agent token; it never leaves this process except in
	// the Authorization header of the tunnel request. Required.
	Token string
	// Version is reported in Hello and Health.
	Version string
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
	// Resolver resolves target names with the customer's DNS. Required.
	Resolver policy.Resolver
	// Audit receives one entry per stream; nil disables auditing.
	Audit stream.Auditor
	// Dial dials targets the gate checked. Default: a net.Dialer with
	// DefaultDialKeepAlive.
	Dial policy.DialFunc
	// OpenTimeout bounds decide+resolve+connect of one stream when the
	// relay's request carries no earlier deadline. Default
	// DefaultOpenTimeout.
	OpenTimeout time.Duration
	// IdleTimeout ends a stream with no traffic either way. Default
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// DrainTimeout bounds how long open streams may finish after a stop
	// (Run's context ends) or a relay's GoAway. Default
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
	// RefusedTokenPause is the least wait after the relay refused the
	// token (401). Default DefaultRefusedTokenPause.
	RefusedTokenPause time.Duration
	// RevokedPause is the wait, with jitter, after the relay said the
	// connection or its token was revoked. Default DefaultRevokedPause.
	RevokedPause time.Duration
	// BackoffBase and BackoffMax shape reconnect delays; BackoffMax is at
	// least BackoffBase. Defaults DefaultBackoffBase, DefaultBackoffMax.
	BackoffBase, BackoffMax time.Duration
	// RespreadAfter is the first wait before a tunnel sharing a relay node
	// with another tries again for a node of its own. Default
	// DefaultRespreadAfter.
	RespreadAfter time.Duration
	// RecentLogs, when set, returns the agent's newest log lines, which
	// the status listener gives loopback clients for support bundles
	// (/debug/logs); the run command keeps them.
	RecentLogs func() []string
}

// DefaultOptions returns the documented defaults; Config, Token and
// Resolver are the caller's to set.
func DefaultOptions() Options {
	d := &net.Dialer{KeepAlive: DefaultDialKeepAlive}
	return Options{
		Dial:              d.DialContext,
		OpenTimeout:       DefaultOpenTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		DrainTimeout:      DefaultDrainTimeout,
		RefusedTokenPause: DefaultRefusedTokenPause,
		RevokedPause:      DefaultRevokedPause,
		BackoffBase:       DefaultBackoffBase,
		BackoffMax:        DefaultBackoffMax,
		RespreadAfter:     DefaultRespreadAfter,
	}
}

// Validate reports every missing or out-of-range option at once.
func (o Options) Validate() error {
	var errs []error
	if o.Config == nil || o.Config.Rules == nil {
		errs = append(errs, errors.New("a validated config is required"))
	} else if len(o.Config.RelayURLs) == 0 {
		errs = append(errs, errors.New("relay_url is required"))
	}
	if o.Token == "" {
		errs = append(errs, errors.New("token is required"))
	}
	if o.Resolver == nil {
		errs = append(errs, errors.New("resolver is required"))
	}
	if o.Dial == nil {
		errs = append(errs, errors.New("dial function is required (DefaultOptions has one)"))
	}
	for _, t := range []struct {
		name string
		d    time.Duration
	}{
		{"open timeout", o.OpenTimeout},
		{"idle timeout", o.IdleTimeout},
		{"drain timeout", o.DrainTimeout},
		{"refused token pause", o.RefusedTokenPause},
		{"revoked pause", o.RevokedPause},
		{"backoff base", o.BackoffBase},
		{"respread after", o.RespreadAfter},
	} {
		if t.d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", t.name, t.d))
		}
	}
	if o.BackoffMax < o.BackoffBase {
		errs = append(errs, fmt.Errorf("backoff max %s: must be at least backoff base %s", o.BackoffMax, o.BackoffBase))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent options: %w", err)
	}
	return nil
}
