package provider

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// jira: Jira Cloud (*.atlassian.net, email:API token as Basic auth) and
// Jira Data Center (a personal access token as a bearer token, or
// user:password).
func jira() *spec {
	return &spec{
		key: "jira", name: "Jira", selfHosted: true,
		cloudHosts:   []string{".atlassian.net", ".jira.com"},
		apiRoot:      underBase("/rest/api/2/"),
		authorize:    basicOrBearer,
		identity:     whoAmI("myself", "displayName"),
		permission:   jiraPermission,
		limited:      jiraLimited,
		unauthorized: jiraUnauthorized,
	}
}

// jiraPermission: mypermissions answers 200 whatever the verdict, with
// havePermission per key; the workflow browses projects.
func jiraPermission(ctx context.Context, r *run) bool {
	return r.probe(ctx, "BROWSE_PROJECTS granted", "mypermissions?permissions=BROWSE_PROJECTS", func(a answer) *verdict {
		var p struct {
			Permissions map[string]struct {
				Have bool `json:"havePermission"`
			} `json:"permissions"`
		}
		if !a.jsonBody(&p) || !p.Permissions["BROWSE_PROJECTS"].Have {
			return &verdict{code: CodePermissionMissing, detail: "the user may not browse any project (BROWSE_PROJECTS not granted)"}
		}
		return nil
	})
}

// jiraLimited: 429 with Retry-After (seconds), else X-RateLimit-Reset (an
// ISO 8601 time such as 2026-10-05T09:15Z).
func jiraLimited(a answer, now time.Time) (time.Duration, bool) {
	if a.status != http.StatusTooManyRequests {
		return 0, false
	}
	if wait, ok := retryAfter(a.header, now); ok {
		return wait, true
	}
	for _, layout := range []string{"2006-01-02T15:04Z", time.RFC3339} {
		if at, err := time.Parse(layout, a.header.Get("X-RateLimit-Reset")); err == nil {
			return max(at.Sub(now), 0), true
		}
	}
	return defaultWait, true
}

// jiraUnauthorized: Cloud refuses an OAuth token without the scope an
// operation needs with "Unauthorized; scope does not match"; Data Center says in X-Seraph-LoginReason when it
// wants a CAPTCHA after failed sign-ins (AUTHENTICATION_DENIED); every
// other 401 is a refused credential.
func jiraUnauthorized(a answer) verdict {
	if strings.Contains(a.text(), "scope does not match") {
		// An OAuth 2.0 token without the scope an operation needs.
		return verdict{code: CodeScopeMissing, detail: "the token's scopes do not allow this: " + a.text()}
	}
	v := failedAuth(a)
	if strings.Contains(a.header.Get("X-Seraph-LoginReason"), "AUTHENTICATION_DENIED") {
		v.detail = "Jira wants a CAPTCHA after failed sign-ins (X-Seraph-LoginReason: AUTHENTICATION_DENIED); sign in once in a browser: " + a.text()
	}
	return v
}

// bitbucket: Bitbucket Cloud (api.bitbucket.org/2.0) and Bitbucket Data
// Center (/rest/api/1.0).
func bitbucket() *spec {
	return &spec{
		key: "bitbucket", name: "Bitbucket", selfHosted: true,
		cloudHosts: []string{"bitbucket.org", "api.bitbucket.org"},
		apiRoot: func(base *url.URL, _ Mode) *url.URL {
			if h := base.Hostname(); h == "bitbucket.org" || h == "api.bitbucket.org" {
				u, _ := url.Parse("https://api.bitbucket.org/2.0/")
				return u
			}
			return withPath(base, base.Path+"/rest/api/1.0/")
		},
		authorize:  basicOrBearer,
		identity:   bitbucketIdentity,
		permission: bitbucketPermission,
		implies: map[string][]string{
			"repository:admin":  {"repository:write"},
			"repository:write":  {"repository"},
			"pullrequest":       {"repository"},
			"pullrequest:write": {"pullrequest", "repository:write"},
			"issue:write":       {"issue"},
			"project:admin":     {"project:write"},
			"project:write":     {"project"},
			"webhook":           {},
		},
	}
}

func bitbucketCloud(r *run) bool { return r.api.Host == "api.bitbucket.org" }

// bitbucketIdentity: Cloud answers GET /user and lists an OAuth or access
// token's scopes in X-OAuth-Scopes; Data Center names the user it
// authenticated in X-AUSERNAME on any REST answer.
func bitbucketIdentity(ctx context.Context, r *run) bool {
	if bitbucketCloud(r) {
		return r.identify(ctx, http.MethodGet, "user", nil, func(a answer) bool {
			if v := a.header.Get("X-OAuth-Scopes"); v != "" {
				r.granted = splitScopes(v)
			}
			return r.active(jsonString(a.body, "display_name"))
		})
	}
	return r.identify(ctx, http.MethodGet, "projects?limit=1", nil, func(a answer) bool {
		user := a.header.Get("X-AUSERNAME")
		if user == "" {
			return r.failWith(StepIdentity, verdict{code: CodeAuthFailed, auth: AuthFailed,
				detail: "Bitbucket answered as an anonymous user (no X-AUSERNAME): the credential was not used"})
		}
		return r.active(user)
	})
}

func bitbucketPermission(ctx context.Context, r *run) bool {
	if bitbucketCloud(r) {
		return r.probe(ctx, "lists the repositories the workflow reads", "repositories?role=member&pagelen=1", nil)
	}
	return r.probe(ctx, "lists the repositories the workflow reads", "repos?limit=1", nil)
}

// trello: Trello's cloud API; the credential is "API key:token", sent in
// the Authorization header (never in the query string).
func trello() *spec {
	return &spec{
		key: "trello", name: "Trello",
		cloudHosts: []string{"api.trello.com", "trello.com"},
		apiRoot:    cloudRoot("https://api.trello.com/1/"),
		authorize: func(req *http.Request, cred string) {
			key, token, _ := strings.Cut(cred, ":")
			req.Header.Set("Authorization", `OAuth oauth_consumer_key="`+key+`", oauth_token="`+token+`"`)
		},
		identity:   trelloIdentity,
		permission: probeAt("lists the boards the workflow reads", "members/me/boards?fields=name&limit=1", nil),
		limited:    trelloLimited,
		// Trello answers 401 in plain text: "invalid token", "invalid
		// key", or, for a token past its expiry, "expired token".
		unauthorized: expiredIfSaid,
		implies:      map[string][]string{"write": {"read"}},
	}
}

// trelloIdentity: GET /members/me, then the token's own record (its
// permissions, read and write, and dateExpires).
func trelloIdentity(ctx context.Context, r *run) bool {
	_, token, ok := strings.Cut(r.req.Credential.Reveal(), ":")
	if !ok || token == "" {
		return r.failWith(StepIdentity, verdict{code: CodeAuthFailed, auth: AuthFailed, detail: "a Trello credential is \"API key:token\""})
	}
	return r.identify(ctx, http.MethodGet, "members/me?fields=username", nil, func(a answer) bool {
		rec, v := r.call(ctx, http.MethodGet, "tokens/"+url.PathEscape(token)+"?fields=dateExpires,permissions", nil)
		var tok struct {
			DateExpires *time.Time `json:"dateExpires"`
			Permissions []struct {
				Read  bool `json:"read"`
				Write bool `json:"write"`
			} `json:"permissions"`
		}
		if v == nil && rec.status == http.StatusOK && rec.jsonBody(&tok) {
			var granted []string
			for _, p := range tok.Permissions {
				if p.Read {
					granted = append(granted, "read")
				}
				if p.Write {
					granted = append(granted, "write")
				}
			}
			r.granted = splitScopes(strings.Join(granted, ","))
			r.st.TokenExpiresAt = tok.DateExpires
		}
		return r.active(jsonString(a.body, "username"))
	})
}

// trelloLimited: 429 with a body naming the limit hit and no headers:
// API_TOKEN_LIMIT_EXCEEDED and API_KEY_LIMIT_EXCEEDED are 10 s windows,
// the /1/members limit a 900 s one.
func trelloLimited(a answer, now time.Time) (time.Duration, bool) {
	if a.status != http.StatusTooManyRequests {
		return 0, false
	}
	if wait, ok := retryAfter(a.header, now); ok {
		return wait, true
	}
	if body := a.text(); strings.Contains(body, "API_TOKEN_LIMIT_EXCEEDED") || strings.Contains(body, "API_KEY_LIMIT_EXCEEDED") {
		return 10 * time.Second, true
	}
	return 900 * time.Second, true
}
