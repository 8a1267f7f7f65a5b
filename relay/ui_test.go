package relay

import (
	"database/sql"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// browser is a cookie-keeping HTTP client of the status page that does
// not follow redirects, so tests see them.
type browser struct {
	t    *testing.T
	h    *harness
	c    *http.Client
	csrf string
}

func (h *harness) browser(t *testing.T) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, Timeout: waitFor,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &browser{t: t, h: h, c: c}
}

// page is a page's answer, read in full.
type page struct {
	status int
	header http.Header
	body   string
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	if m := csrfField.FindSubmatch(body); m != nil {
		b.csrf = string(m[1])
	}
	return page{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (b *browser) get(path string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.h.ep.apiURL+path, nil)
	require.NoError(b.t, err)
	return b.do(req)
}

// post sends a form; the page's CSRF token is added unless form has one.
func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.csrf)
	}
	req, err := http.NewRequest(http.MethodPost, b.h.ep.apiURL+path, strings.NewReader(form.Encode()))
	require.NoError(b.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func (b *browser) signIn(key string) page {
	b.t.Helper()
	b.get("/ui/signin")
	return b.post("/ui/signin", url.Values{"key": {key}})
}

// adminOnConnectionPage is a browser signed in with the admin key that
// has opened connection id's page, so it holds that page's CSRF token.
func (h *harness) adminOnConnectionPage(t *testing.T, id string) *browser {
	t.Helper()
	b := h.browser(t)
	require.Equal(t, http.StatusSeeOther, b.signIn(h.adminKey).status)
	b.get("/ui/connections/" + id)
	return b
}

func (b *browser) cookie(name string) *http.Cookie {
	u, _ := url.Parse(b.h.ep.apiURL + "/ui/")
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestUISignInAndOut(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "team-a")
	b := h.browser(t)

	first := b.get("/ui/")
	assert.Equal(t, http.StatusSeeOther, first.status)
	assert.Equal(t, "/ui/signin?next=/ui/", first.header.Get("Location"))

	wrong := b.signIn(wrongSecret(t, h.adminKey))
	assert.Equal(t, http.StatusUnauthorized, wrong.status)
	assert.Contains(t, wrong.body, "That API key is unknown, wrong, revoked or expired.")
	assert.Nil(t, b.cookie("postern_session"))

	in := b.signIn(h.adminKey)
	require.Equal(t, http.StatusSeeOther, in.status, in.body)
	assert.Equal(t, "/ui/", in.header.Get("Location"))
	set := in.header.Get("Set-Cookie")
	assert.Contains(t, set, "postern_session=")
	assert.Contains(t, set, "HttpOnly")
	assert.Contains(t, set, "SameSite=Strict")
	assert.Contains(t, set, "Path=/ui/")
	assert.NotContains(t, set, "Secure", "plain HTTP here")
	assert.NotContains(t, set, secretPart(h.adminKey), "the key is never in the cookie")

	list := b.get("/ui/")
	require.Equal(t, http.StatusOK, list.status)
	assert.Contains(t, list.body, c.ID)
	assert.Contains(t, list.body, "never_connected")
	assert.Equal(t, "no-store", list.header.Get("Cache-Control"))
	assert.Contains(t, list.header.Get("Content-Security-Policy"), "script-src 'self'")

	stolen := *b.cookie("postern_session")
	out := b.post("/ui/signout", url.Values{})
	assert.Equal(t, http.StatusSeeOther, out.status)
	assert.Nil(t, b.cookie("postern_session"))
	replay := h.browser(t)
	u, _ := url.Parse(h.ep.apiURL + "/ui/")
	replay.c.Jar.SetCookies(u, []*http.Cookie{&stolen})
	assert.Equal(t, http.StatusSeeOther, replay.get("/ui/").status, "a signed-out session's cookie is refused")
}

func TestUIRevokedKeyEndsTheSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.createKey(t, "team-a")
	b := h.browser(t)
	require.Equal(t, http.StatusSeeOther, b.signIn(key).status)
	require.Equal(t, http.StatusOK, b.get("/ui/").status)

	db, err := sql.Open("sqlite", h.dbPath)
	require.NoError(t, err)
	defer db.Close()
	id := strings.Split(key, "_")[1]
	_, err = db.Exec(`UPDATE api_keys SET revoked_at = ? WHERE id = ?`, time.Now().UTC().Format("2006-01-02T15:04:05.000000000Z"), id)
	require.NoError(t, err)
	assert.Equal(t, http.StatusSeeOther, b.get("/ui/").status, "the next request is signed out")
}

func TestUIExpiringKeyEndsTheSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	until := time.Now().Add(time.Second)
	k := h.newKey(t, api.CreateAPIKeyRequest{Name: "short", Workspace: "team-a", ExpiresAt: &until})
	b := h.browser(t)
	require.Equal(t, http.StatusSeeOther, b.signIn(k.Key).status)
	require.Equal(t, http.StatusOK, b.get("/ui/").status)
	time.Sleep(time.Until(until))
	assert.Equal(t, http.StatusSeeOther, b.get("/ui/").status, "the first request after the key's end is signed out")
	assert.Equal(t, http.StatusUnauthorized, b.signIn(k.Key).status, "an expired key cannot sign in again")
}

func TestUIFormsNeedTheirToken(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	b := h.adminOnConnectionPage(t, c.ID)
	for name, form := range map[string]url.Values{
		"no token":    {"csrf": {""}, "confirm": {"yes"}},
		"wrong token": {"csrf": {"forged"}, "confirm": {"yes"}},
	} {
		t.Run(name, func(t *testing.T) {
			p := b.post("/ui/connections/"+c.ID+"/revoke", form)
			assert.Equal(t, http.StatusForbidden, p.status)
			assert.Equal(t, string(protocol.Forbidden), p.header.Get("Postern-Reason"))
			assert.Contains(t, p.body, "CSRF")
		})
	}
	assert.Equal(t, "never_connected", h.status(t, c.ID, "").TunnelStatus, "not revoked")

	signIn := h.browser(t)
	signIn.get("/ui/signin")
	p := signIn.post("/ui/signin", url.Values{"key": {h.adminKey}, "csrf": {"forged"}})
	assert.Equal(t, http.StatusForbidden, p.status, "the sign-in form has its token too")
}

func TestUIRevokeNeedsConfirmation(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	b := h.adminOnConnectionPage(t, c.ID)
	ask := b.post("/ui/connections/"+c.ID+"/revoke", url.Values{})
	require.Equal(t, http.StatusOK, ask.status)
	assert.Contains(t, ask.body, "This is final")
	assert.Equal(t, "never_connected", h.status(t, c.ID, "").TunnelStatus, "asking revokes nothing")
	done := b.post("/ui/connections/"+c.ID+"/revoke", url.Values{"confirm": {"yes"}})
	require.Equal(t, http.StatusSeeOther, done.status, done.body)
	assert.Equal(t, "revoked", h.status(t, c.ID, "").TunnelStatus)
	after := b.get(done.header.Get("Location"))
	assert.Contains(t, after.body, "The connection was revoked")
}

func TestUIWorkspaceKeySeesItsWorkspaceOnly(t *testing.T) {
	t.Parallel()
	h, own := newConnHarness(t, "team-a")
	other := h.createConnection(t, "elsewhere", "team-b")
	b := h.browser(t)
	require.Equal(t, http.StatusSeeOther, b.signIn(h.createKey(t, "team-a")).status)

	list := b.get("/ui/")
	assert.Contains(t, list.body, own.ID)
	assert.NotContains(t, list.body, other.ID)
	assert.NotContains(t, list.body, "Revoke", "no admin action for a workspace key")

	hidden := b.get("/ui/connections/" + other.ID)
	missing := b.get("/ui/connections/conn_0000000000000000")
	assert.Equal(t, http.StatusNotFound, hidden.status)
	assert.Equal(t, missing.status, hidden.status)
	assert.Equal(t, string(protocol.ConnectionNotFound), hidden.header.Get("Postern-Reason"))
	assert.Equal(t, strings.ReplaceAll(missing.body, "conn_0000000000000000", other.ID), hidden.body,
		"another workspace's connection answers exactly like a missing one")

	b.get("/ui/connections/" + own.ID)
	p := b.post("/ui/connections/"+own.ID+"/revoke", url.Values{"confirm": {"yes"}})
	assert.Equal(t, http.StatusForbidden, p.status, "revoking needs an admin key")
	p = b.post("/ui/connections/"+other.ID+"/revoke", url.Values{"confirm": {"yes"}})
	assert.Equal(t, http.StatusNotFound, p.status, "and another workspace's connection is missing first")
}

func TestUISecureCookieBehindTLSProxy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.SecureCookies = true })
	b := h.browser(t)
	p := b.get("/ui/signin")
	assert.Contains(t, p.header.Get("Set-Cookie"), "Secure")
}

func TestUIStaticFiles(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.browser(t)
	for path, want := range map[string]int{
		"/ui/static/style.css": http.StatusOK,
		"/ui/static/live.js":   http.StatusOK,
		"/ui/static/":          http.StatusNotFound,
		"/ui/static/nope.js":   http.StatusNotFound,
	} {
		assert.Equal(t, want, b.get(path).status, path)
	}
	assert.Contains(t, b.get("/ui/static/live.js").body, "EventSource")
}
