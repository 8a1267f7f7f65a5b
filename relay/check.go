package relay

import (
	"context"
	"net/http"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// checkTimeout is how long the relay waits for a live check's result. The
// agent bounds its check to 10 s; the rest is room for the round trip.
const checkTimeout = 12 * time.Second

// Bounds on what the relay passes on from an agent's check result.
const (
	maxCheckSteps  = 8
	maxCheckDetail = 1024
)

// apiCheck serves POST /v1/connections/{id}/check: a live check run by the
// agent inside the customer network. A check that ran answers 200 with its
// verdict; a check that could not run (no tunnel, revoked, an agent without
// the operation) answers the error of the reason table.
func (s *Server) apiCheck(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	c, ok := s.visibleConnection(w, r, k)
	if !ok {
		return
	}
	var req api.CheckRequest
	if e := decodeBody(r, &req); e != nil {
		writeError(w, r, *e)
		return
	}
	t, aerr := parseBaseURL(req.BaseURL)
	if aerr != nil {
		writeError(w, r, *aerr)
		return
	}
	cr, aerr := s.checkAgent(r.Context(), c, t, req.BaseURL, requestID(r))
	if aerr != nil {
		s.log.Info("check not run", "connection", c.ID, "request_id", requestID(r), "reason", aerr.reason, "message", aerr.msg)
		writeError(w, r, *aerr)
		return
	}
	out := toAPICheck(cr)
	s.log.Info("check done", "connection", c.ID, "request_id", requestID(r), "ready", out.Ready, "reason", out.Reason)
	writeJSON(w, http.StatusOK, out)
}

// checkAgent asks one of the connection's agents to run a check.
func (s *Server) checkAgent(ctx context.Context, conn store.Connection, t baseTarget, baseURL, reqID string) (protocol.CheckResult, *apiError) {
	req := protocol.Request{Op: protocol.OpCheck, ID: reqID, Host: t.host, Port: t.port, BaseURL: baseURL}
	st, res, aerr := s.askAgent(ctx, conn, req, checkTimeout)
	if aerr != nil {
		if aerr.reason == protocol.UnsupportedOp {
			aerr.msg = "the agent does not support live checks; upgrade it: " + aerr.msg
		}
		return protocol.CheckResult{}, aerr
	}
	_ = st.Close()
	if res.Check == nil {
		return protocol.CheckResult{}, &apiError{reason: protocol.ProtocolError, msg: "the agent answered the check without its outcome"}
	}
	return *res.Check, nil
}

// toAPICheck passes the agent's outcome on unchanged in meaning: the
// reason stays the agent's, the provider code comes from the reason table,
// and only the size is bounded.
func toAPICheck(cr protocol.CheckResult) api.Check {
	out := api.Check{
		Ready:             cr.Ready && cr.Reason == protocol.ReasonUnknown,
		Reason:            cr.Reason,
		ProviderErrorCode: cr.Reason.Info().ProviderErrorCode,
		RetryAfter:        max(cr.RetryAfterSeconds, 0),
		Steps:             make([]api.CheckStep, 0, min(len(cr.Steps), maxCheckSteps)),
	}
	for _, s := range cr.Steps[:min(len(cr.Steps), maxCheckSteps)] {
		detail := s.Detail
		if len(detail) > maxCheckDetail {
			detail = detail[:maxCheckDetail]
		}
		out.Steps = append(out.Steps, api.CheckStep{Step: s.Step, OK: s.OK, MS: max(s.MS, 0), Reason: s.Reason, Detail: detail})
	}
	return out
}
