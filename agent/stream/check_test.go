package stream

import (
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/agent/resolve/dnstest"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
)

// checkEnv is an agent with targets for every step of a check: an HTTP
// provider, a TLS provider with a self-signed certificate, a refused port,
// a port that accepts and never answers, and a DNS server.
type checkEnv struct {
	session *tunneltest.RelaySession
	dials   *testkit.DialLog
	dns     *dnstest.Server
	web     *httptest.Server // 127.0.0.1:P, plain HTTP
	tls     *httptest.Server // 127.0.0.1:T, self-signed for example.com and 127.0.0.1
	refused int              // 127.0.0.1:R, nothing listens
	hang    *testkit.Target  // 127.0.0.1:H, reads and never answers
	audit   string           // audit log path
}

// provider answers like a self-hosted service would, by path.
func provider(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("User-Agent") != checkUserAgent {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/auth":
		w.WriteHeader(http.StatusUnauthorized)
	case "/forbidden":
		w.WriteHeader(http.StatusForbidden)
	case "/limited":
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	case "/limited-date":
		w.Header().Set("Retry-After", time.Now().Add(90*time.Second).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusTooManyRequests)
	case "/moved":
		http.Redirect(w, r, "https://sso.corp.example/login", http.StatusFound)
	case "/broken":
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		_, _ = io.WriteString(w, strings.Repeat("a large page ", 10000))
	}
}

func quietServer(h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	return srv
}

// newCheckEnv starts the targets and an agent; extra is appended to its
// config (ca_file, mode).
func newCheckEnv(t *testing.T, extra func(env *checkEnv) string) *checkEnv {
	t.Helper()
	env := &checkEnv{dials: &testkit.DialLog{}, audit: filepath.Join(t.TempDir(), "audit.jsonl")}
	env.web = quietServer(provider)
	env.web.Start()
	t.Cleanup(env.web.Close)
	env.tls = quietServer(provider)
	env.tls.StartTLS()
	t.Cleanup(env.tls.Close)
	env.refused = testkit.RefusedPort(t)
	env.hang = testkit.NewTarget(t, "127.0.0.1:0", func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	env.dns = dnstest.New(t, dnstest.ByName(map[string]dnstest.Handler{
		"fail.test.": dnstest.Rcode(dns.RcodeServerFailure),
	}, dnstest.NewZone(t,
		"jira.test. 0 IN A 127.0.0.1",
		"example.com. 0 IN A 127.0.0.1",
		"denied.test. 0 IN A 10.99.0.1",
		"unlisted.example. 0 IN A 127.0.0.1",
		"wiki.test. 0 IN CNAME lb.test.",
		"lb.test. 0 IN CNAME jira.test.",
		"alias.test. 0 IN CNAME secret.test.",
		"secret.test. 0 IN A 127.0.0.1",
	).Reply))

	relay := testkit.NewRelay(t, time.Second)
	cfg := fmt.Sprintf(`relay_url: %s
tunnels: 1
audit_log: %s
allow:
  - ip: 127.0.0.1
    ports: [%d, %d, %d, %d]
  - host: "*.test"
    ports: [%[3]d, %[4]d, %[5]d]
  - host: example.com
    ports: [%[4]d]
deny:
  - cidr: 10.99.0.0/16
  - host: secret.test
`, relay.URL(), env.audit, port(t, env.web.URL), port(t, env.tls.URL), env.refused, env.hang.Port())
	if extra != nil {
		cfg += extra(env)
	}
	auditLog, err := audit.Open(env.audit, 0, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = auditLog.Close() }) // after the agent stopped
	serve(t, testServer{Config: testkit.ParseConfig(t, cfg), Dial: env.dials.Dial, Audit: auditLog,
		Resolver: testkit.NewResolver(t, env.dns.Addr(), -1)})
	env.session = relay.Session(t)
	return env
}

func port(t *testing.T, rawURL string) int {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	p, err := strconv.Atoi(u.Port())
	require.NoError(t, err)
	return p
}

// checkRequest is a check request the way the relay sends one.
func checkRequest(t *testing.T, baseURL string, within time.Duration) protocol.Request {
	t.Helper()
	u, err := url.Parse(baseURL)
	require.NoError(t, err)
	p := 443
	if u.Scheme == "http" {
		p = 80
	}
	if u.Port() != "" {
		p, err = strconv.Atoi(u.Port())
		require.NoError(t, err)
	}
	return protocol.Request{
		Op: protocol.OpCheck, ID: testkit.NextID("chk"),
		Host: u.Hostname(), Port: p, BaseURL: baseURL,
		DeadlineUnixMS: time.Now().Add(within).UnixMilli(),
	}
}

// check runs one check and returns its outcome; the result must be ok.
func (env *checkEnv) check(t *testing.T, baseURL string, within time.Duration) (protocol.Result, protocol.CheckResult) {
	t.Helper()
	res, st := env.session.Dial(t, checkRequest(t, baseURL, within))
	require.True(t, res.OK, "a check that ran answers ok whatever its verdict: %+v", res)
	require.NotNil(t, res.Check)
	rest, err := io.ReadAll(st)
	require.NoError(t, err)
	assert.Empty(t, rest, "a check has no data phase")
	return res, *res.Check
}

func stepNames(cr protocol.CheckResult) []string {
	out := make([]string, len(cr.Steps))
	for i, s := range cr.Steps {
		out[i] = s.Step
	}
	return out
}

func TestCheckVerdicts(t *testing.T) {
	env := newCheckEnv(t, nil)
	web, tlsPort := port(t, env.web.URL), port(t, env.tls.URL)
	at := func(host string, p int, path string) string {
		return "http://" + net.JoinHostPort(host, strconv.Itoa(p)) + path
	}
	all := []string{StepAllowlist, StepDNS, StepTCP, StepHTTP}
	literal := []string{StepAllowlist, StepTCP, StepHTTP}

	tests := map[string]struct {
		baseURL string
		within  time.Duration
		ready   bool
		reason  protocol.Reason
		retry   int
		steps   []string
		// details holds a substring each named step's detail must contain.
		details map[string]string
	}{
		"provider answers 200": {
			baseURL: at("jira.test", web, "/rest/api/2/serverInfo"), ready: true, steps: all,
			details: map[string]string{
				StepAllowlist: "allowed by allow host=*.test",
				StepDNS:       "127.0.0.1 (server " + env.dns.Addr() + ", NOERROR)",
				StepTCP:       "connected to 127.0.0.1:" + strconv.Itoa(web),
				StepHTTP:      "HTTP 200 OK",
			},
		},
		"provider answers 401": {
			baseURL: at("jira.test", web, "/auth"), ready: true, steps: all,
			details: map[string]string{StepHTTP: "HTTP 401 Unauthorized: reachable, authentication required"},
		},
		"provider answers 403": {
			baseURL: at("127.0.0.1", web, "/forbidden"), ready: true, steps: literal,
			details: map[string]string{StepHTTP: "HTTP 403 Forbidden: reachable, authentication required"},
		},
		"provider answers 429 with seconds": {
			baseURL: at("jira.test", web, "/limited"), reason: protocol.UpstreamRateLimited, retry: 30, steps: all,
			details: map[string]string{StepHTTP: "HTTP 429 Too Many Requests: rate limited, Retry-After 30 (30s)"},
		},
		"provider answers 429 with a date": {
			baseURL: at("jira.test", web, "/limited-date"), reason: protocol.UpstreamRateLimited, retry: 90, steps: all,
			details: map[string]string{StepHTTP: "HTTP 429 Too Many Requests: rate limited"},
		},
		"redirect is reported, not followed": {
			baseURL: at("jira.test", web, "/moved"), ready: true, steps: all,
			details: map[string]string{StepHTTP: "HTTP 302 Found: reachable, redirect not followed, Location: https://sso.corp.example/login"},
		},
		"server error is reachable": {
			baseURL: at("jira.test", web, "/broken"), ready: true, steps: all,
			details: map[string]string{StepHTTP: "HTTP 503 Service Unavailable"},
		},
		"self-signed certificate": {
			baseURL: "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)) + "/", reason: protocol.TLSFailed,
			steps:   []string{StepAllowlist, StepTCP, StepTLS},
			details: map[string]string{StepTLS: "no SNI (IP address), subject O=Acme Co, issuer O=Acme Co, not_after "},
		},
		"refused port": {
			baseURL: at("jira.test", env.refused, "/"), reason: protocol.ConnectRefused,
			steps:   []string{StepAllowlist, StepDNS, StepTCP},
			details: map[string]string{StepTCP: "dial 127.0.0.1:" + strconv.Itoa(env.refused)},
		},
		"accepted but never answers": {
			baseURL: at("127.0.0.1", env.hang.Port(), "/"), within: 400 * time.Millisecond,
			reason: protocol.ConnectTimeout, steps: literal,
			details: map[string]string{StepHTTP: "did not answer HTTP in time"},
		},
		"nxdomain": {
			baseURL: at("nope.test", web, "/"), reason: protocol.DNSNXDomain, steps: []string{StepAllowlist, StepDNS},
			details: map[string]string{StepDNS: "(server " + env.dns.Addr() + ", NXDOMAIN)"},
		},
		"servfail": {
			baseURL: at("fail.test", web, "/"), reason: protocol.DNSServFail, steps: []string{StepAllowlist, StepDNS},
			details: map[string]string{StepDNS: "SERVFAIL"},
		},
		"name resolves to a denied address": {
			baseURL: at("denied.test", web, "/"), reason: protocol.TargetBlocked, steps: []string{StepAllowlist, StepDNS},
			details: map[string]string{StepDNS: "answers: 10.99.0.1 [blocked]"},
		},
		"metadata address": {
			baseURL: "http://169.254.169.254/latest/meta-data/", reason: protocol.TargetBlocked, steps: []string{StepAllowlist},
		},
		"name reached through aliases": {
			baseURL: at("wiki.test", web, "/"), ready: true, steps: all,
			details: map[string]string{StepDNS: "NOERROR, via CNAME lb.test -> jira.test)"},
		},
		"alias of a denied name": {
			baseURL: at("alias.test", web, "/"), reason: protocol.TargetBlocked, steps: []string{StepAllowlist, StepDNS},
			details: map[string]string{StepDNS: "alias.test leads by CNAME to secret.test, which matches deny host=secret.test ports=* " +
				"(rule: deny host=secret.test ports=*); answers: 127.0.0.1"},
		},
		"not allowlisted": {
			baseURL: at("unlisted.example", web, "/"), reason: protocol.AllowlistMissing, steps: []string{StepAllowlist},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			within := tc.within
			if within == 0 {
				within = testkit.WaitTimeout
			}
			began := time.Now()
			res, cr := env.check(t, tc.baseURL, within)
			assert.Less(t, time.Since(began), within+time.Second, "the check keeps the request's deadline")
			assert.Equal(t, tc.ready, cr.Ready)
			assert.Equal(t, tc.reason, cr.Reason)
			assert.Equal(t, tc.reason.Info().ProviderErrorCode, cr.ProviderErrorCode)
			assert.Equal(t, tc.retry, cr.RetryAfterSeconds)
			assert.Equal(t, tc.retry, res.RetryAfterSeconds)
			assert.Equal(t, tc.steps, stepNames(cr))
			for i, s := range cr.Steps {
				last := i == len(cr.Steps)-1
				assert.Equal(t, !last || tc.ready, s.OK, "step %s", s.Step)
				if !s.OK {
					assert.Equal(t, tc.reason, s.Reason, "the failing step carries the verdict")
					assert.NotEmpty(t, s.Detail)
				} else {
					assert.Empty(t, s.Reason)
				}
				assert.GreaterOrEqual(t, s.MS, int64(0))
				if want, ok := tc.details[s.Step]; ok {
					assert.Contains(t, s.Detail, want, "step %s", s.Step)
				}
			}
		})
	}
}

func TestCheckNotAllowedTouchesNoNetwork(t *testing.T) {
	for name, mode := range map[string]string{"enforce": "", "report": "mode: report\n"} {
		t.Run(name, func(t *testing.T) {
			env := newCheckEnv(t, func(*checkEnv) string { return mode })
			_, cr := env.check(t, "https://unlisted.example:"+strconv.Itoa(port(t, env.web.URL))+"/", testkit.WaitTimeout)

			assert.False(t, cr.Ready, "a check shows what enforce mode would do")
			assert.Equal(t, protocol.AllowlistMissing, cr.Reason)
			assert.Equal(t, protocol.ProviderConnectivityBlocked, cr.ProviderErrorCode)
			require.Len(t, cr.Steps, 1)
			assert.Equal(t, StepAllowlist, cr.Steps[0].Step)
			if mode != "" {
				assert.Contains(t, cr.Steps[0].Detail, "report mode: streams to this target are let through")
			} else {
				assert.NotContains(t, cr.Steps[0].Detail, "report mode")
			}
			assert.Empty(t, env.dns.Queries().For("unlisted.example.", dns.TypeA), "no DNS question for a target the rules refuse")
			assert.Empty(t, env.dials.Addrs(), "no connection for a target the rules refuse")
			assert.Zero(t, env.hang.Accepted.Load())

			// The customer's audit log records the check and its verdict.
			var entries []audit.Entry
			require.Eventually(t, func() bool {
				entries = readAudit(t, env.audit)
				return len(entries) == 1
			}, testkit.WaitTimeout, 10*time.Millisecond)
			assert.Equal(t, "check", entries[0].Op)
			assert.Equal(t, audit.Denied, entries[0].Decision)
			assert.Equal(t, string(protocol.AllowlistMissing), entries[0].Reason)
			assert.Equal(t, "unlisted.example:"+strconv.Itoa(port(t, env.web.URL)), entries[0].Target)
		})
	}
}

func TestCheckTrustsCAFile(t *testing.T) {
	env := newCheckEnv(t, func(env *checkEnv) string {
		path := filepath.Join(t.TempDir(), "ca.pem")
		block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: env.tls.Certificate().Raw})
		require.NoError(t, os.WriteFile(path, block, 0o600))
		return "ca_file: " + path + "\n"
	})
	tlsPort := strconv.Itoa(port(t, env.tls.URL))
	tests := map[string]struct {
		baseURL string
		ready   bool
		steps   []string
		detail  string
	}{
		"by name, SNI matches the certificate": {
			baseURL: "https://example.com:" + tlsPort + "/auth", ready: true,
			steps:  []string{StepAllowlist, StepDNS, StepTCP, StepTLS, StepHTTP},
			detail: "SNI example.com, subject O=Acme Co",
		},
		"by address": {
			baseURL: "https://127.0.0.1:" + tlsPort + "/", ready: true,
			steps:  []string{StepAllowlist, StepTCP, StepTLS, StepHTTP},
			detail: ", verified",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, cr := env.check(t, tc.baseURL, testkit.WaitTimeout)
			assert.Equal(t, tc.ready, cr.Ready, "%+v", cr)
			assert.Empty(t, cr.Reason)
			assert.Equal(t, tc.steps, stepNames(cr))
			for _, s := range cr.Steps {
				if s.Step == StepTLS {
					assert.Contains(t, s.Detail, tc.detail)
					assert.Contains(t, s.Detail, "verified")
				}
			}
		})
	}

	// The name the certificate does not cover still fails verification.
	_, cr := env.check(t, "https://jira.test:"+tlsPort+"/", testkit.WaitTimeout)
	if assert.Equal(t, protocol.TLSFailed, cr.Reason) {
		assert.Contains(t, cr.Steps[len(cr.Steps)-1].Detail, "verify error: x509: certificate is valid for")
	}
}

func TestCheckSelfSignedNamesVerifyError(t *testing.T) {
	env := newCheckEnv(t, nil)
	_, cr := env.check(t, "https://example.com:"+strconv.Itoa(port(t, env.tls.URL))+"/", testkit.WaitTimeout)
	require.Equal(t, protocol.TLSFailed, cr.Reason)
	assert.Equal(t, protocol.ProviderBaseURLUnreachable, cr.ProviderErrorCode)
	last := cr.Steps[len(cr.Steps)-1]
	assert.Equal(t, StepTLS, last.Step)
	assert.Contains(t, last.Detail, "SNI example.com")
	assert.Contains(t, last.Detail, "verify error: x509: certificate signed by unknown authority")
}

func TestCheckRefusesBadBaseURL(t *testing.T) {
	env := newCheckEnv(t, nil)
	tests := map[string]protocol.Request{
		"ftp scheme":        {Op: protocol.OpCheck, ID: "b1", BaseURL: "ftp://jira.test/"},
		"no base_url":       {Op: protocol.OpCheck, ID: "b2", Host: "jira.test", Port: 443},
		"port out of range": {Op: protocol.OpCheck, ID: "b3", BaseURL: "https://jira.test:70000/"},
		"host mismatch":     {Op: protocol.OpCheck, ID: "b4", Host: "other.test", Port: 443, BaseURL: "https://jira.test/"},
		"port mismatch":     {Op: protocol.OpCheck, ID: "b5", Host: "jira.test", Port: 8443, BaseURL: "https://jira.test/"},
		"relative":          {Op: protocol.OpCheck, ID: "b6", BaseURL: "/rest/api"},
	}
	for name, req := range tests {
		t.Run(name, func(t *testing.T) {
			res, _ := env.session.Dial(t, req)
			assert.False(t, res.OK)
			assert.Equal(t, protocol.BadTarget, res.Reason)
			assert.Nil(t, res.Check)
			assert.Contains(t, res.Message, "bad base_url")
		})
	}
	assert.Empty(t, env.dials.Addrs())
}

func FuzzParseCheckTarget(f *testing.F) {
	for _, s := range []string{
		"https://jira.corp.example", "http://10.0.0.7:8080/rest?x=1#frag", "https://user:pw@[::1]:8443/",
		"HTTPS://Jira.Corp.Example.:443/", "ftp://x", "https://:443/", "http://host:0/", "https://host:+1/",
		"mailto:a@b", "//host/path", "https://xn--bcher-kva.example/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		tgt, err := parseCheckTarget(protocol.Request{Op: protocol.OpCheck, BaseURL: raw})
		if err != nil {
			require.ErrorIs(t, err, errBadBaseURL)
			return
		}
		require.NotEmpty(t, tgt.host)
		require.True(t, tgt.port >= 1 && tgt.port <= 65535)
		require.Nil(t, tgt.url.User, "credentials never reach the probe")
		require.Equal(t, tgt.https, tgt.url.Scheme == "https")
		// What the relay derives from the same URL is accepted as matching.
		again, err := parseCheckTarget(protocol.Request{Op: protocol.OpCheck, BaseURL: raw, Host: tgt.host, Port: tgt.port})
		require.NoError(t, err)
		require.Equal(t, tgt.port, again.port)
	})
}
