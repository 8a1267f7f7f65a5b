package provider

import (
	"context"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"
)

// github: GitHub.com, GitHub Enterprise Cloud (data residency, *.ghe.com)
// and GitHub Enterprise Server (https://HOST/api/v3).
func github() *spec {
	return &spec{
		key: "github", name: "GitHub", selfHosted: true,
		cloudHosts: []string{"github.com", "api.github.com"},
		apiRoot:    githubRoot,
		identity:   githubIdentity,
		permission: probeAt("lists the repositories the workflow reads", "user/repos?per_page=1", nil),
		limited:    githubLimited,
		implies: map[string][]string{
			"repo":             {"repo:status", "repo_deployment", "public_repo", "repo:invite", "security_events"},
			"admin:org":        {"write:org", "read:org", "manage_runners:org"},
			"write:org":        {"read:org"},
			"admin:public_key": {"write:public_key", "read:public_key"},
			"write:public_key": {"read:public_key"},
			"admin:repo_hook":  {"write:repo_hook", "read:repo_hook"},
			"write:repo_hook":  {"read:repo_hook"},
			"admin:gpg_key":    {"write:gpg_key", "read:gpg_key"},
			"write:gpg_key":    {"read:gpg_key"},
			"user":             {"read:user", "user:email", "user:follow"},
			"write:packages":   {"read:packages"},
			"project":          {"read:project"},
			"write:discussion": {"read:discussion"},
			"admin:enterprise": {"manage_runners:enterprise", "manage_billing:enterprise", "read:enterprise"},
		},
	}
}

// githubRoot: api.github.com for github.com, api.<sub>.ghe.com for data
// residency, /api/v3 on a server.
func githubRoot(base *url.URL, _ Mode) *url.URL {
	host := base.Hostname()
	switch {
	case host == "github.com" || host == "api.github.com":
		u, _ := url.Parse("https://api.github.com/")
		return u
	case strings.HasSuffix(host, ".ghe.com"):
		u, _ := url.Parse("https://api." + strings.TrimPrefix(host, "api.") + "/")
		return u
	case strings.HasSuffix(base.Path, "/api/v3"):
		return withPath(base, base.Path+"/")
	}
	return withPath(base, base.Path+"/api/v3/")
}

// githubIdentity: GET /user. Classic tokens list their scopes in
// X-OAuth-Scopes (fine-grained tokens send no such header: their
// permissions are probed instead); tokens with an expiry carry it in
// GitHub-Authentication-Token-Expiration.
func githubIdentity(ctx context.Context, r *run) bool {
	return r.identify(ctx, http.MethodGet, "user", nil, func(a answer) bool {
		if v, ok := a.header[textproto.CanonicalMIMEHeaderKey("X-OAuth-Scopes")]; ok {
			r.granted = splitScopes(strings.Join(v, ","))
		}
		if at, ok := githubExpiry(a.header.Get("GitHub-Authentication-Token-Expiration")); ok {
			r.st.TokenExpiresAt = &at
		}
		return r.active(jsonString(a.body, "login"))
	})
}

// githubExpiry reads "2026-04-26 12:00:00 UTC" (or a numeric zone).
func githubExpiry(v string) (time.Time, bool) {
	for _, layout := range []string{"2006-01-02 15:04:05 MST", "2006-01-02 15:04:05 -0700", time.RFC3339} {
		if t, err := time.Parse(layout, strings.TrimSpace(v)); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// githubLimited: the primary limit is a 403 or 429 with
// x-ratelimit-remaining 0 (wait for x-ratelimit-reset, unix seconds); a
// secondary limit is a 403 or 429 that says so, with retry-after when
// present, else one minute.
func githubLimited(a answer, now time.Time) (time.Duration, bool) {
	if a.status != http.StatusForbidden && a.status != http.StatusTooManyRequests {
		return 0, false
	}
	if wait, ok := retryAfter(a.header, now); ok {
		return wait, true
	}
	if a.header.Get("X-RateLimit-Remaining") == "0" {
		if wait, ok := epochReset(a.header, "X-RateLimit-Reset", now, false); ok {
			return wait, true
		}
		return defaultWait, true
	}
	if a.status == http.StatusTooManyRequests || strings.Contains(strings.ToLower(a.text()), "rate limit") {
		return defaultWait, true
	}
	return 0, false
}
