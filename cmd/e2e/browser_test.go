package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/api"
)

// The status page's tests run in headless Chromium (Debian's chromium
// package; .ci/run installs it). One browser serves the whole package;
// each test gets browser contexts of its own, with their own cookies.
// Screenshots of every page go to $POSTERN_ARTIFACTS/browser, else to
// .artifacts/browser at the top of the repository (git ignores it).

// envChromium names the browser to use instead of looking in PATH.
const envChromium = "POSTERN_CHROMIUM"

// chromium is the browser's path, or "" when there is none.
func chromium() string {
	if p := os.Getenv(envChromium); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser is the package's one Chromium, started by the first test that
// needs it and stopped by TestMain.
var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel func()
	err    error
}

// needBrowser returns the shared browser's context. Without a browser the
// test fails under CI (CI=true, as .ci/run sets) and is skipped elsewhere.
func needBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromium()
	if path == "" {
		msg := "headless Chromium not found: install Debian's chromium package (apt-get install -y chromium) or set " + envChromium
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (.ci/run installs it)")
		}
		t.Skip(msg)
	}
	browser.once.Do(func() {
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
			chromedp.WindowSize(1280, 1000), chromedp.Flag("disable-gpu", true))
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancelCtx := chromedp.NewContext(alloc)
		browser.ctx, browser.cancel = ctx, func() { cancelCtx(); cancelAlloc() }
		browser.err = chromedp.Do(ctx) // starts the browser
	})
	require.NoError(t, browser.err, "start %s", path)
	return browser.ctx
}

// stopBrowser ends the shared browser, if a test started it.
func stopBrowser() {
	if browser.cancel != nil {
		browser.cancel()
	}
}

// artifacts is where screenshots go, made once.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("POSTERN_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", ".artifacts")
	}
	dir, err := filepath.Abs(filepath.Join(dir, "browser"))
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// tab is one browser context (its own cookies) on a base URL.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
}

func newTab(t *testing.T, base string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(needBrowser(t), chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// The first run opens the tab, which lives as long as that run's
	// context: this one, not the timeouts of the steps.
	require.NoError(t, chromedp.Do(ctx))
	return &tab{t: t, ctx: ctx, base: base}
}

// do runs actions within 20 s.
func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	require.NoError(b.t, chromedp.Do(ctx, actions...))
}

func (b *tab) open(path string) { b.t.Helper(); b.do(chromedp.Navigate(b.base + path)) }

// text is the text of the first element sel (CSS) matches.
func (b *tab) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	require.NoError(b.t, err, "text of %s", sel)
	return strings.Join(strings.Fields(s), " ")
}

// waitFor polls a JavaScript predicate until it holds, within 15 s.
func (b *tab) waitFor(what, predicate string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate, chromedp.WithPollingTimeout(15*time.Second),
		chromedp.WithPollingInterval(50*time.Millisecond)))
	require.NoError(b.t, err, "waiting for %s", what)
}

// shot saves a screenshot of the whole page.
func (b *tab) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(b.t, err)
	path := filepath.Join(artifacts(b.t), name+".png")
	require.NoError(b.t, os.WriteFile(path, png, 0o644))
	b.t.Logf("screenshot: %s", path)
}

// signIn signs in with key through the form.
func (b *tab) signIn(key string) {
	b.t.Helper()
	b.open("/ui/")
	// The sign-in page has an h1 too: wait for the form to go, or a slow
	// answer reads the old page's heading.
	b.do(chromedp.WaitVisible(chromedp.CSS("#key")), chromedp.SendKeys(chromedp.CSS("#key"), key),
		chromedp.Submit(chromedp.CSS("#key")), chromedp.WaitNotPresent(chromedp.CSS("#key")), chromedp.WaitVisible(chromedp.CSS("h1")))
	require.Equal(b.t, "Connections", b.text("h1"))
}

// tunnelCell is a JavaScript expression for the tunnel state shown for a
// connection: in its row of the list, or on its page.
func tunnelCell(connID string) string {
	return fmt.Sprintf(`(document.querySelector('[data-connection=%q] [data-field=tunnel] .state') || document.querySelector('#status [data-field=tunnel] .state') || {textContent: ''}).textContent.trim()`, connID)
}

func TestStatusPageInABrowser(t *testing.T) {
	needBrowser(t)
	r := startRelay(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	admin := adminKey(t, r)
	ctx := t.Context()
	conn, err := r.admin.CreateConnection(ctx, "acme-gitlab", "acme")
	require.NoError(t, err)
	other, err := r.admin.CreateConnection(ctx, "beta-jira", "beta")
	require.NoError(t, err)
	acmeKey, err := r.admin.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: "acme", Workspace: "acme"})
	require.NoError(t, err)
	target := httpTarget(t)
	base := "http://" + r.apiAddr

	b := newTab(t, base)
	b.open("/ui/")
	b.do(chromedp.WaitVisible(chromedp.CSS("#key")))
	b.shot("signin")
	b.signIn(admin)
	b.waitFor("the never-connected connection", tunnelCell(conn.ID)+` === "✕ never_connected"`)
	assert.Contains(t, b.text(`[data-connection="`+conn.ID+`"]`), "AGENT_NEVER_CONNECTED")
	b.shot("list-never-connected")

	// The page follows the relay's events: no reload between the states.
	b.do(chromedp.Evaluate[chromedp.Void](`window.__sameDocument = true`))
	ag := startAgent(t, r, conn.AgentToken, fmt.Sprintf("allow:\n  - ip: 127.0.0.1\n    ports: [%d]\n", target.port), nil)
	b.waitFor("connected without a reload", tunnelCell(conn.ID)+` === "✓ connected" && window.__sameDocument === true`)
	assert.Contains(t, b.text(`[data-connection="`+conn.ID+`"]`), "test-node", "the tunnel's node")
	b.shot("list-connected")

	agentPage := httptest.NewServer(ag.a.StatusHandler())
	defer agentPage.Close()
	ap := newTab(t, agentPage.URL)
	ap.open("/")
	ap.do(chromedp.WaitVisible(chromedp.CSS("h1")))
	assert.Contains(t, ap.text("body"), "2 of 2 up")
	ap.shot("agent-page")

	// A live check from the connection's page, refused by the allowlist.
	b.open("/ui/connections/" + conn.ID)
	b.do(chromedp.WaitVisible(chromedp.CSS("#base_url")), chromedp.SendKeys(chromedp.CSS("#base_url"), "https://10.255.255.1"),
		chromedp.Submit(chromedp.CSS("#base_url")), chromedp.WaitVisible(chromedp.CSS("#check-result")))
	result := b.text("#check-result")
	assert.Contains(t, result, "ALLOWLIST_MISSING")
	assert.Contains(t, result, "Add an allow rule for host and port")
	b.shot("connection-check")

	b.open("/ui/")
	b.do(chromedp.WaitVisible(chromedp.CSS("table.connections")), chromedp.Evaluate[chromedp.Void](`window.__sameDocument = true`))
	ag.stop(t)
	b.waitFor("disconnected without a reload", tunnelCell(conn.ID)+` === "✕ disconnected" && window.__sameDocument === true`)
	b.shot("list-disconnected")

	// Revoke, through its confirmation.
	b.open("/ui/connections/" + conn.ID)
	b.do(chromedp.Click(chromedp.CSS("#manage button.danger")), chromedp.WaitVisible(chromedp.CSS("section.confirm")))
	assert.Contains(t, b.text("section.confirm"), "This is final")
	b.shot("revoke-confirm")
	b.do(chromedp.Click(chromedp.CSS("section.confirm button.danger")), chromedp.WaitVisible(chromedp.CSS("#status")))
	b.waitFor("revoked", tunnelCell(conn.ID)+` === "✕ revoked"`)
	assert.Contains(t, b.text("#status"), "CONNECTION_REVOKED")
	b.shot("connection-revoked")
	st, err := r.admin.Status(ctx, conn.ID, "")
	require.NoError(t, err)
	assert.Equal(t, "revoked", st.TunnelStatus)

	// A form whose CSRF token was taken out is refused.
	b.open("/ui/connections/" + other.ID)
	b.do(chromedp.WaitVisible(chromedp.CSS("#base_url")),
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#check input[name=csrf]').remove()`),
		chromedp.SendKeys(chromedp.CSS("#base_url"), "https://10.255.255.1"), chromedp.Submit(chromedp.CSS("#base_url")),
		chromedp.WaitVisible(chromedp.CSS("section.failure")))
	assert.Contains(t, b.text("section.failure"), "FORBIDDEN")
	assert.Contains(t, b.text("section.failure"), "CSRF")
	b.shot("csrf-refused")

	// A workspace key sees its workspace only, by URL too.
	w := newTab(t, base)
	w.signIn(acmeKey.Key)
	list := w.text("main")
	assert.Contains(t, list, conn.ID)
	assert.NotContains(t, list, other.ID)
	w.open("/ui/connections/" + other.ID)
	w.do(chromedp.WaitVisible(chromedp.CSS("section.failure")))
	assert.Contains(t, w.text("section.failure"), "CONNECTION_NOT_FOUND")
	assert.Contains(t, w.text("section.failure"), strconv.Quote(other.ID))
	w.shot("workspace-not-found")
}

// TestStatusPageTokenRotation: rotating from the page shows the new token
// once, behind a confirmation.
func TestStatusPageTokenRotation(t *testing.T) {
	needBrowser(t)
	r := startRelay(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	conn, err := r.admin.CreateConnection(t.Context(), "rotating", "acme")
	require.NoError(t, err)
	b := newTab(t, "http://"+r.apiAddr)
	b.signIn(adminKey(t, r))
	b.open("/ui/connections/" + conn.ID)
	b.do(chromedp.WaitVisible(chromedp.CSS("#manage")))
	b.shot("connection-never-connected")
	b.do(chromedp.Click(chromedp.CSS(`#manage form[action$="/rotate"] button`)), chromedp.WaitVisible(chromedp.CSS("section.confirm")))
	b.do(chromedp.Click(chromedp.CSS("section.confirm button.danger")), chromedp.WaitVisible(chromedp.CSS("pre.secret")))
	tok := b.text("pre.secret")
	assert.True(t, strings.HasPrefix(tok, "pat_"), "the new token, shown once: %q", tok)
	assert.Contains(t, b.text("section.token"), "Shown only this once")
	b.shot("token-rotated")
}
