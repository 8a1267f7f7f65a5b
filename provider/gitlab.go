package provider

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// gitlab: GitLab.com and GitLab self-managed (and Dedicated, in cloud
// mode at its own host).
func gitlab() *spec {
	return &spec{
		key: "gitlab", name: "GitLab", selfHosted: true,
		cloudHosts: []string{"gitlab.com"},
		apiRoot: func(base *url.URL, _ Mode) *url.URL {
			if strings.HasSuffix(base.Path, "/api/v4") {
				return withPath(base, base.Path+"/")
			}
			return withPath(base, base.Path+"/api/v4/")
		},
		identity:     gitlabIdentity,
		permission:   probeAt("lists the projects the workflow reads", "projects?membership=true&simple=true&per_page=1", nil),
		limited:      limit429("RateLimit-Reset"),
		unauthorized: gitlabUnauthorized,
		forbidden:    gitlabForbidden,
		implies: map[string][]string{
			"api":              {"read_api"},
			"write_repository": {"read_repository"},
			"write_registry":   {"read_registry"},
		},
	}
}

// gitlabIdentity: GET /user, then the token's own record
// (personal_access_tokens/self: scopes, expires_at, revoked, active).
// Tokens that have no such record (OAuth) leave the scopes unknown.
func gitlabIdentity(ctx context.Context, r *run) bool {
	return r.identify(ctx, http.MethodGet, "user", nil, func(a answer) bool {
		self, v := r.call(ctx, http.MethodGet, "personal_access_tokens/self", nil)
		if v == nil && self.status == http.StatusOK {
			var tok struct {
				Scopes    []string `json:"scopes"`
				ExpiresAt string   `json:"expires_at"`
				Revoked   bool     `json:"revoked"`
				Active    bool     `json:"active"`
			}
			if self.jsonBody(&tok) {
				r.granted = splitScopes(strings.Join(tok.Scopes, ","))
				if at, err := time.Parse(time.DateOnly, tok.ExpiresAt); err == nil {
					// GitLab tokens expire at the start of that day (UTC).
					r.st.TokenExpiresAt = &at
				}
				if tok.Revoked {
					return r.failWith(StepIdentity, revokedAuth(self))
				}
			}
		}
		return r.active(jsonString(a.body, "username"))
	})
}

// gitlabError is GitLab's OAuth-style error body.
type gitlabError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Scope       string `json:"scope"`
}

// gitlabUnauthorized: a revoked or expired token is a 401 whose body
// says so ("invalid_token", "Token was revoked..." or "Token is
// expired..."); a wrong token is a bare "401 Unauthorized".
func gitlabUnauthorized(a answer) verdict {
	var e gitlabError
	if a.jsonBody(&e) {
		d := strings.ToLower(e.Description)
		switch {
		case strings.Contains(d, "revoked"):
			return revokedAuth(a)
		case strings.Contains(d, "expired"):
			return expiredAuth(a)
		}
	}
	return failedAuth(a)
}

// gitlabForbidden: a token without the scope an endpoint needs gets 403
// "insufficient_scope" naming the scopes that would do.
func gitlabForbidden(a answer) verdict {
	var e gitlabError
	if a.jsonBody(&e) && e.Error == "insufficient_scope" {
		v := verdict{code: CodeScopeMissing, detail: "the token's scopes do not allow this: " + a.text()}
		v.missing = splitScopes(e.Scope)
		return v
	}
	return noPermission(a)
}
