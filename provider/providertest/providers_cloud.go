package providertest

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/relay/api"
)

// trello answers /1/members/me, /1/tokens/{token} and
// /1/members/me/boards as Trello documents: 401 in plain text ("invalid
// token", "expired token"), a token's permissions and dateExpires, and 429
// with a body naming the limit and no headers.
func trello(w http.ResponseWriter, r *http.Request, scen string, now time.Time) {
	switch scen {
	case Bad:
		text(w, http.StatusUnauthorized, "invalid token")
		return
	case Revoked, Expired:
		text(w, http.StatusUnauthorized, "expired token")
		return
	case Limited:
		reply(w, http.StatusTooManyRequests, `{"error":"API_TOKEN_LIMIT_EXCEEDED","message":"Rate limit exceeded"}`)
		return
	}
	p := path(r, "/1")
	switch {
	case p == "/members/me":
		reply(w, http.StatusOK, `{"id":"5abbe4b7ddc1b351ef961414","username":"trellouser"}`)
	case strings.HasPrefix(p, "/tokens/"):
		write := scen != NoScope
		reply(w, http.StatusOK, `{"id":"t1","dateExpires":"`+now.Add(90*24*time.Hour).UTC().Format(time.RFC3339)+
			`","permissions":[{"idModel":"*","modelType":"Board","read":true,"write":`+strconv.FormatBool(write)+`}]}`)
	case p == "/members/me/boards":
		if scen == Forbidden {
			text(w, http.StatusUnauthorized, "unauthorized permission requested")
			return
		}
		reply(w, http.StatusOK, `[{"id":"b1","name":"Roadmap"}]`)
	default:
		text(w, http.StatusNotFound, "The requested resource was not found.")
	}
}

// linear answers POST /graphql as Linear documents: errors carry
// extensions.code (AUTHENTICATION_ERROR, FORBIDDEN, RATELIMITED), rate
// limits come with X-RateLimit-Requests-* headers (reset in unix ms).
func linear(w http.ResponseWriter, r *http.Request, scen string, now time.Time) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	gqlError := func(status int, code, msg string, headers ...string) {
		reply(w, status, `{"errors":[{"message":"`+msg+`","extensions":{"code":"`+code+`","type":"`+strings.ToLower(code)+`"}}]}`, headers...)
	}
	switch scen {
	case Bad, Revoked:
		gqlError(http.StatusBadRequest, "AUTHENTICATION_ERROR", "Authentication required, not authenticated")
		return
	case Expired:
		gqlError(http.StatusUnauthorized, "AUTHENTICATION_ERROR", "The OAuth token has expired")
		return
	case Limited:
		gqlError(http.StatusTooManyRequests, "RATELIMITED", "Rate limit exceeded", "X-RateLimit-Requests-Limit", "1500",
			"X-RateLimit-Requests-Remaining", "0", "X-RateLimit-Requests-Reset", strconv.FormatInt(now.Add(RetryAfter).UnixMilli(), 10))
		return
	}
	switch {
	case strings.Contains(string(body), "viewer"):
		reply(w, http.StatusOK, `{"data":{"viewer":{"id":"u1","name":"Linear User"}}}`)
	case scen == Forbidden || scen == NoScope:
		gqlError(http.StatusOK, "FORBIDDEN", "Invalid scope: read required")
	default:
		reply(w, http.StatusOK, `{"data":{"teams":{"nodes":[{"id":"t1"}]}}}`)
	}
}

// azureDevOps answers _apis/connectionData and _apis/projects as Azure
// DevOps documents: an invalid PAT gets 203 with the HTML sign-in page, a
// rate limit 429 with Retry-After and X-RateLimit-* headers.
func azureDevOps(w http.ResponseWriter, r *http.Request, scen string, now time.Time) {
	switch scen {
	case Bad, Revoked, Expired:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		reply(w, http.StatusNonAuthoritativeInfo, "<html><head><title>Azure DevOps Services | Sign In</title></head><body></body></html>")
		return
	case Limited:
		reply(w, http.StatusTooManyRequests, `{"message":"Request was blocked due to exceeding usage of resource."}`,
			"Retry-After", retryAfterSeconds, "X-RateLimit-Resource", "Core", "X-RateLimit-Limit", "200",
			"X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset(now))
		return
	}
	switch path(r, "/_apis") {
	case "/connectionData":
		reply(w, http.StatusOK, `{"authenticatedUser":{"id":"a1","providerDisplayName":"Ada Lovelace"},"authorizedUser":{"id":"a1"}}`)
	case "/projects":
		if scen == Forbidden || scen == NoScope {
			reply(w, http.StatusUnauthorized, `{"message":"TF400813: The user 'a1' is not authorized to access this resource."}`)
			return
		}
		reply(w, http.StatusOK, `{"count":1,"value":[{"name":"Fabrikam"}]}`)
	default:
		reply(w, http.StatusNotFound, `{"message":"not found"}`)
	}
}

// youTrack answers /api/users/me and /api/admin/projects; a refused token
// is 401 with an OAuth-style body, a rate limit 429 with Retry-After.
func youTrack(w http.ResponseWriter, r *http.Request, scen string, _ time.Time) {
	switch scen {
	case Bad, Revoked, Expired:
		reply(w, http.StatusUnauthorized, `{"error":"Unauthorized","error_description":"Invalid token"}`)
		return
	case Limited:
		reply(w, http.StatusTooManyRequests, `{"error":"too_many_requests"}`, "Retry-After", retryAfterSeconds)
		return
	}
	switch path(r, "/api") {
	case "/users/me":
		reply(w, http.StatusOK, `{"id":"1-1","login":"yt-user","name":"YT User"}`)
	case "/admin/projects":
		if scen == Forbidden || scen == NoScope {
			reply(w, http.StatusForbidden, `{"error":"Forbidden","error_description":"Access denied"}`)
			return
		}
		reply(w, http.StatusOK, `[{"id":"0-0","shortName":"DEMO"}]`)
	default:
		reply(w, http.StatusNotFound, `{"error":"Not Found"}`)
	}
}

// asana answers /api/1.0/users/me and /workspaces: 401 "Not Authorized"
// (an expired OAuth token says it expired), 429 with Retry-After.
func asana(w http.ResponseWriter, r *http.Request, scen string, _ time.Time) {
	switch scen {
	case Bad, Revoked:
		reply(w, http.StatusUnauthorized, `{"errors":[{"message":"Not Authorized"}]}`)
		return
	case Expired:
		reply(w, http.StatusUnauthorized, `{"errors":[{"message":"The bearer token has expired."}]}`)
		return
	case Limited:
		reply(w, http.StatusTooManyRequests, `{"errors":[{"message":"You've made too many requests and hit a rate limit. Please retry after the given amount of time."}]}`,
			"Retry-After", retryAfterSeconds)
		return
	}
	switch path(r, "/api/1.0") {
	case "/users/me":
		reply(w, http.StatusOK, `{"data":{"gid":"1","name":"Asana User"}}`)
	case "/workspaces":
		if scen == Forbidden || scen == NoScope {
			reply(w, http.StatusForbidden, `{"errors":[{"message":"Forbidden"}]}`)
			return
		}
		reply(w, http.StatusOK, `{"data":[{"gid":"w1","name":"Acme"}],"next_page":null}`)
	default:
		reply(w, http.StatusNotFound, `{"errors":[{"message":"Not Found"}]}`)
	}
}

// clickUp answers /api/v2/user and /api/v2/team: 401 with an ECODE
// (OAUTH_025 for a revoked token), 429 with X-RateLimit-Reset.
func clickUp(w http.ResponseWriter, r *http.Request, scen string, now time.Time) {
	switch scen {
	case Bad:
		reply(w, http.StatusUnauthorized, `{"err":"Oauth token not found","ECODE":"OAUTH_018"}`)
		return
	case Revoked, Expired:
		reply(w, http.StatusUnauthorized, `{"err":"Token invalid","ECODE":"OAUTH_025"}`)
		return
	case Limited:
		reply(w, http.StatusTooManyRequests, `{"err":"Rate limit reached","ECODE":"APP_002"}`,
			"X-RateLimit-Limit", "100", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset(now))
		return
	}
	switch path(r, "/api/v2") {
	case "/user":
		reply(w, http.StatusOK, `{"user":{"id":1,"username":"clickup-user"}}`)
	case "/team":
		if scen == Forbidden || scen == NoScope {
			reply(w, http.StatusOK, `{"teams":[]}`)
			return
		}
		reply(w, http.StatusOK, `{"teams":[{"id":"9","name":"Acme"}]}`)
	default:
		reply(w, http.StatusNotFound, `{"err":"Route not found","ECODE":"APP_001"}`)
	}
}

// webhook is a receiver that verifies Postern-Signature against the
// secret of each scenario, and answers as that scenario says: 204 for the
// right secret, 401 for a signature it cannot verify, 429 with
// Retry-After.
func webhook(w http.ResponseWriter, _ *http.Request, scen string, _ time.Time) {
	switch scen {
	case OK:
		w.WriteHeader(http.StatusNoContent)
	case Limited:
		reply(w, http.StatusTooManyRequests, `{"error":"slow down"}`, "Retry-After", retryAfterSeconds)
	default:
		reply(w, http.StatusUnauthorized, `{"error":"signature does not match"}`)
	}
}

// webhookScenario finds the scenario whose secret signed the request.
func webhookScenario(r *http.Request) string {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	sig := r.Header.Get(api.HeaderWebhookSignature)
	ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Bad
	}
	for _, scen := range []string{OK, Limited, Down} {
		if api.SignWebhook([]byte(Credential("webhook", scen)), body, time.Unix(sec, 0)) == sig {
			return scen
		}
	}
	return Bad
}
