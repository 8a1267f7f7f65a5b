package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// A live check (spec section 7.5) tests the path to a base URL from inside
// the customer network, layer by layer, and stops at the first layer that
// fails: allowlist -> dns -> tcp -> tls (https only) -> http. It follows the
// dial path exactly (the gate, then Decision.Dial): decide, resolve once, check every
// address, connect only to a checked address, never through the egress
// proxy. The choices where the contract is silent:
//
//   - Report mode: a check shows what enforce mode would do. A target no
//     allow rule covers fails the allowlist step (ready: false with
//     ALLOWLIST_MISSING), because the customer is rolling those rules out and
//     must see what they will do; the detail says streams are let through now.
//     Every other refusal is the same in both modes.
//     Like in enforce mode, such a target is not resolved or dialled.
//   - The probe is one GET (HEAD is unreliable on some providers) with a
//     small body read, no redirect followed: any 3xx is reachable and its
//     Location is reported.
//   - 401 and 403 are reachable: the path works, credentials are the cloud
//     product's business. 429 is UPSTREAM_RATE_LIMITED with retry_after from
//     Retry-After (seconds or an HTTP date); without a usable Retry-After the
//     field is left out rather than invented.
//   - 5xx and every other status are reachable too: the network path works
//     and the status in the detail tells the product what the provider said.
//   - A target that accepts the connection but does not answer HTTP in time
//     is CONNECT_TIMEOUT; one that answers something other than HTTP, or
//     hangs up, is CONNECT_REFUSED. The reason table has no HTTP-level code.
const (
	// checkTimeout bounds a whole check; the relay waits a little longer.
	checkTimeout = 10 * time.Second
	// checkHTTPTimeout bounds the HTTP probe within the check.
	checkHTTPTimeout = 5 * time.Second
	// checkBodyCap is how much of the probe's answer body is read.
	checkBodyCap = 4 << 10
	// checkWriteTimeout bounds writing the result once the check is done.
	checkWriteTimeout = 5 * time.Second
	// checkUserAgent names the probe in the provider's access log.
	checkUserAgent = "postern-agent-check"
	// maxDetail caps one step's detail.
	maxDetail = 512
)

// Step names of a check, in the order they run.
const (
	StepAllowlist = "allowlist"
	StepDNS       = "dns"
	StepTCP       = "tcp"
	StepTLS       = "tls"
	StepHTTP      = "http"
)

// errBadBaseURL marks a check request whose base_url cannot be probed.
var errBadBaseURL = errors.New("bad base_url")

// checkTarget is a parsed base URL.
type checkTarget struct {
	url   *url.URL // without user info or fragment
	host  string   // the URL's host, without brackets
	port  int
	https bool
}

// parseCheckTarget reads the request's base_url. Host and port, when the
// relay set them, must name the same target, so the audit log's target is
// the one probed.
func parseCheckTarget(req protocol.Request) (checkTarget, error) {
	u, err := url.Parse(req.BaseURL)
	if err != nil {
		return checkTarget{}, fmt.Errorf("%w: %v", errBadBaseURL, err)
	}
	t := checkTarget{url: u, host: u.Hostname()}
	switch strings.ToLower(u.Scheme) {
	case "https":
		t.https, t.port = true, 443
	case "http":
		t.port = 80
	default:
		return checkTarget{}, fmt.Errorf("%w: scheme must be http or https", errBadBaseURL)
	}
	if t.host == "" || u.Opaque != "" {
		return checkTarget{}, fmt.Errorf("%w: an absolute URL with a host is required", errBadBaseURL)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return checkTarget{}, fmt.Errorf("%w: port %q is not 1-65535", errBadBaseURL, p)
		}
		t.port = n
	}
	reqHost := req.Host
	if len(reqHost) > 1 && reqHost[0] == '[' && reqHost[len(reqHost)-1] == ']' {
		reqHost = reqHost[1 : len(reqHost)-1]
	}
	if req.Host != "" && !strings.EqualFold(reqHost, t.host) {
		return checkTarget{}, fmt.Errorf("%w: host %q does not match the base_url's %q", errBadBaseURL, req.Host, t.host)
	}
	if req.Port != 0 && req.Port != t.port {
		return checkTarget{}, fmt.Errorf("%w: port %d does not match the base_url's %d", errBadBaseURL, req.Port, t.port)
	}
	// Credentials never travel with a probe; the fragment is the client's.
	u.User, u.Fragment, u.RawFragment = nil, "", ""
	u.Scheme = strings.ToLower(u.Scheme)
	return t, nil
}

// serveCheck answers a check request: ok with the check's outcome whatever
// the verdict, or BAD_TARGET when the base_url cannot be probed.
func (s *Server) serveCheck(ctx context.Context, st *tunnel.Stream, req protocol.Request, log *slog.Logger) {
	start := time.Now()
	entry := audit.Entry{Time: start.UTC(), RequestID: req.ID, Op: string(req.Op),
		Target: net.JoinHostPort(req.Host, strconv.Itoa(req.Port))}
	t, err := parseCheckTarget(req)
	if err != nil {
		s.refuse(st, protocol.Result{Reason: protocol.BadTarget, Message: err.Error()}, entry, log)
		return
	}
	entry.Target = net.JoinHostPort(t.host, strconv.Itoa(t.port))

	deadline := start.Add(checkTimeout)
	if d := req.Deadline(); !d.IsZero() && d.Before(deadline) {
		deadline = d
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	out := s.runCheck(cctx, t)
	cancel()

	res := protocol.Result{OK: true, Addr: out.addr, Rule: out.rule, RetryAfterSeconds: out.cr.RetryAfterSeconds, Check: &out.cr}
	_ = st.SetDeadline(time.Now().Add(checkWriteTimeout))
	if err := protocol.WriteFrame(st, protocol.FrameResult, res); err != nil {
		entry.Message = "relay stream closed before the check result was sent: " + err.Error()
	}
	entry.Addr, entry.Rule, entry.Reason = out.addr, out.rule, string(out.cr.Reason)
	entry.Decision = audit.Allowed
	if out.denied {
		entry.Decision = audit.Denied
	}
	if entry.Message == "" {
		entry.Message = checkSummary(out.cr)
	}
	s.audit(entry, start, log)
	log.Info("check done", "ready", out.cr.Ready, "reason", out.cr.Reason, "addr", out.addr,
		"duration", time.Since(start))
}

// checkSummary is one line for the audit log.
func checkSummary(cr protocol.CheckResult) string {
	if cr.Ready {
		return "check: ready"
	}
	for _, s := range cr.Steps {
		if !s.OK {
			return "check: " + s.Step + " failed: " + s.Detail
		}
	}
	return "check: not ready"
}

// checkOutcome is a finished check with what the audit log records.
type checkOutcome struct {
	cr     protocol.CheckResult
	addr   string // the address connected to, if any
	rule   string // the allow rule that decided
	denied bool   // the allowlist (or an address check) refused the target
}

// step records one step; it reports whether the check goes on.
func (o *checkOutcome) step(name string, began time.Time, reason protocol.Reason, detail string) bool {
	return o.stepMS(name, time.Since(began).Milliseconds(), reason, detail)
}

func (o *checkOutcome) stepMS(name string, ms int64, reason protocol.Reason, detail string) bool {
	s := protocol.CheckStep{Step: name, OK: reason == protocol.ReasonUnknown, MS: max(ms, 0), Reason: reason, Detail: cleanDetail(detail)}
	o.cr.Steps = append(o.cr.Steps, s)
	if !s.OK {
		o.cr.Reason = reason
		o.cr.ProviderErrorCode = reason.Info().ProviderErrorCode
	}
	return s.OK
}

// runCheck runs the steps under ctx, which carries the check's deadline.
func (s *Server) runCheck(ctx context.Context, t checkTarget) checkOutcome {
	var o checkOutcome
	if !s.checkPath(ctx, t, &o) {
		return o
	}
	o.cr.Ready = true
	return o
}

// checkConnectTimeout bounds the tcp step of a check.
const checkConnectTimeout = 4 * time.Second

// checkPath runs the allowlist, dns and tcp steps and, when they pass, the
// tls and http steps over the connection; it reports whether all passed.
func (s *Server) checkPath(ctx context.Context, t checkTarget, o *checkOutcome) bool {
	began := time.Now()
	d := s.cfg.Gate.DecideEnforce(ctx, t.host, t.port)
	planMS := time.Since(began).Milliseconds()
	o.rule = d.Rule

	dnsMS := d.Answer.Duration.Milliseconds()
	if !d.Resolved {
		// Refused by the rules (or an IP literal): nothing was resolved.
		if d.Result == policy.Deny {
			o.denied = d.Reason != protocol.BadTarget
			return o.stepMS(StepAllowlist, planMS, d.Reason, refusalDetail(d))
		}
		o.stepMS(StepAllowlist, planMS, "", allowedDetail(d.Rule))
	} else {
		o.stepMS(StepAllowlist, planMS-dnsMS, "", allowedDetail(d.Rule))
		if d.Result == policy.Deny {
			o.denied = d.Reason == protocol.TargetBlocked
			detail := d.Message + " " + dnsSource(d.Answer, t.host)
			if d.Reason == protocol.TargetBlocked {
				detail = refusalDetail(d) + "; answers: " + dnsAnswers(d) + " " + dnsSource(d.Answer, t.host)
			}
			return o.stepMS(StepDNS, dnsMS, d.Reason, detail)
		}
		o.stepMS(StepDNS, dnsMS, "", dnsAnswers(d)+" "+dnsSource(d.Answer, t.host))
	}

	// The connect step gets its own bound, so a black-holed target shows as
	// CONNECT_TIMEOUT well inside the check's 10 s.
	began = time.Now()
	dctx, cancel := context.WithTimeout(ctx, checkConnectTimeout)
	conn, res := d.Dial(dctx, s.cfg.Dial)
	cancel()
	if conn == nil {
		return o.step(StepTCP, began, res.Reason, res.Message)
	}
	defer conn.Close()
	o.addr = res.Addr
	o.step(StepTCP, began, "", "connected to "+res.Addr)
	// A cancelled check (the tunnel went away) ends any read at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}

	if t.https {
		began = time.Now()
		tc, detail, err := s.checkTLS(ctx, conn, t.host)
		if err != nil {
			return o.step(StepTLS, began, protocol.TLSFailed, detail)
		}
		defer tc.Close()
		conn = tc
		o.step(StepTLS, began, "", detail)
	}

	began = time.Now()
	reason, retryAfter, detail := checkHTTP(ctx, conn, t)
	o.cr.RetryAfterSeconds = retryAfter
	return o.step(StepHTTP, began, reason, detail)
}

func allowedDetail(rule string) string {
	if rule == "" {
		return "allowed"
	}
	return "allowed by " + rule
}

// refusalDetail explains a refusal by the rules, and in report mode, for
// ALLOWLIST_MISSING, that streams are let through now.
func refusalDetail(d policy.Decision) string {
	detail := d.Message
	if d.Rule != "" {
		detail += " (rule: " + d.Rule + ")"
	}
	if d.Mode == config.ModeReport && d.Reason == protocol.AllowlistMissing {
		detail += "; report mode: streams to this target are let through and audited now, enforce mode would refuse them"
	}
	return detail
}

// dnsAnswers lists every resolved address, marking those the address
// checks refused.
func dnsAnswers(d policy.Decision) string {
	if len(d.Found) == 0 {
		return "no address"
	}
	parts := make([]string, len(d.Found))
	for i, addr := range d.Found {
		parts[i] = addr.String()
		if slices.ContainsFunc(d.Blocked, func(b policy.Refusal) bool { return b.Addr == addr }) {
			parts[i] += " [blocked]"
		}
	}
	return strings.Join(parts, ", ")
}

// dnsSource says who answered: "(server 10.0.0.2:53, NOERROR)".
func dnsSource(a resolve.Answer, host string) string {
	var parts []string
	switch a.Source {
	case resolve.SourceHosts:
		parts = append(parts, "hosts file")
	case resolve.SourceCache:
		parts = append(parts, "cached")
	}
	if a.Server != "" {
		parts = append(parts, "server "+a.Server)
	}
	if a.Rcode != "" {
		parts = append(parts, a.Rcode)
	}
	if name := strings.TrimSuffix(a.Name, "."); name != "" && !strings.EqualFold(name, strings.TrimSuffix(host, ".")) {
		parts = append(parts, "as "+name)
	}
	if len(a.CNAMEs) > 0 {
		aliases := make([]string, len(a.CNAMEs))
		for i, n := range a.CNAMEs {
			aliases[i] = strings.TrimSuffix(n, ".")
		}
		parts = append(parts, "via CNAME "+strings.Join(aliases, " -> "))
	}
	if len(parts) == 0 {
		return ""
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
