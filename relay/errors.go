package relay

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// apiError is a refusal with its reason code; the reason table decides the
// HTTP status and provider error code.
type apiError struct {
	reason     protocol.Reason
	msg        string
	retryAfter int
}

func (e *apiError) Error() string { return string(e.reason) + ": " + e.msg }

type ctxKey int

const requestIDKey ctxKey = 1

// withRequestID gives every request an id, echoed in Postern-Request-Id.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := randomHex(8)
		w.Header().Set("Postern-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
}

func requestID(r *http.Request) string {
	if id, ok := r.Context().Value(requestIDKey).(string); ok {
		return id
	}
	return ""
}

// writeError answers with the status of the reason table, the
// Postern-Reason header and the JSON error body.
func writeError(w http.ResponseWriter, r *http.Request, e apiError) {
	info := e.reason.Info()
	status := info.HTTPStatus
	if status == 0 {
		status = http.StatusBadGateway
	}
	if e.retryAfter <= 0 && info.RetryAfter {
		e.retryAfter = 1
	}
	id := requestID(r)
	h := w.Header()
	h.Set("Postern-Reason", string(e.reason))
	if id != "" {
		h.Set("Postern-Request-Id", id)
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	if status == http.StatusProxyAuthRequired {
		h.Set("Proxy-Authenticate", `Basic realm="postern"`)
	}
	writeJSON(w, status, api.Error{
		Reason:            e.reason,
		ProviderErrorCode: info.ProviderErrorCode,
		Message:           e.msg,
		RetryAfter:        e.retryAfter,
		RequestID:         id,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
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
