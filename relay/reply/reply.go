// Package reply writes the relay's HTTP answers alike on every listener:
// the request id each answer carries, JSON bodies, and errors named by a
// reason code with the status, headers and body of spec.md section 9.
//
// It decides nothing: which reason answers a request is the caller's
// business; the reason table in package protocol decides the status.
package reply

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/postern/postern/protocol"
)

type ctxKey struct{}

// NewID returns n random bytes in hex, for request, session and node ids.
func NewID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// WithRequestID gives every request an id, echoed in Postern-Request-Id and
// sent to the agent in the request frame, so one id follows a request
// through every hop's logs.
func WithRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := NewID(8)
		w.Header().Set("Postern-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	})
}

// RequestID is the id WithRequestID gave r, or "".
func RequestID(r *http.Request) string {
	id, _ := r.Context().Value(ctxKey{}).(string)
	return id
}

// Error answers with e: the status of the reason table, Postern-Reason,
// Postern-Request-Id, Retry-After where the reason carries one, the proxy
// challenge with 407, and the JSON error body.
func Error(w http.ResponseWriter, r *http.Request, e *protocol.Error) {
	status, body := prepare(w, r, e)
	JSON(w, status, body)
}

// prepare sets e's headers on w and returns the status and body to answer
// with.
func prepare(w http.ResponseWriter, r *http.Request, e *protocol.Error) (int, protocol.Error) {
	return prepareHeader(w.Header(), RequestID(r), e)
}

// prepareHeader sets on h the headers of e answered under request id.
func prepareHeader(h http.Header, id string, e *protocol.Error) (int, protocol.Error) {
	body := e.Normalized()
	body.RequestID = id
	body.Message = Clip(body.Message, MaxMessage)
	h.Set("Postern-Reason", string(body.Reason))
	if body.RequestID != "" {
		h.Set("Postern-Request-Id", body.RequestID)
	}
	if body.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(body.RetryAfter))
	}
	status := e.Status()
	switch status {
	case http.StatusProxyAuthRequired:
		h.Set("Proxy-Authenticate", `Basic realm="postern"`)
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="postern"`)
	}
	return status, body
}

// JSON answers with v as one JSON document and a newline, never cached.
func JSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"reason":"INTERNAL_ERROR","message":"encode response"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// MaxMessage bounds the message of an error answer: it may carry an
// agent's text (already cut to a kilobyte where the relay received it)
// with the relay's context around it.
const MaxMessage = 4096

// Clip cuts s to at most n bytes on a rune boundary, marking the cut. The
// result shares no memory with s, so a cut value does not keep a whole
// frame alive.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := max(n-len(mark), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return string([]byte(s[:cut])) + mark
}
