package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/allowlist"
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
	target, res, overridden := a.dial(dctx, req, log)
	cancel()
	entry.Rule = res.Rule
	if target == nil {
		a.refuse(st, res, entry, log)
		return
	}
	entry.Addr, entry.Decision = res.Addr, audit.Allowed
	if overridden != "" {
		entry.Decision, entry.Reason = audit.ReportAllowed, string(overridden)
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

// plan is the decision on a dial request: the addresses that passed every
// check, in the order to dial them.
type plan struct {
	addrs []netip.AddrPort
	rule  string
	// overridden names the reason a would-be denial was let through in
	// report mode; empty in enforce mode.
	overridden protocol.Reason
	// lookedUp says the name was looked up: the allowlist let the request
	// through and any refusal came from DNS or the address checks.
	lookedUp bool
	// answer says how the name was resolved and found is every address
	// the lookup returned, allowed or not; both are for checks' details.
	answer resolve.Answer
	found  []netip.Addr
}

// plan decides on the request, resolves a name once, and checks every
// resolved address. It returns the refusal when nothing may be dialled.
func (a *Agent) plan(ctx context.Context, req protocol.Request, log *slog.Logger) (plan, *protocol.Result) {
	pol := a.Policy()
	return a.planWith(ctx, pol, pol.Mode == config.ModeReport, req, log)
}

// planWith is plan under the given policy; report lets would-be denials
// through. Checks plan with report false: they show what enforce would do.
func (a *Agent) planWith(ctx context.Context, pol *Policy, report bool, req protocol.Request, log *slog.Logger) (plan, *protocol.Result) {
	d := pol.List.Decide(req.Host, req.Port)
	p := plan{rule: d.Rule}
	if !d.Allowed() {
		reason := verdictReason(d.Verdict)
		if !report || d.Verdict == allowlist.BadTarget {
			return p, &protocol.Result{Reason: reason, Message: d.Reason, Rule: d.Rule}
		}
		p.overridden = reason
		log.Warn("report mode: would deny", "reason", reason, "rule", d.Rule, "why", d.Reason)
	}
	t, err := allowlist.NormalizeHost(req.Host)
	if err != nil {
		return p, &protocol.Result{Reason: protocol.BadTarget, Message: err.Error()}
	}
	port := uint16(req.Port)
	if t.Addr.IsValid() {
		// Decide already judged the literal with every rule.
		p.addrs = []netip.AddrPort{netip.AddrPortFrom(t.Addr, port)}
		return p, nil
	}
	p.lookedUp = true
	found, answer, err := a.opts.Resolver.Lookup(ctx, t.Name)
	p.answer, p.found = answer, found
	if err != nil {
		reason := resolve.Reason(err)
		if reason == protocol.ReasonUnknown {
			reason = protocol.DNSTimeout
		}
		return p, &protocol.Result{Reason: reason, Message: err.Error(), Rule: d.Rule}
	}
	var blockedMsg string
	for _, addr := range found {
		if cd := pol.List.CheckAddr(addr, req.Port); !cd.Allowed() {
			if !report {
				blockedMsg = fmt.Sprintf("%s resolved to %s: %s", t.Name, addr, cd.Reason)
				continue
			}
			p.overridden = protocol.TargetBlocked
			log.Warn("report mode: would block address", "addr", addr, "rule", cd.Rule, "why", cd.Reason)
		}
		p.addrs = append(p.addrs, netip.AddrPortFrom(addr, port))
	}
	if len(p.addrs) == 0 {
		if blockedMsg == "" {
			blockedMsg = t.Name + " resolved to no address"
		}
		return p, &protocol.Result{Reason: protocol.TargetBlocked, Message: blockedMsg, Rule: d.Rule}
	}
	return p, nil
}

// dial plans the request and dials the checked addresses in order, the
// next one when a dial fails. It returns the target connection and an ok
// result, or nil and the refusal. In report mode, overridden names the
// reason a would-be denial was let through.
func (a *Agent) dial(ctx context.Context, req protocol.Request, log *slog.Logger) (_ net.Conn, _ protocol.Result, overridden protocol.Reason) {
	p, refusal := a.plan(ctx, req, log)
	if refusal != nil {
		return nil, *refusal, ""
	}
	conn, res := a.dialPlan(ctx, p)
	if conn == nil {
		return nil, res, ""
	}
	return conn, res, p.overridden
}

// dialPlan dials the plan's checked addresses in order, the next one when
// a dial fails, and returns the first connection with an ok result, or nil
// and the last failure.
func (a *Agent) dialPlan(ctx context.Context, p plan) (net.Conn, protocol.Result) {
	var last protocol.Result
	for _, ap := range p.addrs {
		conn, err := a.opts.Dial(ctx, "tcp", ap.String())
		if err != nil {
			last = protocol.Result{Reason: DialReason(err), Message: fmt.Sprintf("dial %s: %v", ap, err), Rule: p.rule}
			continue
		}
		return conn, protocol.Result{OK: true, Addr: ap.String(), Rule: p.rule}
	}
	return nil, last
}

func verdictReason(v allowlist.Verdict) protocol.Reason {
	switch v {
	case allowlist.Missing:
		return protocol.AllowlistMissing
	case allowlist.Blocked:
		return protocol.TargetBlocked
	case allowlist.BadTarget:
		return protocol.BadTarget
	}
	return protocol.AllowlistMissing
}

// DialReason classifies a failed TCP connect as a reason code.
func DialReason(err error) protocol.Reason {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return protocol.ConnectRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return protocol.HostUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return protocol.ConnectTimeout
	}
	return protocol.HostUnreachable
}
