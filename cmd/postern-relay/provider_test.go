package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/provider"
	pt "github.com/postern/postern/provider/providertest"
)

// providerHarness runs `provider check` in process against the cloud
// fakes: the checker's resolver and dialer are the fakes', the roots come
// from --ca-file like an operator's.
type providerHarness struct {
	cloud  *pt.Cloud
	caFile string
	env    map[string]string
}

func newProviderHarness(t *testing.T) *providerHarness {
	t.Helper()
	cloud := pt.StartCloud(t, time.Now)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, cloud.CA.PEM, 0o600))
	return &providerHarness{cloud: cloud, caFile: caFile, env: map[string]string{}}
}

func (h *providerHarness) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	e := providerEnv{
		admin: adminEnv{getenv: func(k string) string { return h.env[k] }},
		tune: func(c *provider.Config) {
			c.Resolve, c.DialAddr = h.cloud.Resolve, h.cloud.DialAddr
		},
	}
	return execute(t, append([]string{"provider", "check"}, args...), e.cmd())
}

// check runs a cloud check of key in scenario and returns the state the
// CLI printed as JSON.
func (h *providerHarness) check(t *testing.T, key, base, scenario string, extra ...string) (provider.State, error) {
	t.Helper()
	h.env["PROVIDER_TOKEN"] = pt.Credential(key, scenario)
	args := append([]string{"--provider", key, "--deployment-mode", "cloud", "--base-url", base,
		"--credential-env", "PROVIDER_TOKEN", "--ca-file", h.caFile, "--json"}, extra...)
	out, stderr, err := h.run(t, args...)
	for _, s := range []string{out, stderr, errString(err)} {
		assert.NotContains(t, s, pt.Canary, "the credential leaked")
	}
	var st provider.State
	decodeOne(t, out, &st)
	return st, err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestProviderCheckCloudRows produces every provider_error_code a cloud
// check can have, for GitHub, GitLab, Jira and the cloud-only Trello, and
// asserts it in the CLI's JSON. (PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED
// needs the Postern path: cmd/e2e's provider test covers it.)
func TestProviderCheckCloudRows(t *testing.T) {
	h := newProviderHarness(t)
	scopes := map[string]string{"github": "repo", "gitlab": "read_api", "jira": "read:jira-work", "trello": "write"}
	revoked := map[string]string{"github": provider.CodeAuthFailed, "jira": provider.CodeAuthFailed,
		"gitlab": provider.CodeTokenRevoked, "trello": provider.CodeTokenRevoked}
	for _, key := range []string{"github", "gitlab", "jira", "trello"} {
		base := pt.CloudBaseURL(key)
		rows := []struct{ scenario, base, code string }{
			{pt.OK, base, ""},
			{pt.Bad, base, provider.CodeAuthFailed},
			{pt.Revoked, base, revoked[key]},
			{pt.NoScope, base, provider.CodeScopeMissing},
			{pt.Forbidden, base, provider.CodePermissionMissing},
			{pt.Limited, base, provider.CodeRateLimited},
			{pt.Down, base, provider.CodeBaseURLUnreachable},
			{pt.OK, strings.Replace(base, "https://", "http://", 1), provider.CodeBaseURLBlocked},
			{pt.OK, "https://private.example", provider.CodeBaseURLBlocked},
		}
		if key != "trello" { // Trello is only at its own host: any other is blocked before DNS
			rows = append(rows, struct{ scenario, base, code string }{pt.OK, "https://nowhere.invalid", provider.CodeBaseURLUnreachable})
		}
		for _, row := range rows {
			t.Run(key+"/"+row.scenario+"/"+row.code, func(t *testing.T) {
				st, err := h.check(t, key, row.base, row.scenario, "--required-scopes", scopes[key])
				assert.Equal(t, row.code, st.ProviderErrorCode, st.Message)
				assert.Equal(t, row.code == "", st.Ready)
				if row.code == "" {
					assert.NoError(t, err)
					assert.Equal(t, provider.AuthActive, st.AuthStatus)
					return
				}
				assert.EqualError(t, err, "not ready: "+row.code, "exit 1 unless ready")
				switch row.code {
				case provider.CodeRateLimited:
					assert.InDelta(t, map[string]int{"trello": 10}[key]+map[bool]int{true: 0, false: 30}[key == "trello"], st.RetryAfter, 2)
				case provider.CodeScopeMissing:
					assert.Equal(t, []string{scopes[key]}, st.MissingScopes)
				}
			})
		}
	}
	t.Run("trello is cloud only", func(t *testing.T) {
		st, _ := h.check(t, "trello", "https://trello.evil.example", pt.OK)
		assert.Equal(t, provider.CodeBaseURLBlocked, st.ProviderErrorCode)
		out, _, err := h.run(t, "--provider", "trello", "--deployment-mode", "self-hosted", "--base-url", "https://trello.corp",
			"--connection", "conn_1", "--proxy", "127.0.0.1:1", "--credential-env", "PROVIDER_TOKEN", "--json")
		require.Error(t, err)
		assert.Empty(t, out)
	})
}

func TestProviderCheckHuman(t *testing.T) {
	h := newProviderHarness(t)
	h.env["PROVIDER_TOKEN"] = pt.Credential("gitlab", pt.Revoked)
	out, _, err := h.run(t, "--provider", "gitlab", "--deployment-mode", "cloud", "--base-url", "https://gitlab.com",
		"--credential-env", "PROVIDER_TOKEN", "--ca-file", h.caFile)
	require.EqualError(t, err, "not ready: PROVIDER_TOKEN_REVOKED")
	assert.Contains(t, out, "PASS base_url GitLab cloud at gitlab.com:443, public address 203.0.113.7\n")
	assert.Contains(t, out, "FAIL identity the credential was revoked (HTTP 401)")
	assert.Contains(t, out, "ready: no (PROVIDER_TOKEN_REVOKED, auth revoked)\n")
	assert.NotContains(t, out, pt.Canary)

	credFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(credFile, []byte(pt.Credential("gitlab", pt.OK)+"\n"), 0o600))
	out, _, err = h.run(t, "--provider", "gitlab", "--deployment-mode", "cloud", "--base-url", "https://gitlab.com",
		"--credential-file", credFile, "--ca-file", h.caFile, "--required-scopes", "read_api, read_user")
	require.NoError(t, err, out)
	assert.Contains(t, out, "PASS scopes granted: api, read_user\n")
	assert.True(t, strings.HasSuffix(out, "ready: yes\n"), out)
}

func TestProviderCheckInput(t *testing.T) {
	h := newProviderHarness(t)
	h.env["PROVIDER_TOKEN"] = pt.Credential("gitlab", pt.OK)
	base := []string{"--provider", "gitlab", "--deployment-mode", "cloud", "--base-url", "https://gitlab.com"}
	tests := map[string]struct {
		args []string
		err  string
	}{
		"no credential":         {base, "no credential"},
		"both credential flags": {append(base, "--credential-env", "PROVIDER_TOKEN", "--credential-file", "x"), "none of the others can be"},
		"empty environment":     {append(base, "--credential-env", "UNSET_VAR"), "UNSET_VAR is empty or unset"},
		"no credential flag":    {append(base, "--credential", "x"), "unknown flag: --credential"},
		"unknown provider":      {[]string{"--provider", "gitea", "--deployment-mode", "cloud", "--base-url", "https://g", "--credential-env", "PROVIDER_TOKEN"}, "unknown provider"},
		"self-hosted no proxy":  {[]string{"--provider", "gitlab", "--deployment-mode", "self-hosted", "--base-url", "https://g", "--credential-env", "PROVIDER_TOKEN"}, "--proxy"},
		"required flags":        {nil, `required flag(s) "base-url", "deployment-mode", "provider" not set`},
		"no CA file":            {append(base, "--credential-env", "PROVIDER_TOKEN", "--ca-file", "/nonexistent/ca.pem"), "ca file"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, _, err := h.run(t, tc.args...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
			assert.Empty(t, out)
			assert.NotContains(t, err.Error(), pt.Canary)
		})
	}
	t.Run("the provider is not trusted without --ca-file", func(t *testing.T) {
		out, _, err := h.run(t, append(base, "--credential-env", "PROVIDER_TOKEN", "--json")...)
		require.Error(t, err)
		var st provider.State
		decodeOne(t, out, &st)
		assert.Equal(t, provider.CodeBaseURLUnreachable, st.ProviderErrorCode)
		assert.Contains(t, st.Message, "certificate")
	})
}
