package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/yamux"

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

// errCheckNotSent means the check request never reached the agent, so the
// next tunnel may be tried.
var errCheckNotSent = errors.New("check request not sent")

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

// checkAgent asks one of the connection's agents to run a check. Like
// dialAgent, it falls back to the next tunnel while the request has not
// reached an agent.
func (s *Server) checkAgent(ctx context.Context, conn store.Connection, t baseTarget, baseURL, reqID string) (protocol.CheckResult, *apiError) {
	if conn.RevokedAt != nil {
		return protocol.CheckResult{}, &apiError{reason: protocol.ConnectionRevoked, msg: "connection " + conn.ID + " was revoked"}
	}
	cands := s.reg.candidates(conn.ID)
	if len(cands) == 0 {
		return protocol.CheckResult{}, s.offlineError(conn)
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	req := protocol.Request{Op: protocol.OpCheck, ID: reqID, Host: t.host, Port: t.port, BaseURL: baseURL, DeadlineUnixMS: deadline.UnixMilli()}

	busy := 0
	var lastErr error
	for _, sess := range cands {
		if sess.active.Load() >= int64(s.cfg.MaxStreamsPerTunnel) {
			busy++
			continue
		}
		st, release, err := sess.openStream(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		res, err := exchangeCheck(ctx, st.(*yamux.Stream), req, deadline)
		release()
		switch {
		case errors.Is(err, errCheckNotSent):
			lastErr = err
			continue
		case err != nil:
			var ne net.Error
			if ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
				return protocol.CheckResult{}, &apiError{reason: protocol.ConnectTimeout, msg: "agent did not answer the check within " + checkTimeout.String()}
			}
			return protocol.CheckResult{}, &apiError{reason: protocol.ProtocolError, msg: "read agent check result: " + err.Error()}
		case !res.OK:
			reason := res.Reason
			if reason == protocol.ReasonUnknown {
				reason = protocol.ProtocolError
			}
			msg := res.Message
			if reason == protocol.UnsupportedOp {
				msg = "the agent does not support live checks; upgrade it: " + msg
			}
			return protocol.CheckResult{}, &apiError{reason: reason, msg: msg, retryAfter: res.RetryAfterSeconds}
		case res.Check == nil:
			return protocol.CheckResult{}, &apiError{reason: protocol.ProtocolError, msg: "the agent answered the check without its outcome"}
		}
		return *res.Check, nil
	}
	if busy > 0 && lastErr == nil {
		return protocol.CheckResult{}, &apiError{reason: protocol.AgentBusy, msg: fmt.Sprintf("every tunnel has %d streams open", s.cfg.MaxStreamsPerTunnel), retryAfter: 1}
	}
	if ctx.Err() != nil {
		return protocol.CheckResult{}, &apiError{reason: protocol.ConnectTimeout, msg: "opening a stream to the agent timed out"}
	}
	return protocol.CheckResult{}, &apiError{reason: protocol.AgentOffline, msg: fmt.Sprintf("no agent tunnel accepted the check: %v", lastErr)}
}

// exchangeCheck sends the check request on st, reads the result and
// closes st. An API caller that goes away ends the wait at once.
func exchangeCheck(ctx context.Context, st *yamux.Stream, req protocol.Request, deadline time.Time) (protocol.Result, error) {
	defer st.Close()
	_ = st.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(time.Now()) })
	defer stop()
	if err := protocol.WriteFrame(st, protocol.FrameRequest, req); err != nil {
		return protocol.Result{}, fmt.Errorf("%w: %w", errCheckNotSent, err)
	}
	return protocol.ReadResult(st)
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
