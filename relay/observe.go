package relay

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/cluster"
	"github.com/postern/postern/relay/history"
	"github.com/postern/postern/relay/status"
	"github.com/postern/postern/relay/ui"
)

// observing holds the parts that let admins look at the relay: the
// connection history, the status page and the support bundle's endpoint.
type observing struct {
	// recorder writes a single node's transitions; nil in a cluster,
	// whose book stores them as it publishes them.
	recorder *history.Recorder
	reader   *history.Reader
	ui       http.Handler
}

// recordHistory returns where the single node's book sends every
// transition for the history.
func (s *Server) recordHistory() func(api.Event) {
	s.obs.recorder = history.NewRecorder(s.store, s.log, s.metrics.reg)
	return s.obs.recorder.Offer
}

// flapPolicy is the status keeper's rule for flapping tunnels.
func (s *Server) flapPolicy() status.FlapPolicy {
	return status.FlapPolicy{Threshold: s.cfg.FlapThreshold, Window: s.cfg.FlapWindow}
}

// historyReader reads the history for the API and the status page.
func (s *Server) historyReader() *history.Reader {
	if s.obs.reader == nil {
		s.obs.reader = history.NewReader(s.store)
	}
	return s.obs.reader
}

// startObserving starts the history's writer (single node) and pruner;
// they stop when s.ctx ends and Close waits for them. The writer stops
// after the broker closed its sessions, so the last transitions are
// written too.
func (s *Server) startObserving() {
	if r := s.obs.recorder; r != nil {
		s.background.Go(func() { r.Run(s.ctx) })
	}
	p := history.NewPruner(s.store, s.cfg.HistoryRetention, s.log)
	s.background.Go(func() { p.Run(s.ctx) })
}

// routeObserving mounts the status page on the API listener.
func (s *Server) routeObserving(mux *http.ServeMux) {
	if s.obs.ui != nil {
		mux.Handle("/ui/", s.obs.ui)
	}
}

// buildUI makes the status page. In a cluster its cookies are MAC'd with
// a key derived from the cluster key, so any node behind a load balancer
// accepts them, and a sign-out reaches every node.
func (s *Server) buildUI() error {
	cfg := ui.Config{SessionTTL: ui.DefaultSessionTTL, SecureCookies: s.cfg.SecureCookies, NodeID: s.cfg.NodeID, Version: s.cfg.Version}
	parts := ui.Parts{API: s.api, Auth: s.auth, Store: s.store, Log: s.log}
	if s.node != nil {
		cfg.Key = ui.DeriveKey(s.cfg.Cluster.Key)
		parts.SignedOut = func(ctx context.Context, id string, until time.Time) {
			payload := id + " " + strconv.FormatInt(until.Unix(), 10)
			if err := s.node.Announce(ctx, cluster.ChannelSessions, payload); err != nil {
				s.log.Warn("announce a status page sign-out to the cluster", "err", err)
			}
		}
	}
	page, err := ui.New(cfg, parts)
	if err != nil {
		return err
	}
	s.obs.ui = page
	if s.node != nil {
		s.node.Handle(cluster.ChannelSessions, func(payload string) {
			id, at, _ := strings.Cut(payload, " ")
			if unix, err := strconv.ParseInt(at, 10, 64); err == nil {
				page.Forget(id, time.Unix(unix, 0))
			}
		})
	}
	return nil
}
