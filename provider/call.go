package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
)

// answer is one provider answer, its body bounded.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// jsonBody decodes the answer's body into v; false when it is not JSON of
// that shape.
func (a answer) jsonBody(v any) bool { return json.Unmarshal(a.body, v) == nil }

// text is the start of the body as one printable line, for details.
func (a answer) text() string {
	s := strings.Join(strings.Fields(string(a.body)), " ")
	return clip(s, 200)
}

// verdict is what one provider answer means for the check; code is empty
// when the answer is fine.
type verdict struct {
	code   string
	auth   AuthStatus
	retry  time.Duration
	detail string
	// missing are scopes the provider named as missing.
	missing []string
}

// call sends one request to the provider's API: path is relative to the
// API root ("user", "rest/api/2/myself"), or absolute. A transport failure
// becomes a verdict too: the provider cannot be reached.
func (r *run) call(ctx context.Context, method, path string, body []byte) (answer, *verdict) {
	return r.send(ctx, method, path, body, nil)
}

// send is call with extra headers.
func (r *run) send(ctx context.Context, method, path string, body []byte, extra http.Header) (answer, *verdict) {
	ctx, cancel := r.stepContext(ctx)
	defer cancel()
	target, err := r.api.Parse(path)
	if err != nil {
		return answer{}, &verdict{code: CodeBaseURLUnreachable, detail: "bad API path " + path}
	}
	req, err := http.NewRequestWithContext(ctx, method, target.String(), bytes.NewReader(body))
	if err != nil {
		return answer{}, &verdict{code: CodeBaseURLUnreachable, detail: "build request: " + err.Error()}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "postern-provider-check")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range extra {
		req.Header[k] = v
	}
	r.spec.authorize(req, r.req.Credential.Reveal())
	resp, err := r.hc.Do(req)
	if err != nil {
		return answer{}, r.transportVerdict(method, target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBody))
	if err != nil {
		return answer{}, &verdict{code: CodeBaseURLUnreachable, detail: method + " " + redactURL(target) + ": read answer: " + err.Error()}
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// transportVerdict names a call that got no answer. A Postern refusal on
// the way (the path broke after the connectivity step) keeps its code.
func (r *run) transportVerdict(method string, target *url.URL, err error) *verdict {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // it repeats the URL, query and all
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		code := pe.Reason.Info().ProviderErrorCode
		if code == "" {
			code = CodeConnectivityBlocked
		}
		if r.st.Connectivity != nil {
			r.st.Connectivity.Reason = pe.Reason
		}
		return &verdict{code: code, retry: time.Duration(pe.RetryAfter) * time.Second, detail: method + " " + redactURL(target) + ": " + pe.Error()}
	}
	return &verdict{code: CodeBaseURLUnreachable, detail: method + " " + redactURL(target) + ": " + err.Error()}
}

// redactURL names a request without its query, where some APIs put keys.
func redactURL(u *url.URL) string { return u.Scheme + "://" + u.Host + u.EscapedPath() }

// judge is the common meaning of an answer; providers refine 401 and 403
// and their rate-limit signals through their spec.
func (r *run) judge(a answer) *verdict {
	if wait, ok := r.spec.limited(a, r.now()); ok {
		return &verdict{code: CodeRateLimited, retry: wait, detail: r.spec.name + " rate limit: answered HTTP " +
			strconv.Itoa(a.status) + ", retry after " + wait.Round(time.Second).String()}
	}
	switch {
	case a.status >= 200 && a.status <= 299:
		return nil
	case a.status == http.StatusUnauthorized:
		v := r.spec.unauthorized(a)
		return &v
	case a.status == http.StatusForbidden:
		v := r.spec.forbidden(a)
		return &v
	case a.status >= 300 && a.status <= 399:
		return &verdict{code: CodeBaseURLUnreachable, detail: fmt.Sprintf("answered HTTP %d, a redirect to %s: the base URL is not %s's API root, or a sign-in page stands in front of it",
			a.status, clip(a.header.Get("Location"), 100), r.spec.name)}
	case a.status == http.StatusNotFound:
		return &verdict{code: CodeBaseURLUnreachable, detail: "answered HTTP 404: the base URL is not " + r.spec.name + "'s API root"}
	}
	return &verdict{code: CodeBaseURLUnreachable, detail: fmt.Sprintf("answered HTTP %d: %s", a.status, a.text())}
}

// failedAuth is the plain 401: the provider refused the credential and
// said no more.
func failedAuth(a answer) verdict {
	return verdict{code: CodeAuthFailed, auth: AuthFailed, detail: "the credential was refused (HTTP " + strconv.Itoa(a.status) + "): " + a.text()}
}

// revokedAuth and expiredAuth are a 401 whose provider said why.
func revokedAuth(a answer) verdict {
	return verdict{code: CodeTokenRevoked, auth: AuthRevoked, detail: "the credential was revoked (HTTP " + strconv.Itoa(a.status) + "): " + a.text()}
}

func expiredAuth(a answer) verdict {
	return verdict{code: CodeTokenRevoked, auth: AuthExpired, detail: "the credential expired (HTTP " + strconv.Itoa(a.status) + "): " + a.text()}
}

// noPermission is a 403 on what the workflow needs with the scopes there.
func noPermission(a answer) verdict {
	return verdict{code: CodePermissionMissing, detail: "the provider refused access (HTTP " + strconv.Itoa(a.status) + "): " + a.text()}
}

// identify runs the identity call at path and hands a good answer to ok,
// which records who the credential is.
func (r *run) identify(ctx context.Context, method, path string, body []byte, ok func(answer) bool) bool {
	a, v := r.call(ctx, method, path, body)
	if v == nil {
		v = r.judge(a)
	}
	if v != nil {
		return r.failWith(StepIdentity, *v)
	}
	return ok(a)
}

// probe is the permission step: a 2xx answer at path passes (check may
// refine it), anything else is judged.
func (r *run) probe(ctx context.Context, what, path string, check func(answer) *verdict) bool {
	a, v := r.call(ctx, http.MethodGet, path, nil)
	if v == nil {
		v = r.judge(a)
	}
	if v == nil && check != nil {
		v = check(a)
	}
	if v != nil {
		if v.code == CodeAuthFailed {
			// The identity call just accepted the credential: a refusal
			// here is about this resource, not the credential.
			v.code, v.auth = CodePermissionMissing, AuthUnknown
		}
		return r.failWith(StepPermission, *v)
	}
	return r.pass(StepPermission, what)
}

// Rate-limit signals shared by several providers.

// retryAfter reads the standard Retry-After header.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	return protocol.ParseRetryAfter(h.Get("Retry-After"), now)
}

// epochReset reads a header holding the reset time in unix seconds (or
// milliseconds, when ms is set) as a wait from now.
func epochReset(h http.Header, name string, now time.Time, ms bool) (time.Duration, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(h.Get(name)), 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	at := time.Unix(n, 0)
	if ms {
		at = time.UnixMilli(n)
	}
	return min(max(at.Sub(now), 0), protocol.MaxRetryAfter), true
}

// defaultWait is the cooldown when a provider signals a rate limit but not
// its end: one minute, as GitHub asks for its secondary limits.
const defaultWait = time.Minute

// limit429 is the common signal: 429 with Retry-After, else the reset
// header named (unix seconds), else defaultWait.
func limit429(resetHeader string) func(answer, time.Time) (time.Duration, bool) {
	return func(a answer, now time.Time) (time.Duration, bool) {
		if a.status != http.StatusTooManyRequests {
			return 0, false
		}
		if wait, ok := retryAfter(a.header, now); ok {
			return wait, true
		}
		if resetHeader != "" {
			if wait, ok := epochReset(a.header, resetHeader, now, false); ok {
				return wait, true
			}
		}
		return defaultWait, true
	}
}
