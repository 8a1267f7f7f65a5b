package main

import (
	"log/slog"

	"github.com/postern/postern/cmd/internal/logring"
	"github.com/postern/postern/relay"
)

// recentLines is how many log lines, and admin actions, a node keeps for
// its support bundle.
const recentLines = 1000

// recentLogs are the rings a node's logs are kept in.
type recentLogs struct{ logs, audit *logring.Ring }

// keepRecentLogs tees log into rings of the newest lines; admin actions
// (records with by_key) have a ring of their own, so a busy node's
// traffic does not push them out.
func keepRecentLogs(log *slog.Logger) (*slog.Logger, recentLogs) {
	r := recentLogs{logs: logring.New(recentLines), audit: logring.New(recentLines)}
	return slog.New(logring.Tee(log.Handler(), r.logs, r.audit, "by_key")), r
}

// observeConfig maps the history and status page settings: zero keeps
// the relay's default, a negative flap threshold turns flapping off.
func (c serveConfig) observeConfig(rc *relay.Config) {
	setPositive(&rc.HistoryRetention, c.HistoryRetention)
	setPositive(&rc.FlapWindow, c.FlapWindow)
	rc.FlapThreshold = limitOrOff(rc.FlapThreshold, c.FlapThreshold)
	rc.SecureCookies = c.SecureCookies
}
