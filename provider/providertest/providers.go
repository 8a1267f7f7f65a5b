package providertest

import (
	"net/http"
	"time"
)

// github answers GET /user and /user/repos as GitHub documents: scopes in
// X-OAuth-Scopes, "Bad credentials" for every refused token (revoked and
// expired ones too: GitHub does not tell them apart), the primary rate
// limit as 403 with x-ratelimit-remaining 0 and x-ratelimit-reset.
func github(w http.ResponseWriter, r *http.Request, scen string, now time.Time) {
	switch scen {
	case Bad, Revoked, Expired:
		reply(w, http.StatusUnauthorized, `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}`)
		return
	case Limited:
		reply(w, http.StatusForbidden, `{"message":"API rate limit exceeded for user ID 1."}`,
			"X-RateLimit-Limit", "5000", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset(now), "X-RateLimit-Resource", "core")
		return
	}
	scopes := "repo, read:org"
	if scen == NoScope {
		scopes = "read:org"
	}
	w.Header().Set("X-OAuth-Scopes", scopes)
	w.Header().Set("GitHub-Authentication-Token-Expiration", now.Add(30*24*time.Hour).UTC().Format("2006-01-02 15:04:05 MST"))
	switch path(r, "/api/v3") {
	case "/user":
		reply(w, http.StatusOK, `{"login":"octocat","id":1}`)
	case "/user/repos":
		if scen == Forbidden {
			reply(w, http.StatusForbidden, `{"message":"Resource protected by organization SAML enforcement. You must grant your Personal Access token access to this organization."}`)
			return
		}
		reply(w, http.StatusOK, `[{"id":1,"full_name":"octo/hello"}]`)
	default:
		reply(w, http.StatusNotFound, `{"message":"Not Found"}`)
	}
}

// gitlab answers /user, /personal_access_tokens/self and /projects as
// GitLab documents: revoked and expired tokens are 401 invalid_token with
// a description saying which, a missing scope is 403 insufficient_scope,
// and a rate limit is 429 with Retry-After and RateLimit-Reset.
func gitlab(w http.ResponseWriter, r *http.Request, scen string, now time.Time) {
	switch scen {
	case Bad:
		reply(w, http.StatusUnauthorized, `{"message":"401 Unauthorized"}`)
		return
	case Revoked:
		reply(w, http.StatusUnauthorized, `{"error":"invalid_token","error_description":"Token was revoked. You have to re-authorize from the user."}`)
		return
	case Expired:
		reply(w, http.StatusUnauthorized, `{"error":"invalid_token","error_description":"Token is expired. You can either do re-authorization or token refresh."}`)
		return
	case Limited:
		reply(w, http.StatusTooManyRequests, `{"message":"Retry later"}`, "Retry-After", retryAfterSeconds,
			"RateLimit-Limit", "600", "RateLimit-Remaining", "0", "RateLimit-Reset", reset(now))
		return
	}
	switch path(r, "/api/v4") {
	case "/user":
		reply(w, http.StatusOK, `{"id":1,"username":"gitlab-user"}`)
	case "/personal_access_tokens/self":
		scopes := `["api","read_user"]`
		if scen == NoScope {
			scopes = `["read_user"]`
		}
		reply(w, http.StatusOK, `{"id":7,"name":"product","revoked":false,"active":true,"scopes":`+scopes+
			`,"expires_at":"`+now.AddDate(0, 6, 0).Format(time.DateOnly)+`"}`)
	case "/projects":
		if scen == Forbidden {
			reply(w, http.StatusForbidden, `{"message":"403 Forbidden"}`)
			return
		}
		reply(w, http.StatusOK, `[{"id":1,"path_with_namespace":"group/project"}]`)
	default:
		reply(w, http.StatusNotFound, `{"message":"404 Not Found"}`)
	}
}

// jira answers /myself and /mypermissions as Jira documents: a refused
// credential is a 401 (Jira does not say revoked or expired), an OAuth
// token without the scope gets "Unauthorized; scope does not match",
// mypermissions answers havePermission false, and a rate limit is 429
// with Retry-After and X-RateLimit-Reset.
func jira(w http.ResponseWriter, r *http.Request, scen string, now time.Time) {
	switch scen {
	case Bad, Revoked, Expired:
		reply(w, http.StatusUnauthorized, `{"errorMessages":["You are not authenticated. Authentication required to perform this operation."],"errors":{}}`,
			"X-Seraph-LoginReason", "AUTHENTICATED_FAILED")
		return
	case Limited:
		reply(w, http.StatusTooManyRequests, `{"errorMessages":["Rate limit exceeded."]}`, "Retry-After", retryAfterSeconds,
			"X-RateLimit-Reset", now.Add(RetryAfter).UTC().Format("2006-01-02T15:04Z"), "RateLimit-Reason", "jira-burst-based")
		return
	}
	switch path(r, "/rest/api/2") {
	case "/myself":
		reply(w, http.StatusOK, `{"accountId":"5b10a2844c20165700ede21g","displayName":"Mia Krystof","active":true}`)
	case "/mypermissions":
		switch scen {
		case NoScope:
			reply(w, http.StatusUnauthorized, `{"code":401,"message":"Unauthorized; scope does not match"}`)
		case Forbidden:
			reply(w, http.StatusOK, `{"permissions":{"BROWSE_PROJECTS":{"id":"10","key":"BROWSE_PROJECTS","havePermission":false}}}`)
		default:
			reply(w, http.StatusOK, `{"permissions":{"BROWSE_PROJECTS":{"id":"10","key":"BROWSE_PROJECTS","havePermission":true}}}`)
		}
	default:
		reply(w, http.StatusNotFound, `{"errorMessages":["null for uri"]}`)
	}
}

// bitbucket answers Cloud's /2.0/user and /2.0/repositories (scopes in
// X-OAuth-Scopes) and Data Center's /rest/api/1.0/projects and /repos
// (the user in X-AUSERNAME); a rate limit is 429 with Retry-After.
func bitbucket(w http.ResponseWriter, r *http.Request, scen string, _ time.Time) {
	switch scen {
	case Bad, Revoked, Expired:
		reply(w, http.StatusUnauthorized, `{"type":"error","error":{"message":"Unauthorized"}}`)
		return
	case Limited:
		reply(w, http.StatusTooManyRequests, `{"type":"error","error":{"message":"Rate limit for this resource has been exceeded"}}`,
			"Retry-After", retryAfterSeconds)
		return
	}
	scopes := "account, repository, pullrequest"
	if scen == NoScope {
		scopes = "account"
	}
	w.Header().Set("X-OAuth-Scopes", scopes)
	w.Header().Set("X-AUSERNAME", "bb-user")
	switch path(r, "/2.0", "/rest/api/1.0") {
	case "/user":
		reply(w, http.StatusOK, `{"display_name":"BB User","type":"user"}`)
	case "/projects":
		reply(w, http.StatusOK, `{"size":1,"values":[{"key":"PRJ"}],"isLastPage":true}`)
	case "/repositories", "/repos":
		if scen == Forbidden || scen == NoScope {
			reply(w, http.StatusForbidden, `{"type":"error","error":{"message":"Access denied"}}`)
			return
		}
		reply(w, http.StatusOK, `{"values":[{"slug":"repo"}]}`)
	default:
		reply(w, http.StatusNotFound, `{"type":"error","error":{"message":"Not found"}}`)
	}
}
