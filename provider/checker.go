package provider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/postern/postern/allowlist"
	"github.com/postern/postern/relay/client"
)

// Default bounds of a check.
const (
	// DefaultStepTimeout bounds each network step: one resolution, one
	// CONNECT and handshake, one provider call.
	DefaultStepTimeout = 15 * time.Second
	// MaxAnswerBody bounds what is read of a provider's answer.
	MaxAnswerBody = 256 << 10
)

// Config is how a Checker reaches providers. The zero value checks cloud
// providers over the system resolver and the system roots, and refuses
// self-hosted checks.
type Config struct {
	// Relay is the relay's CONNECT proxy and API key, for self-hosted
	// providers; ConnectionID is set per request. Nil refuses self-hosted
	// checks with PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED.
	Relay *client.DialerConfig
	// API reads the Postern connection's status for the connectivity
	// summary; optional.
	API *client.Client
	// RootCAs verifies providers' certificates; nil means the system
	// roots.
	RootCAs *x509.CertPool
	// Resolve looks a cloud provider's host up; nil uses the system
	// resolver. Every address is checked before it is dialed.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// DialAddr dials one checked address of a cloud provider; nil uses a
	// net.Dialer. A seam for tests: the check of the address has happened
	// when it is called.
	DialAddr func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	// StepTimeout bounds each network step; zero means
	// DefaultStepTimeout.
	StepTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Checker runs provider checks. It is safe for concurrent use.
type Checker struct {
	cfg    Config
	public *allowlist.List
}

// New returns a Checker for cfg.
func New(cfg Config) (*Checker, error) {
	if cfg.StepTimeout < 0 {
		return nil, errors.New("provider checker: step timeout must not be negative")
	}
	if cfg.StepTimeout == 0 {
		cfg.StepTimeout = DefaultStepTimeout
	}
	if cfg.Relay != nil {
		probe := *cfg.Relay
		probe.ConnectionID = "probe"
		if err := probe.Validate(); err != nil {
			return nil, fmt.Errorf("provider checker: relay: %w", err)
		}
	}
	if cfg.Resolve == nil {
		cfg.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if cfg.DialAddr == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		cfg.DialAddr = func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr.String())
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	public, err := publicAddresses()
	if err != nil {
		return nil, fmt.Errorf("provider checker: %w", err)
	}
	return &Checker{cfg: cfg, public: public}, nil
}

// Check runs the checks for req in the page's order and returns the State;
// the error is only for a malformed request. The State never carries the
// credential.
func (c *Checker) Check(ctx context.Context, req Request) (State, error) {
	if err := req.Validate(); err != nil {
		return State{}, err
	}
	sp, _ := lookup(req.Provider)
	r := &run{c: c, spec: sp, req: req, red: newRedactor(req.Credential.secret), st: newState(req)}
	defer r.close()
	steps := []func(context.Context) bool{r.checkBaseURL}
	if req.Mode == ModeSelfHosted {
		steps = append(steps, r.checkConnectivity)
	}
	steps = append(steps, sp.steps(r)...)
	for _, step := range steps {
		if !step(ctx) {
			break
		}
	}
	r.finish()
	return r.st, nil
}

func newState(req Request) State {
	scopes := slices.Clone(req.RequiredScopes)
	if scopes == nil {
		scopes = []string{}
	}
	st := State{
		ProviderKey: req.Provider, DeploymentMode: req.Mode, BaseURL: req.BaseURL,
		RequiredScopes: scopes, MissingScopes: []string{}, Steps: []Step{},
	}
	if req.Mode == ModeSelfHosted {
		st.Connectivity = &Connectivity{TunnelStatus: "unknown", AllowlistStatus: "unknown"}
	}
	return st
}

// run is one check in progress.
type run struct {
	c    *Checker
	spec *spec
	req  Request
	red  redactor
	st   State

	base    *url.URL // the base URL as checked
	host    string   // normalized host
	port    int
	api     *url.URL // the provider's API root, from base
	hc      *http.Client
	closers []func()
	failed  bool
	// granted is nil until the provider lists the credential's scopes.
	granted []string
}

// pass records a step that worked.
func (r *run) pass(name, detail string) bool {
	r.st.Steps = append(r.st.Steps, Step{Name: name, OK: true, Detail: r.red.scrub(detail)})
	return true
}

// fail records the failing step and the State's code; it returns false so
// callers can `return r.fail(...)`.
func (r *run) fail(name, code, detail string) bool {
	detail = r.red.scrub(detail)
	r.st.Steps = append(r.st.Steps, Step{Name: name, Detail: detail})
	r.st.ProviderErrorCode = code
	r.st.Message = detail + ": " + advice[code]
	r.failed = true
	return false
}

// failWith records a verdict of a provider answer.
func (r *run) failWith(name string, v verdict) bool {
	if v.auth != AuthUnknown {
		r.st.AuthStatus = v.auth
	}
	switch {
	case len(v.missing) > 0:
		r.st.MissingScopes = v.missing
	case v.code == CodeScopeMissing && len(r.req.RequiredScopes) > 0:
		// The provider did not say which scope: every required one is in
		// doubt.
		r.st.MissingScopes = slices.Clone(r.req.RequiredScopes)
		v.detail += " (the provider does not say which scope; all required scopes are listed)"
	}
	if v.code == CodeRateLimited {
		r.st.RetryAfter = max(1, int((v.retry+time.Second-1)/time.Second))
	}
	return r.fail(name, v.code, v.detail)
}

func (r *run) close() {
	for _, f := range r.closers {
		f()
	}
}

// finish sets Ready and the message of a State that passed every step.
func (r *run) finish() {
	if r.failed {
		return
	}
	r.st.Ready = true
	r.st.Message = r.red.scrub("ready: " + r.st.Steps[len(r.st.Steps)-1].Detail)
}

// stepContext bounds one network step.
func (r *run) stepContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.c.cfg.StepTimeout)
}

func (r *run) now() time.Time { return r.c.cfg.Now() }

// tlsConfig verifies the provider with the configured roots; the server
// name is each request's host.
func (r *run) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: r.c.cfg.RootCAs, MinVersion: tls.VersionTLS12}
}

// useTransport makes tr the run's HTTP client: no redirects followed (a
// redirect would carry the credential elsewhere), each call bounded.
func (r *run) useTransport(tr *http.Transport) {
	r.closers = append(r.closers, tr.CloseIdleConnections)
	r.hc = &http.Client{
		Transport: tr,
		Timeout:   r.c.cfg.StepTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// scopes step: compare the granted scopes with the required ones.
func (r *run) checkScopes(context.Context) bool {
	if r.granted == nil {
		if len(r.req.RequiredScopes) == 0 {
			return r.pass(StepScopes, "no scopes required")
		}
		return r.pass(StepScopes, r.spec.name+" does not list a credential's scopes; the permission probe stands in")
	}
	r.st.GrantedScopes = r.granted
	have := r.spec.expand(r.granted)
	for _, s := range r.req.RequiredScopes {
		if !have[s] {
			r.st.MissingScopes = append(r.st.MissingScopes, s)
		}
	}
	if len(r.st.MissingScopes) > 0 {
		return r.fail(StepScopes, CodeScopeMissing, "the credential lacks scope(s) "+strings.Join(r.st.MissingScopes, ", ")+
			" (granted: "+strings.Join(r.granted, ", ")+")")
	}
	return r.pass(StepScopes, "granted: "+strings.Join(r.granted, ", "))
}

// active records an accepted credential, unless its expiry passed.
func (r *run) active(who string) bool {
	if exp := r.st.TokenExpiresAt; exp != nil && !exp.After(r.now()) {
		r.st.AuthStatus = AuthExpired
		return r.fail(StepIdentity, CodeTokenRevoked, "the credential expired at "+exp.UTC().Format(time.RFC3339))
	}
	r.st.AuthStatus = AuthActive
	detail := "authenticated"
	if who != "" {
		detail += " as " + clip(who, 100)
	}
	if exp := r.st.TokenExpiresAt; exp != nil {
		detail += ", credential expires " + exp.UTC().Format(time.RFC3339)
	}
	return r.pass(StepIdentity, detail)
}
