package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// RequestTimeout bounds how long a new stream may take to send its request
// frame (protocol/spec.md section 10).
const RequestTimeout = 10 * time.Second

// Auditor records one entry per stream; the agent's audit.Log is one.
type Auditor interface {
	Write(audit.Entry) error
}

// Config shapes a Server. Every field but Audit and CAFile is required.
type Config struct {
	// Gate decides every target.
	Gate *policy.Gate
	// Dial dials an address the gate checked.
	Dial policy.DialFunc
	// Audit receives one entry per stream; nil disables auditing.
	Audit Auditor
	// OpenTimeout bounds decide+resolve+connect of a dial when the
	// relay's request carries no earlier deadline.
	OpenTimeout time.Duration
	// IdleTimeout ends a dialled stream with no traffic either way.
	IdleTimeout time.Duration
	// CAFile adds roots to the system's for a check's TLS step.
	CAFile string
}

// Validate reports every required field that is missing or out of range.
func (c Config) Validate() error {
	var errs []error
	if c.Gate == nil {
		errs = append(errs, errors.New("gate is required"))
	}
	if c.Dial == nil {
		errs = append(errs, errors.New("dial function is required"))
	}
	if c.OpenTimeout <= 0 {
		errs = append(errs, fmt.Errorf("open timeout %s: must be positive", c.OpenTimeout))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("idle timeout %s: must be positive", c.IdleTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stream config: %w", err)
	}
	return nil
}

// Server serves relay-opened streams; it is safe for concurrent use and
// its ServeStream is an agent/session Handler.
type Server struct {
	cfg   Config
	stats stats
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg}, nil
}

// ServeStream handles one relay-opened stream: request, then the dial or
// check it asks for. A stream whose dial succeeded comes back as rest, its
// data phase, which closes st when it ends (see session.Handler); any
// other stream is closed before ServeStream returns.
func (s *Server) ServeStream(ctx context.Context, st *tunnel.Stream, log *slog.Logger) (rest func()) {
	defer func() {
		if rest == nil {
			_ = st.Close()
		}
	}()
	_ = st.SetDeadline(time.Now().Add(RequestTimeout))
	req, err := protocol.ReadRequest(st)
	if err != nil {
		s.stats.countError(protocol.ProtocolError)
		_ = protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{Reason: protocol.ProtocolError, Message: "bad request frame: " + err.Error()})
		return
	}
	targetStr := net.JoinHostPort(req.Host, strconv.Itoa(req.Port))
	log = withLazy(log, slog.String("request_id", req.ID), slog.String("op", string(req.Op)), slog.String("target", targetStr))
	start := time.Now()
	entry := audit.Entry{Time: start.UTC(), RequestID: req.ID, Op: string(req.Op), Target: targetStr}
	switch req.Op {
	case protocol.OpDial:
		return s.serveDial(ctx, st, req, entry, start, log)
	case protocol.OpCheck:
		s.serveCheck(ctx, st, req, log)
	default:
		res := protocol.Result{Reason: protocol.UnsupportedOp, Message: fmt.Sprintf("operation %q is not supported by this agent", req.Op)}
		s.refuse(st, res, entry, log)
	}
	return nil
}

// serveDial asks the gate, dials and answers; the splice it returns is the
// data phase, nil when there is none.
func (s *Server) serveDial(ctx context.Context, st *tunnel.Stream, req protocol.Request, entry audit.Entry, start time.Time, log *slog.Logger) func() {
	deadline := time.Now().Add(s.cfg.OpenTimeout)
	if d := req.Deadline(); !d.IsZero() && d.Before(deadline) {
		deadline = d
	}
	_ = st.SetDeadline(deadline)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	d := s.cfg.Gate.Decide(dctx, req.Host, req.Port)
	logWaived(d, log)
	target, res := d.Dial(dctx, s.cfg.Dial)
	cancel()
	entry.Rule = res.Rule
	if target == nil {
		s.refuse(st, res, entry, log)
		return nil
	}
	entry.Addr, entry.Decision = res.Addr, audit.Allowed
	if d.Result == policy.Report {
		entry.Decision, entry.Reason = audit.ReportAllowed, string(d.Reason)
	}
	if err := protocol.WriteFrame(st, protocol.FrameResult, res); err != nil {
		_ = target.Close()
		entry.Message = "relay stream closed before the result was sent: " + err.Error()
		s.audit(entry, start, log)
		return nil
	}
	_ = st.SetDeadline(time.Time{})
	return func() {
		defer st.Close()
		stats, err := s.splice(ctx, st, target, log)
		entry.BytesUp, entry.BytesDown = stats.AToB, stats.BToA
		if err != nil {
			entry.Message = err.Error()
		}
		s.audit(entry, start, log)
		if log.Enabled(ctx, slog.LevelDebug) { // its arguments cost allocations even unwritten
			log.Debug("stream done", "addr", res.Addr, "to_target", stats.AToB, "from_target", stats.BToA,
				"duration", time.Since(start), "err", err)
		}
	}
}

// splice carries bytes between the relay's stream and the target until
// both sides are done, counting them.
func (s *Server) splice(ctx context.Context, st *tunnel.Stream, target net.Conn, log *slog.Logger) (tunnel.SpliceStats, error) {
	// When the tunnel ends (closed, forced stop), a splice blocked on the
	// target must end too: closing the target unblocks it.
	stopClose := context.AfterFunc(ctx, func() { _ = target.Close() })
	defer stopClose()
	s.stats.active.Add(1)
	defer s.stats.active.Add(-1)
	stats, err := tunnel.Splice(st, target, tunnel.SpliceOptions{
		WriteTimeout: tunnel.SpliceWriteTimeout,
		IdleTimeout:  s.cfg.IdleTimeout,
	})
	if errors.Is(err, tunnel.ErrWriteTimeout) {
		// The tunnel itself no longer drains: end the whole session so
		// the slot reconnects, rather than leave readers hung on it.
		log.Warn("tunnel write timed out; closing the tunnel", "err", err)
		_ = st.Session().Close()
	}
	s.stats.bytesIn.Add(uint64(stats.AToB))
	s.stats.bytesOut.Add(uint64(stats.BToA))
	return stats, err
}

// logWaived warns of every refusal report mode let through: only
// ALLOWLIST_MISSING is ever waived.
func logWaived(d policy.Decision, log *slog.Logger) {
	for _, w := range d.Waived {
		log.Warn("report mode: would deny", "reason", w.Reason, "rule", w.Rule, "why", w.Why)
	}
}

// refuse answers a refused request, counts it and audits it.
func (s *Server) refuse(st *tunnel.Stream, res protocol.Result, entry audit.Entry, log *slog.Logger) {
	s.stats.countError(res.Reason)
	s.stats.noteRefusal(Refusal{Time: entry.Time, RequestID: entry.RequestID, Op: entry.Op, Target: entry.Target,
		Reason: res.Reason, Message: res.Message})
	log.Info("stream refused", "reason", res.Reason, "rule", res.Rule, "message", res.Message)
	_ = protocol.WriteFrame(st, protocol.FrameResult, res)
	entry.Decision, entry.Reason, entry.Message = audit.Denied, string(res.Reason), res.Message
	s.audit(entry, entry.Time, log)
}

// audit records a finished stream; a failing audit log is logged, never
// fatal to the stream.
func (s *Server) audit(e audit.Entry, start time.Time, log *slog.Logger) {
	if s.cfg.Audit == nil {
		return
	}
	e.DurationMS = time.Since(start).Milliseconds()
	if err := s.cfg.Audit.Write(e); err != nil {
		log.Error("audit log write", "err", err)
	}
}

// Stats are the counters of the streams served so far.
type Stats struct {
	// Active counts dialled streams splicing now.
	Active int
	// BytesIn went from the relay to targets, BytesOut from targets back.
	BytesIn, BytesOut uint64
}

// Stats returns the counters now.
func (s *Server) Stats() Stats {
	return Stats{
		Active:   int(s.stats.active.Load()),
		BytesIn:  s.stats.bytesIn.Load(),
		BytesOut: s.stats.bytesOut.Load(),
	}
}

// TakeErrors returns the refusals by reason since the last call, and
// starts counting afresh: Health reports each once.
func (s *Server) TakeErrors() map[protocol.Reason]int {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	out := s.stats.errors
	s.stats.errors = nil
	return out
}

type stats struct {
	active   atomic.Int64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64

	mu     sync.Mutex
	errors map[protocol.Reason]int // since the last Health
	// refusedTotal counts refusals since start; lastRefused keeps the
	// newest, oldest first.
	refusedTotal map[protocol.Reason]int
	lastRefused  []Refusal
}

func (s *stats) countError(r protocol.Reason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.errors == nil {
		s.errors = make(map[protocol.Reason]int)
	}
	s.errors[r]++
}
