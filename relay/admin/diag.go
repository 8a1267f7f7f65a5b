package admin

import (
	"net/http"
	"runtime/pprof"
	"strings"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/store"
)

// Diagnostics is what a support bundle takes from the running node.
type Diagnostics interface {
	// Info describes the node: version, runtime, and its configuration
	// with every secret replaced.
	Info() any
	// Logs are the node's newest log lines; Audit, the newest of them
	// that record an admin's action.
	Logs() []string
	Audit() []string
}

// DiagParts are the parts GET /v1/diag/{part} serves.
var DiagParts = []string{"info", "logs", "audit", "goroutine", "heap"}

// diag serves GET /v1/diag/{part} to admin keys: the running node's part
// of a support bundle (postern-relay diag). Profiles are the node's own:
// goroutine as text with every stack, heap in pprof's format.
func (a *API) diag(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	if !k.Admin {
		reply.Error(w, r, errAdminOnly)
		return
	}
	if a.diagnostics == nil {
		reply.Error(w, r, protocol.Errorf(protocol.InvalidRequest, "this node keeps no diagnostics"))
		return
	}
	part := r.PathValue("part")
	a.log.Info("diagnostics read", "part", part, "by_key", k.ID)
	switch part {
	case "info":
		reply.JSON(w, http.StatusOK, a.diagnostics.Info())
	case "logs":
		writeLines(w, a.diagnostics.Logs())
	case "audit":
		writeLines(w, a.diagnostics.Audit())
	case "goroutine", "heap":
		debug := 0
		w.Header().Set("Content-Type", "application/octet-stream")
		if part == "goroutine" {
			debug = 2
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		w.Header().Set("Cache-Control", "no-store")
		_ = pprof.Lookup(part).WriteTo(w, debug)
	default:
		reply.Error(w, r, protocol.Errorf(protocol.InvalidRequest, "diagnostics part %q: one of %s", part, strings.Join(DiagParts, ", ")))
	}
}

func writeLines(w http.ResponseWriter, lines []string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	for _, l := range lines {
		_, _ = w.Write([]byte(l + "\n"))
	}
}
