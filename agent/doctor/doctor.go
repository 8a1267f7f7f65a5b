package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/protocol"
)

// Defaults for the zero values of Options.
const (
	DefaultStepTimeout = 5 * time.Second
	DefaultTimeout     = 60 * time.Second
)

// Layers, in the order Run checks them. Each Check names one.
const (
	LayerConfig       = "config"
	LayerToken        = "token"
	LayerRelayDNS     = "relay dns"
	LayerEgressProxy  = "egress proxy"
	LayerRelayTCP     = "relay tcp"
	LayerRelayTLS     = "relay tls"
	LayerWebSocket    = "relay websocket"
	LayerRelayAuth    = "relay auth"
	LayerRelaySession = "relay session"
	LayerTargetDNS    = "target dns"
	LayerTargetTCP    = "target tcp"
	LayerTargetTLS    = "target tls"
)

// Status is the outcome of one check. The zero value is StatusUnknown and
// never means passed.
type Status int

// Statuses.
const (
	StatusUnknown Status = iota
	// Pass: the layer works.
	Pass
	// Warn: the layer works, but something deserves a look.
	Warn
	// Fail: the layer is broken; Remediation says what to do.
	Fail
	// Skip: the layer was not checked, because it does not apply or
	// because a layer it depends on failed; Detail says which.
	Skip
)

func (s Status) String() string {
	switch s {
	case Pass:
		return "PASS"
	case Warn:
		return "WARN"
	case Fail:
		return "FAIL"
	case Skip:
		return "SKIP"
	default:
		return "UNKNOWN"
	}
}

// MarshalText writes the status as printed: PASS, WARN, FAIL or SKIP.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads PASS, WARN, FAIL or SKIP; anything else is
// StatusUnknown, so a newer doctor's status does not break a reader.
func (s *Status) UnmarshalText(b []byte) error {
	*s = StatusUnknown
	for _, st := range []Status{Pass, Warn, Fail, Skip} {
		if st.String() == string(b) {
			*s = st
		}
	}
	return nil
}

// Check is the result of one layer for one target.
type Check struct {
	// Layer is one of the Layer constants.
	Layer string
	// Target is what was checked: the config file, the token's source, a
	// relay's host:port or an allowed target's host:port.
	Target string
	Status Status
	// Duration is the time the check took; zero for checks that did not run.
	Duration time.Duration
	// Detail says what was found. It may span lines (config problems); it
	// never holds the agent token.
	Detail string
	// Reason is the reason code of a failure, where the contract has one.
	Reason protocol.Reason
	// Remediation is one line saying what to do; set on FAIL and WARN.
	Remediation string

	// timed says whether Duration is worth printing (network steps).
	timed bool
}

// checkJSON is the wire shape of a Check in `doctor --json`.
type checkJSON struct {
	Layer       string          `json:"layer"`
	Target      string          `json:"target"`
	Status      Status          `json:"status"`
	MS          int64           `json:"ms"`
	Detail      string          `json:"detail"`
	Reason      protocol.Reason `json:"reason"`
	Remediation string          `json:"remediation"`
}

// MarshalJSON writes the check with its duration in whole milliseconds.
func (c Check) MarshalJSON() ([]byte, error) {
	return json.Marshal(checkJSON{
		Layer: c.Layer, Target: c.Target, Status: c.Status, MS: c.Duration.Milliseconds(),
		Detail: c.Detail, Reason: c.Reason, Remediation: c.Remediation,
	})
}

// UnmarshalJSON reads what MarshalJSON wrote, for tools and tests that
// consume `doctor --json`.
func (c *Check) UnmarshalJSON(data []byte) error {
	var j checkJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*c = Check{
		Layer: j.Layer, Target: j.Target, Status: j.Status,
		Duration: time.Duration(j.MS) * time.Millisecond, Detail: j.Detail,
		Reason: j.Reason, Remediation: j.Remediation,
	}
	return nil
}

// Report is the outcome of a Run: every check in the order it ran.
type Report struct {
	// OK is true when no check failed.
	OK     bool    `json:"ok"`
	Checks []Check `json:"checks"`
}

// Failed returns the checks that failed.
func (r Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status == Fail {
			out = append(out, c)
		}
	}
	return out
}

// Options configure Run.
type Options struct {
	// ConfigPath is the agent's config file.
	ConfigPath string
	// Getenv reads the environment: POSTERN_* overrides, the agent token
	// and HTTPS_PROXY / NO_PROXY. os.LookupEnv fits; nil means an empty
	// environment.
	Getenv config.Getenv
	// Version is sent as the agent version in User-Agent and Hello.
	Version string
	// StepTimeout bounds each network step; default 5s.
	StepTimeout time.Duration
	// Timeout bounds the whole run; default 60s. Steps that would start
	// after it are skipped.
	Timeout time.Duration
	// Hostname names this machine in Hello; default os.Hostname.
	Hostname func() (string, error)
	// Logger receives debug lines; default discards.
	Logger *slog.Logger

	// tlsPorts are the target ports probed with TLS; default 443 and
	// 8443. Tests use a port they can bind.
	tlsPorts []int
}

func (o Options) withDefaults() Options {
	if o.Getenv == nil {
		o.Getenv = func(string) (string, bool) { return "", false }
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.StepTimeout <= 0 {
		o.StepTimeout = DefaultStepTimeout
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Hostname == nil {
		o.Hostname = os.Hostname
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.tlsPorts == nil {
		o.tlsPorts = []int{443, 8443}
	}
	return o
}

// runner collects the checks of one Run.
type runner struct {
	opts   Options
	ctx    context.Context
	log    *slog.Logger
	checks []Check
}

// Run checks the installation described by opts layer by layer and returns
// every check. It returns when all checks are done or opts.Timeout (or ctx)
// ran out; it leaves no goroutine or connection behind.
func Run(ctx context.Context, opts Options) Report {
	opts = opts.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	r := &runner{opts: opts, ctx: ctx, log: opts.Logger}

	cfg, trust, ok := r.checkConfig()
	if !ok {
		for _, l := range []string{LayerToken, LayerRelayDNS, LayerTargetDNS} {
			r.add(skipped(l, "", LayerConfig))
		}
		return r.report()
	}
	token, tokenOK := r.checkToken(cfg)
	for _, u := range cfg.RelayURLs {
		r.checkRelay(cfg, trust, u, token, tokenOK)
	}
	r.checkTargets(cfg, trust)
	return r.report()
}

func (r *runner) report() Report {
	rep := Report{OK: true, Checks: r.checks}
	if rep.Checks == nil {
		rep.Checks = []Check{}
	}
	for _, c := range rep.Checks {
		if c.Status == Fail {
			rep.OK = false
		}
	}
	return rep
}

func (r *runner) add(c Check) { r.checks = append(r.checks, c) }

// step runs one network check under its own timeout and times it. When the
// run's budget is already spent, the check is skipped instead.
func (r *runner) step(layer, target string, fn func(ctx context.Context) Check) Check {
	if err := r.ctx.Err(); err != nil {
		c := Check{Layer: layer, Target: target, Status: Skip,
			Detail: fmt.Sprintf("skipped: the doctor's time budget (%s) ran out", r.opts.Timeout)}
		r.add(c)
		return c
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.StepTimeout)
	defer cancel()
	start := time.Now()
	c := fn(ctx)
	c.Layer, c.Target, c.timed = layer, target, true
	c.Duration = time.Since(start)
	r.log.Debug("doctor check", "layer", layer, "target", target, "status", c.Status.String(), "detail", c.Detail)
	r.add(c)
	return c
}

// skipped is a check not run because the layer named by cause failed.
func skipped(layer, target, cause string) Check {
	return Check{Layer: layer, Target: target, Status: Skip, Detail: "skipped: " + cause + " failed"}
}

func pass(detail string) Check { return Check{Status: Pass, Detail: detail} }

func fail(reason protocol.Reason, detail, remediation string) Check {
	return Check{Status: Fail, Reason: reason, Detail: detail, Remediation: remediation}
}
