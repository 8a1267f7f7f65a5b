package agent

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/postern/postern/agent/backoff"
	"github.com/postern/postern/agent/session"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// TunnelsDown says why the agent has fewer tunnels than it wants: the
// newest failure to open one, the relay's reason when it refused.
type TunnelsDown struct {
	// Reason is the relay's reason code when it refused the tunnel
	// (AGENT_TOKEN_REVOKED, AGENT_TOKEN_INVALID, RATE_LIMITED, ...), empty
	// when the relay was not reached.
	Reason  protocol.Reason `json:"reason,omitempty"`
	Message string          `json:"message"`
	// Since is the first failure of this run of failures.
	Since time.Time `json:"since"`
	// NextTryAt is set while the agent waits out a pause the refusal
	// calls for.
	NextTryAt *time.Time `json:"next_try_at,omitempty"`
}

// noteDown records a failure to open a tunnel and reports whether it is
// news: the first, or one unlike the one before. Repeats of the same
// failure are logged quietly.
func (a *Agent) noteDown(reason protocol.Reason, msg string, pause time.Duration) (news bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	news = a.down == nil || a.down.Reason != reason || a.down.Message != msg
	if a.down == nil {
		a.down = &TunnelsDown{Since: now}
	}
	a.down.Reason, a.down.Message, a.down.NextTryAt = reason, msg, nil
	if pause > 0 {
		at := now.Add(pause)
		a.down.NextTryAt = &at
	}
	return news
}

// noteUp clears the failure record once a tunnel is up, and returns it.
func (a *Agent) noteUpLocked() *TunnelsDown {
	d := a.down
	a.down = nil
	a.everUp = true
	return d
}

// downView is the failure record for the status, while tunnels are missing.
func (a *Agent) downViewLocked() *TunnelsDown {
	if a.down == nil || len(a.tunnels) >= a.tunnelsWanted() {
		return nil
	}
	d := *a.down
	return &d
}

// revoked reports whether the relay refused the tunnel because the
// connection or its token was revoked: retrying soon cannot help.
func revoked(r protocol.Reason) bool {
	return r == protocol.AgentTokenRevoked || r == protocol.ConnectionRevoked
}

// pauseAfter logs why a tunnel ended and waits whatever pause the relay's
// refusal calls for. paused reports that it waited such a pause; ok is
// false when ctx ended first. A failure that repeats is logged once, then
// at debug level until it changes.
func (a *Agent) pauseAfter(ctx context.Context, err error, log *slog.Logger) (paused, ok bool) {
	var re *tunnel.UpgradeError
	switch {
	case errors.As(err, &re):
		return a.pauseRefused(ctx, re, log)
	case errors.Is(err, session.ErrGoAway), errors.Is(err, errSameNode), errors.Is(err, errRespread):
		log.Info("tunnel down; reconnecting", "err", err)
	case err != nil:
		a.noteFailure(err, log)
	}
	return false, true
}

// noteFailure records and logs a tunnel that failed without a refusal.
func (a *Agent) noteFailure(err error, log *slog.Logger) {
	a.mu.Lock()
	everUp := a.everUp
	a.mu.Unlock()
	news := a.noteDown(protocol.ReasonUnknown, err.Error(), 0)
	switch {
	case !news:
		log.Debug("tunnel down; reconnecting", "err", err)
	case !everUp:
		log.Warn("cannot reach the relay; retrying quietly with backoff until it answers", "err", err)
	default:
		log.Warn("tunnel down; reconnecting", "err", err)
	}
}

// RetryAfterSpread is the most an agent adds to a relay's Retry-After:
// the header counts whole seconds, so the agents a relay gave slots in
// the same second come back spread over the next one, not at its start.
const RetryAfterSpread = time.Second

// pauseRefused handles a refusal before the upgrade.
func (a *Agent) pauseRefused(ctx context.Context, re *tunnel.UpgradeError, log *slog.Logger) (paused, ok bool) {
	reason, msg := refusalReason(re), refusalMessage(re)
	pause := min(re.RetryAfter(), maxRetryAfterPause) // the relay asked for a pause (rate limited, paced)
	if pause > 0 {
		pause += time.Duration(rand.Int64N(int64(RetryAfterSpread)))
	}
	if re.StatusCode == http.StatusUnauthorized {
		// A refused token will not fix itself in a second; retrying
		// slowly keeps this address under the relay's limit on refused
		// credentials, so doctor still sees the reason.
		pause = max(pause, a.opts.RefusedTokenPause)
	}
	if revoked(reason) {
		pause = max(pause, backoff.Jitter(a.opts.RevokedPause))
	}
	level := slog.LevelDebug
	if a.noteDown(reason, msg, pause) {
		level = slog.LevelError
	}
	what := "relay refused the tunnel; will keep retrying"
	if revoked(reason) {
		what = "relay says this agent's connection was revoked; retrying slowly in case it is restored"
	}
	log.Log(ctx, level, what, "status", re.StatusCode, "reason", reason, "message", msg, "retry_in", pause.Round(time.Second))
	if pause > 0 {
		return true, backoff.Sleep(ctx, pause)
	}
	return false, true
}
