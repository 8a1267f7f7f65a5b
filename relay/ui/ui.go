// Package ui serves the relay's status page at /ui/ on the API listener:
// server-rendered HTML for admins who would rather look than read JSON.
// It shows every connection a key may see with its tunnel, auth and
// allowlist state, agents, tunnels and uptime; one connection's full
// status, agents, allowlist and timeline; runs live checks; and, for
// admin keys, revokes and rotates with a confirmation step.
//
// It works without scripts (plain forms, redirects after changes); a small
// script refreshes the page from the event stream. Admins sign in with an
// API key; the session cookie names the key by id and is checked against
// the store on every request, so a revoked key is signed out at once.
// Every form carries a CSRF token.
//
// It owns only the pages: what a key may see and do, and every answer, is
// relay/admin's, exactly as the API gives them.
package ui

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/postern/postern/relay/admin"
	"github.com/postern/postern/relay/auth"
	"github.com/postern/postern/relay/store"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Config configures the status page.
type Config struct {
	// Key MACs the session cookies and CSRF tokens; every node of a
	// cluster needs the same one (DeriveKey from the cluster key). At
	// least MinKeyLen bytes; nil gives the node a random key of its own,
	// which signs everyone out when it restarts.
	Key []byte
	// SessionTTL is how long a sign-in lasts.
	SessionTTL time.Duration
	// SecureCookies marks the cookies Secure on a plain listener too,
	// for a relay behind a proxy that ends TLS.
	SecureCookies bool
	// NodeID and Version are shown at the foot of every page.
	NodeID, Version string
}

// maxFormBytes bounds a form's body.
const maxFormBytes = 64 << 10

// MinKeyLen is the shortest Config.Key accepted.
const MinKeyLen = 32

// DefaultSessionTTL is how long a sign-in lasts unless configured.
const DefaultSessionTTL = 8 * time.Hour

// Parts are what the page works with.
type Parts struct {
	// API answers every question and does every change, for the key of
	// the session.
	API *admin.API
	// Auth checks the key given at sign-in, under its limits on refused
	// credentials.
	Auth  *auth.Authenticator
	Store store.Store
	Log   *slog.Logger
	// SignedOut tells the other nodes of a cluster that a session ended
	// (they call Forget); nil on a single node.
	SignedOut func(ctx context.Context, sessionID string, until time.Time)
}

// UI is the status page's handler.
type UI struct {
	cfg      Config
	p        Parts
	sessions *sessions
	pages    map[string]*template.Template
	mux      *http.ServeMux
}

// New returns the status page.
func New(cfg Config, p Parts) (*UI, error) {
	if cfg.Key == nil {
		cfg.Key = make([]byte, MinKeyLen)
		_, _ = rand.Read(cfg.Key)
	}
	if len(cfg.Key) < MinKeyLen || cfg.SessionTTL <= 0 {
		return nil, fmt.Errorf("status page config: a key of at least %d bytes and a positive session lifetime required", MinKeyLen)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	u := &UI{cfg: cfg, p: p, sessions: newSessions(cfg.Key, cfg.SessionTTL), pages: pages}
	u.route()
	return u, nil
}

func (u *UI) route() {
	static, _ := fs.Sub(staticFiles, "static")
	m := http.NewServeMux()
	m.Handle("GET /ui/static/{file}", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /ui/signin", u.signInPage)
	m.HandleFunc("POST /ui/signin", u.signIn)
	m.HandleFunc("POST /ui/signout", u.signedIn(u.signOut))
	m.HandleFunc("GET /ui/{$}", u.signedIn(u.listPage))
	m.HandleFunc("GET /ui/connections/{id}", u.signedIn(u.connectionPage))
	m.HandleFunc("POST /ui/connections/{id}/check", u.signedIn(u.checkForm))
	m.HandleFunc("POST /ui/connections/{id}/revoke", u.signedIn(u.revokeForm))
	m.HandleFunc("POST /ui/connections/{id}/rotate", u.signedIn(u.rotateForm))
	m.HandleFunc("GET /ui/events", u.signedIn(u.events))
	u.mux = m
}

// ServeHTTP serves /ui/ with the page's security headers: no framing, no
// script or style from anywhere but the page itself, nothing cached.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	}
	u.mux.ServeHTTP(w, r)
}

// DeriveKey is the status page's key of a cluster, from the secret its
// nodes share: every node derives the same one, and it is not the cluster
// key itself.
func DeriveKey(clusterKey []byte) []byte {
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte("postern status page sessions v1"))
	return m.Sum(nil)
}

// Forget ends a session another node signed out.
func (u *UI) Forget(sessionID string, until time.Time) { u.sessions.signOut(sessionID, until) }

// visitor is who is asking: the session and its key, as of this request.
type visitor struct {
	Session session
	Key     store.APIKey
	CSRF    string
}

// signedIn serves next for a valid session whose key still stands;
// anyone else is sent to the sign-in page (an event stream is refused).
func (u *UI) signedIn(next func(http.ResponseWriter, *http.Request, visitor)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := u.visitor(r)
		if err != nil {
			if !errors.Is(err, errNoSession) && !errors.Is(err, store.ErrNotFound) {
				u.p.Log.Warn("status page: look up the session's key", "err", err)
				u.fail(w, r, nil, admin.Refusal(err))
				return
			}
			u.setCookie(w, r, sessionCookie, "", time.Time{})
			if r.Method == http.MethodGet && r.URL.Path != "/ui/events" {
				http.Redirect(w, r, "/ui/signin?next="+safeNext(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "signed out: sign in again at /ui/signin", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost && !u.sessions.validCSRF(v.Session, r.PostFormValue("csrf")) {
			u.forbidden(w, r, &v)
			return
		}
		next(w, r, v)
	}
}

// visitor reads the session cookie and looks its key up.
func (u *UI) visitor(r *http.Request) (visitor, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return visitor{}, errNoSession
	}
	now := time.Now()
	ss, err := u.sessions.parse(c.Value, now)
	if err != nil {
		return visitor{}, err
	}
	k, err := liveKey(r.Context(), u.p.Store, ss.keyID, now)
	if err != nil {
		return visitor{}, err
	}
	return visitor{Session: ss, Key: k, CSRF: u.sessions.csrf(ss)}, nil
}
