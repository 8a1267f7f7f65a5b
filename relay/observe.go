package relay

import (
	"net/http"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/history"
	"github.com/postern/postern/relay/status"
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
