package provider

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// spec is what the check knows of one provider. Every function field is
// set by the provider's constructor; the registry builds them once.
type spec struct {
	key, name string
	// selfHosted says the provider has a self-hosted edition.
	selfHosted bool
	// cloudHosts are the provider's own hosts; a leading "." matches any
	// name below it. Cloud-only providers must be at one of them; a
	// self-hosted base URL must not be.
	cloudHosts []string
	// apiRoot derives the API root from the checked base URL.
	apiRoot func(base *url.URL, mode Mode) *url.URL
	// authorize puts the credential on a request.
	authorize func(req *http.Request, cred string)
	// identity and permission are the provider's steps 3 and 4.
	identity   func(ctx context.Context, r *run) bool
	permission func(ctx context.Context, r *run) bool
	// limited reads the provider's rate-limit signal.
	limited func(a answer, now time.Time) (time.Duration, bool)
	// unauthorized and forbidden refine a 401 and a 403.
	unauthorized func(a answer) verdict
	forbidden    func(a answer) verdict
	// implies maps a scope to the narrower scopes it includes.
	implies map[string][]string
}

// registry lists every provider, built once per call to lookup: a table
// of values, not mutable state.
func registry() []*spec {
	return []*spec{jira(), github(), gitlab(), bitbucket(), trello(), linear(), azureDevOps(), youTrack(),
		asana(), clickUp(), webhookReceiver()}
}

// lookup returns the spec of a provider key.
func lookup(key string) (*spec, bool) {
	for _, s := range registry() {
		if s.key == key {
			return withDefaults(s), true
		}
	}
	return nil, false
}

// Keys lists the provider keys, in the page's order.
func Keys() []string {
	var keys []string
	for _, s := range registry() {
		keys = append(keys, s.key)
	}
	return keys
}

// SelfHosted reports whether the provider has a self-hosted edition.
func SelfHosted(key string) bool {
	s, ok := lookup(key)
	return ok && s.selfHosted
}

func withDefaults(s *spec) *spec {
	if s.authorize == nil {
		s.authorize = bearer
	}
	if s.limited == nil {
		s.limited = limit429("")
	}
	if s.unauthorized == nil {
		s.unauthorized = failedAuth
	}
	if s.forbidden == nil {
		s.forbidden = noPermission
	}
	if s.apiRoot == nil {
		s.apiRoot = underBase("/")
	}
	return s
}

// steps are the provider's checks after the base URL and connectivity.
func (s *spec) steps(r *run) []func(context.Context) bool {
	out := []func(context.Context) bool{func(ctx context.Context) bool { return s.identity(ctx, r) }}
	if s.permission != nil {
		out = append(out, r.checkScopes, func(ctx context.Context) bool { return s.permission(ctx, r) })
	}
	return out
}

// isCloudHost reports whether host is one of the provider's own hosts.
func (s *spec) isCloudHost(host string) bool {
	for _, h := range s.cloudHosts {
		if host == h || (strings.HasPrefix(h, ".") && strings.HasSuffix(host, h)) {
			return true
		}
	}
	return false
}

// modeProblem says why the deployment mode does not fit the provider and
// host, or "".
func (s *spec) modeProblem(mode Mode, host string) string {
	switch {
	case mode == ModeSelfHosted && !s.selfHosted:
		return s.name + " is cloud only: a self-hosted connection is not supported; use deployment mode cloud"
	case mode == ModeSelfHosted && s.isCloudHost(host):
		return host + " is " + s.name + "'s cloud, not a self-hosted server; use deployment mode cloud"
	case mode == ModeCloud && !s.selfHosted && len(s.cloudHosts) > 0 && !s.isCloudHost(host):
		return host + " is not " + s.name + "'s API host (" + strings.Join(s.cloudHosts, ", ") + ")"
	}
	return ""
}

// expand returns the granted scopes with every scope they imply.
func (s *spec) expand(granted []string) map[string]bool {
	have := map[string]bool{}
	var add func(string)
	add = func(scope string) {
		if have[scope] {
			return
		}
		have[scope] = true
		for _, sub := range s.implies[scope] {
			add(sub)
		}
	}
	for _, g := range granted {
		add(g)
	}
	return have
}

// splitScopes reads a comma- or space-separated scope list, sorted.
func splitScopes(v string) []string {
	out := []string{}
	for f := range strings.FieldsFuncSeq(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		if !slices.Contains(out, f) {
			out = append(out, clip(f, MaxScopeLength))
		}
	}
	slices.Sort(out)
	return out
}

// withPath is base with another path.
func withPath(base *url.URL, path string) *url.URL {
	u := *base
	u.Path, u.RawPath = path, ""
	return &u
}

// underBase is an API root at suffix below the base URL's path, for
// providers whose API lives under the address the customer gives.
func underBase(suffix string) func(*url.URL, Mode) *url.URL {
	return func(base *url.URL, _ Mode) *url.URL { return withPath(base, base.Path+suffix) }
}

// cloudRoot is a fixed API root, for providers whose cloud API lives on
// its own host.
func cloudRoot(root string) func(*url.URL, Mode) *url.URL {
	return func(*url.URL, Mode) *url.URL {
		u, _ := url.Parse(root)
		return u
	}
}

// whoAmI is an identity step: GET path, the user named by the string at
// keys in the JSON answer.
func whoAmI(path string, keys ...string) func(context.Context, *run) bool {
	return func(ctx context.Context, r *run) bool {
		return r.identify(ctx, http.MethodGet, path, nil, func(a answer) bool {
			return r.active(jsonString(a.body, keys...))
		})
	}
}

// probeAt is a permission step that reads path (see run.probe).
func probeAt(what, path string, check func(answer) *verdict) func(context.Context, *run) bool {
	return func(ctx context.Context, r *run) bool { return r.probe(ctx, what, path, check) }
}

// jsonString is the string at keys in a JSON document, or "".
func jsonString(body []byte, keys ...string) string {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[k]
	}
	s, _ := v.(string)
	return s
}

// expiredIfSaid is a 401 that is "expired" when its text says so, and a
// refused credential otherwise.
func expiredIfSaid(a answer) verdict {
	if strings.Contains(strings.ToLower(a.text()), "expired") {
		return expiredAuth(a)
	}
	return failedAuth(a)
}

// Ways to put a credential on a request.

func bearer(req *http.Request, cred string) { req.Header.Set("Authorization", "Bearer "+cred) }

// basicOrBearer sends "user:secret" as Basic auth and anything else as a
// bearer token.
func basicOrBearer(req *http.Request, cred string) {
	if strings.Contains(cred, ":") {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(cred)))
		return
	}
	bearer(req, cred)
}

// rawToken sends the token itself, as ClickUp and Linear's personal keys
// want.
func rawToken(req *http.Request, cred string) { req.Header.Set("Authorization", cred) }
