package providertest

import (
	"encoding/base64"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Canary is part of every credential Credential makes: a test fails if it
// shows up in a State, an error, output or a log.
const Canary = "CANARY-c0ffee-must-not-leak"

// Scenarios a fake plays, picked by the credential.
const (
	OK        = "ok"        // success, with the scopes of a full credential
	Bad       = "bad"       // a wrong credential
	Revoked   = "revoked"   // revoked, said so where the provider says so
	Expired   = "expired"   // expired, said so where the provider says so
	NoScope   = "noscope"   // accepted, but without a scope the workflow needs
	Forbidden = "forbidden" // accepted with every scope, but refused the resource
	Limited   = "limited"   // rate limited, with the provider's own headers
	Down      = "down"      // the provider fails (HTTP 503)
)

// RetryAfter is the cooldown every rate-limited answer asks for.
const RetryAfter = 30 * time.Second

// Credential returns the credential that makes a fake of provider play
// scenario, in the provider's own credential form.
func Credential(provider, scenario string) string {
	token := scenario + "_" + Canary
	switch provider {
	case "jira":
		return "me@example.com:" + token
	case "bitbucket":
		return "me:" + token
	case "trello":
		return "trellokey0042:" + token
	case "linear":
		return "lin_api_" + token
	}
	return token
}

// scenarioOf reads the scenario back from a request's credential.
func scenarioOf(provider string, r *http.Request) string {
	auth := r.Header.Get("Authorization")
	var token string
	switch {
	case strings.HasPrefix(auth, "Bearer "):
		token = strings.TrimPrefix(auth, "Bearer ")
	case strings.HasPrefix(auth, "Basic "):
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(auth, "Basic "))
		_, token, _ = strings.Cut(string(raw), ":")
	case strings.HasPrefix(auth, "OAuth "):
		_, rest, _ := strings.Cut(auth, `oauth_token="`)
		token, _, _ = strings.Cut(rest, `"`)
	default:
		token = strings.TrimPrefix(auth, "lin_api_")
	}
	if !strings.Contains(token, Canary) && provider != "webhook" {
		return Bad
	}
	scenario, _, _ := strings.Cut(token, "_")
	return scenario
}

// Handler is the fake of provider, for every scenario; now is its clock
// (rate-limit reset times). It answers at the provider's cloud paths and
// at its self-hosted paths alike.
func Handler(provider string, now func() time.Time) http.Handler {
	fakes := map[string]func(w http.ResponseWriter, r *http.Request, scen string, now time.Time){
		"github": github, "gitlab": gitlab, "jira": jira, "bitbucket": bitbucket, "trello": trello,
		"linear": linear, "azure-devops": azureDevOps, "youtrack": youTrack, "asana": asana, "clickup": clickUp,
		"webhook": webhook,
	}
	fake := fakes[provider]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scen := scenarioOf(provider, r)
		if provider == "webhook" {
			scen = webhookScenario(r)
		}
		if scen == Down {
			reply(w, http.StatusServiceUnavailable, `{"message":"service unavailable"}`)
			return
		}
		fake(w, r, scen, now())
	})
}

// reply writes a JSON answer with extra headers as name, value pairs.
func reply(w http.ResponseWriter, status int, body string, headers ...string) {
	for i := 0; i+1 < len(headers); i += 2 {
		w.Header().Set(headers[i], headers[i+1])
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// text writes a plain-text answer.
func text(w http.ResponseWriter, status int, body string, headers ...string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	reply(w, status, body, headers...)
}

// reset is the unix time the rate-limit window ends, as a header value.
func reset(now time.Time) string { return strconv.FormatInt(now.Add(RetryAfter).Unix(), 10) }

// path is r's path after the first of prefixes it starts with.
func path(r *http.Request, prefixes ...string) string {
	p := r.URL.Path
	for _, pre := range prefixes {
		if i := strings.Index(p, pre); i >= 0 {
			return p[i+len(pre):]
		}
	}
	return p
}

var retryAfterSeconds = strconv.Itoa(int(RetryAfter / time.Second))
