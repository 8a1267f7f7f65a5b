package protocol

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is a refusal or failure named by its reason code. Every hop uses
// it: the agent's refusals, the relay's CONNECT and API answers, and the
// clients that read them, which match it with errors.As. Its JSON is the
// error body of spec.md section 9.
type Error struct {
	Reason Reason `json:"reason"`
	// ProviderErrorCode is the reason's provider code from the table;
	// empty where the table has none.
	ProviderErrorCode string `json:"provider_error_code,omitempty"`
	// Message is for people; it has no stable format.
	Message string `json:"message"`
	// RetryAfter is in seconds; 0 means none.
	RetryAfter int `json:"retry_after,omitempty"`
	// RequestID names the request in every hop's logs.
	RequestID string `json:"request_id"`
}

// Errorf returns an Error of reason with a formatted message and the
// reason's provider code.
func Errorf(reason Reason, format string, args ...any) *Error {
	return &Error{Reason: reason, ProviderErrorCode: reason.Info().ProviderErrorCode, Message: fmt.Sprintf(format, args...)}
}

// Error reads "REASON: message".
func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Reason)
	}
	return string(e.Reason) + ": " + e.Message
}

// Status is the HTTP status that answers e: the reason table's, else 502.
func (e *Error) Status() int {
	if s := e.Reason.Info().HTTPStatus; s != 0 {
		return s
	}
	return http.StatusBadGateway
}

// Normalized returns e as it goes on the wire: the provider code from the
// table, and a Retry-After of at least one second for the reasons that
// always carry one.
func (e *Error) Normalized() Error {
	out := *e
	info := e.Reason.Info()
	out.ProviderErrorCode = info.ProviderErrorCode
	if out.RetryAfter <= 0 {
		out.RetryAfter = 0
		if info.RetryAfter {
			out.RetryAfter = 1
		}
	}
	return out
}

// MaxRetryAfter caps a Retry-After read from a peer.
const MaxRetryAfter = 24 * time.Hour

// ParseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date,
// as a wait from now: at least 0, at most MaxRetryAfter. It reports false
// for an absent or unusable value.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(MaxRetryAfter/time.Second) { // only digits: too large
			return MaxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := at.Sub(now)
	switch {
	case d <= 0:
		return 0, true
	case d >= MaxRetryAfter: // also where Sub saturates
		return MaxRetryAfter, true
	}
	return d, true
}
