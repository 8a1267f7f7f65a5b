package ui

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/relay/auth"
	"github.com/postern/postern/relay/store"
)

// Cookie names. Both are HttpOnly and SameSite=Strict, scoped to /ui/.
const (
	sessionCookie = "postern_session"
	// signInCookie carries the sign-in form's CSRF token (double submit):
	// there is no session yet to derive one from.
	signInCookie = "postern_signin"
)

// session is a signed-in browser: the API key it signed in with (by id,
// never the key itself), its own id, and when it ends. The cookie carries
// these with a MAC, so any node holding the same MAC key accepts it; the
// key is looked up in the store on every request, so revoking it ends the
// session at once.
type session struct {
	keyID string
	id    string
	until time.Time
}

// sessions makes and checks session cookies and remembers sign-outs.
type sessions struct {
	key []byte
	ttl time.Duration

	mu        sync.Mutex
	signedOut map[string]time.Time // session id -> its end, forgotten after
}

func newSessions(key []byte, ttl time.Duration) *sessions {
	return &sessions{key: key, ttl: ttl, signedOut: map[string]time.Time{}}
}

// mac is the MAC of the parts of a value, joined so no part can run
// into the next.
func (s *sessions) mac(parts ...string) string {
	m := hmac.New(sha256.New, s.key)
	for _, p := range parts {
		m.Write([]byte(strconv.Itoa(len(p)) + ":" + p + "|"))
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// start makes a session for keyID from now.
func (s *sessions) start(keyID string, now time.Time) session {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return session{keyID: keyID, id: hex.EncodeToString(b[:]), until: now.Add(s.ttl).Truncate(time.Second)}
}

// cookieValue is the session as its cookie carries it.
func (s *sessions) cookieValue(ss session) string {
	exp := strconv.FormatInt(ss.until.Unix(), 10)
	return strings.Join([]string{"v1", ss.keyID, ss.id, exp, s.mac("session", ss.keyID, ss.id, exp)}, ".")
}

var errNoSession = errors.New("no valid session")

// parse checks a cookie value: its MAC, its end, and that it was not
// signed out.
func (s *sessions) parse(v string, now time.Time) (session, error) {
	parts := strings.Split(v, ".")
	if len(parts) != 5 || parts[0] != "v1" || len(v) > 512 {
		return session{}, errNoSession
	}
	want := s.mac("session", parts[1], parts[2], parts[3])
	if subtle.ConstantTimeCompare([]byte(want), []byte(parts[4])) != 1 {
		return session{}, errNoSession
	}
	exp, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil || !now.Before(time.Unix(exp, 0)) {
		return session{}, errNoSession
	}
	ss := session{keyID: parts[1], id: parts[2], until: time.Unix(exp, 0)}
	if s.isSignedOut(ss.id, now) {
		return session{}, errNoSession
	}
	return ss, nil
}

// csrf is the CSRF token of a session's forms: a MAC of its id, so every
// node can check it without shared state.
func (s *sessions) csrf(ss session) string { return s.mac("csrf", ss.id) }

// validCSRF compares a form's token with the session's in constant time.
func (s *sessions) validCSRF(ss session, token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(s.csrf(ss)), []byte(token)) == 1
}

// signOut remembers that a session ended before its time, until that
// time.
func (s *sessions) signOut(id string, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signedOut[id] = until
}

func (s *sessions) isSignedOut(id string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sid, until := range s.signedOut {
		if !now.Before(until) {
			delete(s.signedOut, sid)
		}
	}
	_, out := s.signedOut[id]
	return out
}

// liveKey looks a session's API key up again: a key revoked, expired (or
// gone) since the sign-in ends the session.
func liveKey(ctx context.Context, st store.Store, keyID string, now time.Time) (store.APIKey, error) {
	k, err := st.GetAPIKey(ctx, keyID)
	if err != nil {
		return store.APIKey{}, err
	}
	if auth.KeyEnded(k, now) != nil {
		return store.APIKey{}, errNoSession
	}
	return k, nil
}

// setCookie writes a cookie of the page: HttpOnly, SameSite=Strict, under
// /ui/, Secure on TLS (or when configured so behind a proxy ending TLS).
// A zero until deletes it.
func (u *UI) setCookie(w http.ResponseWriter, r *http.Request, name, value string, until time.Time) {
	c := &http.Cookie{
		Name: name, Value: value, Path: "/ui/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: u.cfg.SecureCookies || r.TLS != nil,
	}
	if until.IsZero() {
		c.MaxAge = -1
	} else {
		c.Expires = until
	}
	http.SetCookie(w, c)
}
