package provider_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/provider"
	pt "github.com/postern/postern/provider/providertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the clock of checker and fakes alike, so reset times are exact.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func clock() time.Time { return t0 }

// cloudChecker checks against the cloud fakes through the injected
// resolver and dialer: the safe path runs, its dial lands on loopback.
func cloudChecker(t *testing.T, cloud *pt.Cloud) *provider.Checker {
	t.Helper()
	c, err := provider.New(provider.Config{
		RootCAs: cloud.CA.Pool, Resolve: cloud.Resolve, DialAddr: cloud.DialAddr,
		Now: clock, StepTimeout: 5 * time.Second,
	})
	require.NoError(t, err)
	return c
}

// requiredScopes is what the workflow asks of each provider in the tests.
var requiredScopes = map[string][]string{
	"github": {"repo"}, "gitlab": {"read_api"}, "jira": {"read:jira-work"}, "bitbucket": {"repository"},
	"trello": {"write"}, "azure-devops": {"vso.work"},
}

type want struct {
	code    string
	auth    provider.AuthStatus
	retry   int
	missing []string
}

// expectations: what each provider's documented answers must become.
// Providers that do not say "revoked" or "expired" give AUTH_FAILED there.
func expectations() map[string]map[string]want {
	failed := want{code: provider.CodeAuthFailed, auth: provider.AuthFailed}
	revoked := want{code: provider.CodeTokenRevoked, auth: provider.AuthRevoked}
	expired := want{code: provider.CodeTokenRevoked, auth: provider.AuthExpired}
	perm := want{code: provider.CodePermissionMissing, auth: provider.AuthActive}
	limited := want{code: provider.CodeRateLimited, retry: 30}
	down := want{code: provider.CodeBaseURLUnreachable}
	scope := func(s ...string) want {
		return want{code: provider.CodeScopeMissing, auth: provider.AuthActive, missing: s}
	}
	base := func(over map[string]want) map[string]want {
		m := map[string]want{pt.OK: {auth: provider.AuthActive}, pt.Bad: failed, pt.Revoked: failed, pt.Expired: failed,
			pt.NoScope: perm, pt.Forbidden: perm, pt.Limited: limited, pt.Down: down}
		for k, v := range over {
			m[k] = v
		}
		return m
	}
	return map[string]map[string]want{
		"github":       base(map[string]want{pt.NoScope: scope("repo")}),
		"gitlab":       base(map[string]want{pt.Revoked: revoked, pt.Expired: expired, pt.NoScope: scope("read_api")}),
		"jira":         base(map[string]want{pt.NoScope: scope("read:jira-work")}),
		"bitbucket":    base(map[string]want{pt.NoScope: scope("repository")}),
		"trello":       base(map[string]want{pt.Revoked: expired, pt.Expired: expired, pt.NoScope: scope("write"), pt.Limited: {code: provider.CodeRateLimited, retry: 10}}),
		"linear":       base(map[string]want{pt.Expired: expired}),
		"azure-devops": base(nil),
		"youtrack":     base(nil),
		"asana":        base(map[string]want{pt.Expired: expired}),
		"clickup":      base(map[string]want{pt.Revoked: revoked, pt.Expired: revoked}),
		"webhook":      {pt.OK: {auth: provider.AuthActive}, pt.Bad: failed, pt.Limited: limited, pt.Down: down},
	}
}

func TestCloudProviders(t *testing.T) {
	cloud := pt.StartCloud(t, clock)
	c := cloudChecker(t, cloud)
	for key, scenarios := range expectations() {
		for scen, w := range scenarios {
			t.Run(key+"/"+scen, func(t *testing.T) {
				st, err := c.Check(t.Context(), provider.Request{
					Provider: key, Mode: provider.ModeCloud, BaseURL: pt.CloudBaseURL(key),
					Credential: provider.NewCredential(pt.Credential(key, scen)), RequiredScopes: requiredScopes[key],
				})
				require.NoError(t, err)
				assertState(t, st, w)
			})
		}
	}
}

// assertState checks st against w, and that the credential is nowhere.
func assertState(t *testing.T, st provider.State, w want) {
	t.Helper()
	out, err := json.Marshal(st)
	require.NoError(t, err)
	assert.NotContains(t, string(out), pt.Canary, "the credential leaked into the state")
	assert.Equal(t, w.code, st.ProviderErrorCode, "%s", out)
	assert.Equal(t, w.code == "", st.Ready, "%s", out)
	assert.Equal(t, w.auth, st.AuthStatus, "%s", out)
	assert.Equal(t, w.retry, st.RetryAfter, "%s", out)
	if w.missing != nil {
		assert.Equal(t, w.missing, st.MissingScopes)
	}
	require.NotEmpty(t, st.Steps)
	last := st.Steps[len(st.Steps)-1]
	assert.Equal(t, w.code == "", last.OK, "the last step is the failing one: %s", out)
	assert.NotEmpty(t, st.Message)
}

func TestReadyStateCarriesScopesAndExpiry(t *testing.T) {
	c := cloudChecker(t, pt.StartCloud(t, clock))
	st, err := c.Check(t.Context(), provider.Request{Provider: "gitlab", Mode: provider.ModeCloud, BaseURL: "https://gitlab.com/",
		Credential: provider.NewCredential(pt.Credential("gitlab", pt.OK)), RequiredScopes: []string{"read_api", "read_user"}})
	require.NoError(t, err)
	assert.True(t, st.Ready, st.Message)
	assert.Equal(t, []string{"api", "read_user"}, st.GrantedScopes)
	assert.Empty(t, st.MissingScopes)
	require.NotNil(t, st.TokenExpiresAt)
	assert.Equal(t, "2026-09-04", st.TokenExpiresAt.Format(time.DateOnly))
	assert.Nil(t, st.Connectivity, "cloud has no Postern path")
	names := make([]string, 0, len(st.Steps))
	for _, s := range st.Steps {
		names = append(names, s.Name)
	}
	assert.Equal(t, []string{"base_url", "identity", "scopes", "permission"}, names)
}

func TestBaseURLAndMode(t *testing.T) {
	c := cloudChecker(t, pt.StartCloud(t, clock))
	tests := map[string]struct {
		provider, base string
		mode           provider.Mode
		code           string
		detail         string
	}{
		"cloud needs https":               {"gitlab", "http://gitlab.com", provider.ModeCloud, provider.CodeBaseURLBlocked, "https"},
		"private address":                 {"gitlab", "https://git.private.example", provider.ModeCloud, provider.CodeBaseURLBlocked, "not a public address"},
		"loopback literal":                {"github", "https://127.0.0.1", provider.ModeCloud, provider.CodeBaseURLBlocked, "loopback"},
		"metadata address":                {"webhook", "https://169.254.169.254/latest", provider.ModeCloud, provider.CodeBaseURLBlocked, "link-local"},
		"IPv4 in IPv6":                    {"webhook", "https://[::ffff:10.0.0.1]/", provider.ModeCloud, provider.CodeBaseURLBlocked, "not a public address"},
		"no such host":                    {"github", "https://ghe.corp.invalid", provider.ModeCloud, provider.CodeBaseURLUnreachable, "no such host"},
		"not the provider's host":         {"trello", "https://trello.evil.example", provider.ModeCloud, provider.CodeBaseURLBlocked, "not Trello's API host"},
		"cloud-only provider self-hosted": {"linear", "https://linear.corp.example", provider.ModeSelfHosted, provider.CodeBaseURLBlocked, "cloud only"},
		"self-hosted at the cloud host":   {"github", "https://github.com", provider.ModeSelfHosted, provider.CodeBaseURLBlocked, "use deployment mode cloud"},
		"user info":                       {"gitlab", "https://user:pw@gitlab.com", provider.ModeCloud, provider.CodeBaseURLBlocked, "user info"},
		"query":                           {"gitlab", "https://gitlab.com/?private_token=x", provider.ModeCloud, provider.CodeBaseURLBlocked, "query"},
		"odd host":                        {"gitlab", "https://0x7f.1/", provider.ModeCloud, provider.CodeBaseURLBlocked, "base URL host"},
		"port refused":                    {"gitlab", "https://gitlab.com:8443", provider.ModeCloud, provider.CodeBaseURLUnreachable, "refused"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st, err := c.Check(t.Context(), provider.Request{Provider: tc.provider, Mode: tc.mode, BaseURL: tc.base,
				Credential: provider.NewCredential(pt.Credential(tc.provider, pt.OK)), Connection: "conn_1"})
			require.NoError(t, err)
			assert.Equal(t, tc.code, st.ProviderErrorCode, st.Message)
			assert.False(t, st.Ready)
			assert.Contains(t, st.Message, tc.detail)
			assert.Equal(t, provider.AuthUnknown, st.AuthStatus, "no verdict on the credential before the path works")
		})
	}
}

func TestSelfHostedWithoutRelay(t *testing.T) {
	c, err := provider.New(provider.Config{})
	require.NoError(t, err)
	st, err := c.Check(t.Context(), provider.Request{Provider: "gitlab", Mode: provider.ModeSelfHosted,
		BaseURL: "https://gitlab.corp.example", Credential: provider.NewCredential("x"), Connection: "conn_1"})
	require.NoError(t, err)
	assert.Equal(t, provider.CodeConnectivityBlocked, st.ProviderErrorCode)
	require.NotNil(t, st.Connectivity)
	assert.Equal(t, "unknown", st.Connectivity.TunnelStatus)
}

func TestRequestValidation(t *testing.T) {
	c, err := provider.New(provider.Config{})
	require.NoError(t, err)
	secret := "tok_" + pt.Canary + "\n\x1b[2J"
	_, err = c.Check(t.Context(), provider.Request{Provider: "nope", Mode: "edge", BaseURL: "",
		Credential: provider.Credential{}, RequiredScopes: []string{"a b", ""}})
	require.ErrorIs(t, err, provider.ErrBadRequest)
	for _, want := range []string{"unknown provider", "deployment mode", "base URL", "credential is empty", `required scope "a b"`} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = c.Check(t.Context(), provider.Request{Provider: "github", Mode: provider.ModeCloud, BaseURL: "https://github.com",
		Credential: provider.Credential{}})
	require.Error(t, err)
	cred := provider.NewCredential("a" + secret + "b")
	_, err = c.Check(t.Context(), provider.Request{Provider: "github", Mode: provider.ModeSelfHosted, BaseURL: "https://ghe.corp", Credential: cred})
	require.ErrorIs(t, err, provider.ErrBadRequest)
	assert.Contains(t, err.Error(), "control characters")
	assert.Contains(t, err.Error(), "connection id")
	assert.NotContains(t, err.Error(), pt.Canary)
	assert.NotContains(t, fmt.Sprintf("%v %+v %#v %s", cred, cred, cred, cred), pt.Canary)
}

// TestCredentialScrubbed: a provider that echoes the Authorization header
// and the token in its refusal does not get the credential into the state.
func TestCredentialScrubbed(t *testing.T) {
	srv := echoingProvider(t)
	c, err := provider.New(provider.Config{Resolve: publicResolver, DialAddr: dialTo(srv), RootCAs: srvPool(srv)})
	require.NoError(t, err)
	for _, cred := range []string{"ghp_" + pt.Canary, "me@example.com:" + pt.Canary} {
		st, err := c.Check(t.Context(), provider.Request{Provider: "jira", Mode: provider.ModeCloud, BaseURL: "https://example.com",
			Credential: provider.NewCredential(cred)})
		require.NoError(t, err)
		out, _ := json.Marshal(st)
		assert.Equal(t, provider.CodeAuthFailed, st.ProviderErrorCode)
		assert.NotContains(t, string(out), pt.Canary)
		assert.Contains(t, string(out), "[redacted]")
	}
}

// TestRedirectNotFollowed: a redirect would carry the credential away.
func TestRedirectNotFollowed(t *testing.T) {
	var leaked bool
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { leaked = true }))
	defer other.Close()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/steal", http.StatusFound)
	}))
	defer srv.Close()
	c, err := provider.New(provider.Config{Resolve: publicResolver, DialAddr: dialTo(srv), RootCAs: srvPool(srv)})
	require.NoError(t, err)
	st, err := c.Check(t.Context(), provider.Request{Provider: "github", Mode: provider.ModeCloud, BaseURL: "https://example.com",
		Credential: provider.NewCredential("ghp_x")})
	require.NoError(t, err)
	assert.Equal(t, provider.CodeBaseURLUnreachable, st.ProviderErrorCode)
	assert.Contains(t, st.Message, "redirect")
	assert.False(t, leaked)
}

// TestStepsAreBounded: a provider that never answers ends the check at
// the step timeout.
func TestStepsAreBounded(t *testing.T) {
	stall := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-stall }))
	defer srv.Close()
	defer close(stall)
	c, err := provider.New(provider.Config{Resolve: publicResolver, DialAddr: dialTo(srv), RootCAs: srvPool(srv), StepTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	start := time.Now()
	st, err := c.Check(t.Context(), provider.Request{Provider: "github", Mode: provider.ModeCloud, BaseURL: "https://example.com",
		Credential: provider.NewCredential("ghp_x")})
	require.NoError(t, err)
	assert.Equal(t, provider.CodeBaseURLUnreachable, st.ProviderErrorCode)
	assert.Less(t, time.Since(start), 3*time.Second)
}

func TestStateJSONHasEveryField(t *testing.T) {
	c := cloudChecker(t, pt.StartCloud(t, clock))
	st, err := c.Check(t.Context(), provider.Request{Provider: "github", Mode: provider.ModeCloud, BaseURL: "https://github.com",
		Credential: provider.NewCredential(pt.Credential("github", pt.Limited))})
	require.NoError(t, err)
	out, err := json.Marshal(st)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(out, &m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	assert.Equal(t, []string{"auth_status", "base_url", "connectivity", "deployment_mode", "granted_scopes", "message",
		"missing_scopes", "provider_error_code", "provider_key", "ready", "required_scopes", "retry_after", "steps", "token_expires_at"}, keys)
	assert.Equal(t, "unknown", m["auth_status"])
	assert.Equal(t, float64(30), m["retry_after"])
}

func TestKeysAndModes(t *testing.T) {
	assert.Equal(t, []string{"jira", "github", "gitlab", "bitbucket", "trello", "linear", "azure-devops", "youtrack", "asana", "clickup", "webhook"}, provider.Keys())
	for _, k := range []string{"jira", "github", "gitlab", "bitbucket", "azure-devops", "youtrack"} {
		assert.True(t, provider.SelfHosted(k), k)
	}
	for _, k := range []string{"trello", "linear", "asana", "clickup", "webhook"} {
		assert.False(t, provider.SelfHosted(k), k)
	}
}

// Helpers for the single-server tests above.

func echoingProvider(t *testing.T) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = fmt.Fprintf(w, `{"errorMessages":["bad %s %s"]}`, r.Header.Get("Authorization"), strings.Split(r.Header.Get("Authorization"), " ")[1])
	}))
	t.Cleanup(srv.Close)
	return srv
}

func publicResolver(context.Context, string) ([]netip.Addr, error) {
	return []netip.Addr{pt.Public}, nil
}

func dialTo(srv *httptest.Server) func(context.Context, netip.AddrPort) (net.Conn, error) {
	return func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", srv.Listener.Addr().String())
	}
}

// srvPool trusts an httptest server's certificate; it is issued for
// example.com, which the tests use as the base host.
func srvPool(srv *httptest.Server) *x509.CertPool {
	return srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
}
