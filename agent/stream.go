package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// requestReadTimeout bounds how long a new stream may take to send its
// request frame.
const requestReadTimeout = 10 * time.Second

// serveStream handles one relay-opened stream: request, decision,
// resolution, dial, result, splice.
func (a *Agent) serveStream(ctx context.Context, st *tunnel.Stream, log *slog.Logger) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(requestReadTimeout))
	req, err := protocol.ReadRequest(st)
	if err != nil {
		a.stats.countError(protocol.ProtocolError)
		_ = protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{Reason: protocol.ProtocolError, Message: "bad request frame: " + err.Error()})
		return
	}
	targetStr := net.JoinHostPort(req.Host, strconv.Itoa(req.Port))
	log = log.With("request_id", req.ID, "op", req.Op, "target", targetStr)
	start := time.Now()
	entry := audit.Entry{Time: start.UTC(), RequestID: req.ID, Op: string(req.Op), Target: targetStr}
	if req.Op == protocol.OpCheck {
		a.serveCheck(ctx, st, req, log)
		return
	}
	if req.Op != protocol.OpDial {
		res := protocol.Result{Reason: protocol.UnsupportedOp, Message: fmt.Sprintf("operation %q is not supported by this agent", req.Op)}
		a.refuse(st, res, entry, log)
		return
	}

	deadline := time.Now().Add(a.opts.OpenTimeout)
	if d := req.Deadline(); !d.IsZero() && d.Before(deadline) {
		deadline = d
	}
	_ = st.SetDeadline(deadline)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	target, res, d := a.dial(dctx, req, log)
	cancel()
	entry.Rule = res.Rule
	if target == nil {
		a.refuse(st, res, entry, log)
		return
	}
	entry.Addr, entry.Decision = res.Addr, audit.Allowed
	if d.Result == policy.Report {
		entry.Decision, entry.Reason = audit.ReportAllowed, string(d.Reason)
	}
	if err := protocol.WriteFrame(st, protocol.FrameResult, res); err != nil {
		_ = target.Close()
		entry.Message = "relay stream closed before the result was sent: " + err.Error()
		a.audit(entry, start, log)
		return
	}
	_ = st.SetDeadline(time.Time{})

	// When the tunnel ends (closed, forced stop), a splice blocked on the
	// target must end too: closing the target unblocks it.
	stopClose := context.AfterFunc(ctx, func() { _ = target.Close() })
	defer stopClose()
	a.stats.active.Add(1)
	defer a.stats.active.Add(-1)
	stats, err := tunnel.Splice(st, target, tunnel.SpliceOptions{
		WriteTimeout: tunnel.SpliceWriteTimeout,
		IdleTimeout:  a.opts.IdleTimeout,
	})
	if errors.Is(err, tunnel.ErrWriteTimeout) {
		// The tunnel itself no longer drains: end the whole session so
		// the slot reconnects, rather than leave readers hung on it.
		log.Warn("tunnel write timed out; closing the tunnel", "err", err)
		_ = st.Session().Close()
	}
	a.stats.bytesIn.Add(uint64(stats.AToB))
	a.stats.bytesOut.Add(uint64(stats.BToA))
	entry.BytesUp, entry.BytesDown = stats.AToB, stats.BToA
	if err != nil {
		entry.Message = err.Error()
	}
	a.audit(entry, start, log)
	log.Debug("stream done", "addr", res.Addr, "to_target", stats.AToB, "from_target", stats.BToA,
		"duration", time.Since(start), "err", err)
}

// refuse answers a refused request, counts it and audits it.
func (a *Agent) refuse(st *tunnel.Stream, res protocol.Result, entry audit.Entry, log *slog.Logger) {
	a.stats.countError(res.Reason)
	log.Info("stream refused", "reason", res.Reason, "rule", res.Rule, "message", res.Message)
	_ = protocol.WriteFrame(st, protocol.FrameResult, res)
	entry.Decision, entry.Reason, entry.Message = audit.Denied, string(res.Reason), res.Message
	a.audit(entry, entry.Time, log)
}

// audit records a finished stream; a failing audit log is logged, never
// fatal to the stream.
func (a *Agent) audit(e audit.Entry, start time.Time, log *slog.Logger) {
	if a.opts.Audit == nil {
		return
	}
	e.DurationMS = time.Since(start).Milliseconds()
	if err := a.opts.Audit.Write(e); err != nil {
		log.Error("audit log write", "err", err)
	}
}

// dial asks the gate about the request and dials the checked addresses
// in order, the next one when a dial fails. It returns the target
// connection and an ok result, or nil and the refusal; the decision says
// whether report mode let a would-be denial through.
func (a *Agent) dial(ctx context.Context, req protocol.Request, log *slog.Logger) (net.Conn, protocol.Result, policy.Decision) {
	d := a.gate.Decide(ctx, req.Host, req.Port)
	logWaived(d, log)
	conn, res := d.Dial(ctx, a.opts.Dial)
	return conn, res, d
}

// logWaived warns of every refusal report mode let through.
func logWaived(d policy.Decision, log *slog.Logger) {
	for _, w := range d.Waived {
		if w.Addr.IsValid() {
			log.Warn("report mode: would block address", "addr", w.Addr, "rule", w.Rule, "why", w.Why)
			continue
		}
		log.Warn("report mode: would deny", "reason", w.Reason, "rule", w.Rule, "why", w.Why)
	}
}
