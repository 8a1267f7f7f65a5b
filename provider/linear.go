package provider

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// linear: Linear's GraphQL API. A personal API key ("lin_api_...") goes
// in Authorization as is, an OAuth token as a bearer token. Errors come as
// GraphQL errors whose extensions.code names them (AUTHENTICATION_ERROR,
// FORBIDDEN, RATELIMITED), whatever the HTTP status.
func linear() *spec {
	return &spec{
		key: "linear", name: "Linear",
		cloudHosts: []string{"api.linear.app", "linear.app"},
		apiRoot:    cloudRoot("https://api.linear.app/"),
		authorize: func(req *http.Request, cred string) {
			if strings.HasPrefix(cred, "lin_api_") {
				rawToken(req, cred)
				return
			}
			bearer(req, cred)
		},
		identity: func(ctx context.Context, r *run) bool {
			var out struct {
				Viewer *struct {
					Name string `json:"name"`
				} `json:"viewer"`
			}
			if v := r.graphQL(ctx, `{ viewer { id name } }`, &out); v != nil {
				return r.failWith(StepIdentity, *v)
			}
			if out.Viewer == nil {
				return r.failWith(StepIdentity, verdict{code: CodeAuthFailed, auth: AuthFailed, detail: "Linear answered without a viewer"})
			}
			return r.active(out.Viewer.Name)
		},
		permission: func(ctx context.Context, r *run) bool {
			var out struct {
				Teams struct {
					Nodes []json.RawMessage `json:"nodes"`
				} `json:"teams"`
			}
			v := r.graphQL(ctx, `{ teams(first: 1) { nodes { id } } }`, &out)
			if v == nil && len(out.Teams.Nodes) == 0 {
				v = &verdict{code: CodePermissionMissing, detail: "the credential sees no Linear team"}
			}
			if v != nil {
				if v.code == CodeAuthFailed {
					v.code, v.auth = CodePermissionMissing, AuthUnknown
				}
				return r.failWith(StepPermission, *v)
			}
			return r.pass(StepPermission, "sees a team")
		},
		limited: linearLimited,
	}
}

// graphQLAnswer is Linear's answer envelope.
type graphQLAnswer struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string `json:"message"`
		Extensions struct {
			Code string `json:"code"`
		} `json:"extensions"`
	} `json:"errors"`
}

// graphQL posts query and decodes its data into out; a verdict says why
// it cannot be used.
func (r *run) graphQL(ctx context.Context, query string, out any) *verdict {
	body, _ := json.Marshal(map[string]string{"query": query})
	a, v := r.call(ctx, http.MethodPost, "graphql", body)
	if v != nil {
		return v
	}
	if wait, ok := r.spec.limited(a, r.now()); ok {
		return &verdict{code: CodeRateLimited, retry: wait, detail: "Linear rate limit (RATELIMITED), retry after " + wait.Round(time.Second).String()}
	}
	var g graphQLAnswer
	if !a.jsonBody(&g) {
		return r.judge(a)
	}
	if len(g.Errors) > 0 {
		e := g.Errors[0]
		switch e.Extensions.Code {
		case "AUTHENTICATION_ERROR":
			if strings.Contains(strings.ToLower(e.Message), "expired") {
				return &verdict{code: CodeTokenRevoked, auth: AuthExpired, detail: "Linear: " + clip(e.Message, 200)}
			}
			return &verdict{code: CodeAuthFailed, auth: AuthFailed, detail: "Linear: " + clip(e.Message, 200)}
		case "FORBIDDEN":
			return &verdict{code: CodePermissionMissing, detail: "Linear: " + clip(e.Message, 200)}
		}
	}
	if v := r.judge(a); v != nil {
		return v
	}
	if json.Unmarshal(g.Data, out) != nil {
		return &verdict{code: CodeBaseURLUnreachable, detail: "Linear answered without data: " + a.text()}
	}
	return nil
}

// linearLimited: a RATELIMITED GraphQL error (HTTP 400 or 429); the
// request budget resets at X-RateLimit-Requests-Reset, in unix
// milliseconds (the complexity budget at X-RateLimit-Complexity-Reset).
func linearLimited(a answer, now time.Time) (time.Duration, bool) {
	if a.status != http.StatusTooManyRequests && !strings.Contains(string(a.body), `"RATELIMITED"`) {
		return 0, false
	}
	for _, h := range []string{"X-RateLimit-Requests-Reset", "X-RateLimit-Complexity-Reset"} {
		if a.header.Get(strings.Replace(h, "Reset", "Remaining", 1)) == "0" {
			if wait, ok := epochReset(a.header, h, now, true); ok {
				return wait, true
			}
		}
	}
	if wait, ok := retryAfter(a.header, now); ok {
		return wait, true
	}
	return defaultWait, true
}
