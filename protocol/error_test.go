package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// maxRetryAfterSecs is MaxRetryAfter in whole seconds.
const maxRetryAfterSecs = int(MaxRetryAfter / time.Second)

// retryAfterSecs is ParseRetryAfter rounded up to whole seconds, the way
// every answer carries it.
func retryAfterSecs(v string, now time.Time) (int, bool) {
	d, ok := ParseRetryAfter(v, now)
	return int((d + time.Second - 1) / time.Second), ok
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := map[string]struct {
		in   string
		want int
		ok   bool
	}{
		"seconds":          {in: "120", want: 120, ok: true},
		"zero":             {in: "0", want: 0, ok: true},
		"padded":           {in: " 7 ", want: 7, ok: true},
		"capped":           {in: "999999999", want: maxRetryAfterSecs, ok: true},
		"huge":             {in: "99999999999999999999999", want: maxRetryAfterSecs, ok: true},
		"http date":        {in: now.Add(45 * time.Second).Format(http.TimeFormat), want: 45, ok: true},
		"date in the past": {in: now.Add(-time.Hour).Format(http.TimeFormat), want: 0, ok: true},
		"rfc850 date":      {in: "Wednesday, 04-Mar-26 05:07:07 GMT", want: 60, ok: true},
		"empty":            {in: ""},
		"negative":         {in: "-5"},
		"fraction":         {in: "1.5"},
		"garbage":          {in: "soon"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := retryAfterSecs(tc.in, now)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", "99999999999999999999", "1e3", " 5"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, v string) {
		n, ok := retryAfterSecs(v, now)
		if !ok {
			require.Zero(t, n)
			return
		}
		require.GreaterOrEqual(t, n, 0)
		require.LessOrEqual(t, n, maxRetryAfterSecs)
	})
}

func TestErrorIsTheAnswerBody(t *testing.T) {
	e := Errorf(AllowlistMissing, "no allow rule covers %s", "gitlab.other:443")
	e.RequestID = "3f9a1c0d2b7e4a58"
	body, err := json.Marshal(e)
	require.NoError(t, err)
	// spec.md section 9's example body.
	assert.JSONEq(t, `{"reason":"ALLOWLIST_MISSING","provider_error_code":"PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED","message":"no allow rule covers gitlab.other:443","request_id":"3f9a1c0d2b7e4a58"}`, string(body))
	assert.Equal(t, http.StatusForbidden, e.Status())
	assert.Equal(t, "ALLOWLIST_MISSING: no allow rule covers gitlab.other:443", e.Error())

	var got *Error
	require.True(t, errors.As(fmt.Errorf("dial: %w", e), &got), "matched through a chain with errors.As")
	assert.Equal(t, AllowlistMissing, got.Reason)
}

func TestErrorNormalized(t *testing.T) {
	busy := (&Error{Reason: AgentBusy}).Normalized()
	assert.Equal(t, 1, busy.RetryAfter, "a reason that always carries Retry-After gets at least 1 s")
	assert.Equal(t, ProviderRateLimited, busy.ProviderErrorCode)
	blocked := (&Error{Reason: TargetBlocked, ProviderErrorCode: "made up", RetryAfter: -3}).Normalized()
	assert.Equal(t, ProviderBaseURLBlocked, blocked.ProviderErrorCode, "the table decides the provider code")
	assert.Zero(t, blocked.RetryAfter)
	assert.Equal(t, http.StatusBadGateway, (&Error{Reason: "FROM_A_NEWER_AGENT"}).Status())
}

func TestVerdictReason(t *testing.T) {
	tests := map[string]Reason{
		"missing":    AllowlistMissing,
		"blocked":    TargetBlocked,
		"bad_target": BadTarget,
		"allowed":    ReasonUnknown,
		"unknown":    ReasonUnknown,
		"":           ReasonUnknown,
		"Missing":    ReasonUnknown, // the words are exact
	}
	for verdict, want := range tests {
		t.Run(verdict, func(t *testing.T) {
			assert.Equal(t, want, VerdictReason(verdict))
		})
	}
}
