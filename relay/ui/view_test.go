package ui

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

// TestRemediesAreTheDiagnosisTables: the page says what the docs say,
// word for word, in the diagnosis table's last column.
func TestRemediesAreTheDiagnosisTables(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	require.NoError(t, err)
	var column []string
	for _, line := range strings.Split(string(doc), "\n") {
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if strings.HasPrefix(line, "| ") && len(cells) == 6 {
			column = append(column, cells[5])
		}
	}
	require.NotEmpty(t, column)
	for reason, text := range remedies {
		assert.Contains(t, column, text, "%s: the remediation is not the table's", reason)
		assert.True(t, reason.Known(), "%s is a reason code", reason)
	}
	assert.Contains(t, column, flappingRemedy)
}

func TestRemedyRendersCodeSpans(t *testing.T) {
	assert.Equal(t, "Install the connection&#39;s current token in <code>token_file</code>, or rotate it and install the new one.",
		string(remedy(protocol.AgentAuthFailed)))
	assert.Empty(t, remedy(protocol.BadTarget), "a reason the table does not list has no remediation")
	assert.Equal(t, "a &lt;b&gt; <code>&amp;</code>", string(codeSpans("a <b> `&`")))
}

func TestFormats(t *testing.T) {
	for in, want := range map[float64]string{0.5: "500ms", 42: "42s", 125: "2m 5s", 7260: "2h 1m", 90000: "1d 1h"} {
		assert.Equal(t, want, duration(in))
	}
	assert.Equal(t, "99.9%", percent(0.99999), "never rounds up to 100")
	assert.Equal(t, "100.0%", percent(1))
	assert.Equal(t, "—", when(time.Time{}))
	assert.Equal(t, "—", when((*time.Time)(nil)))
	assert.Equal(t, "2025-03-14 15:09:26 UTC", when(time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)))
	assert.Equal(t, shownState{"connected", "✓", "good"}, stateOf("connected"))
	assert.Equal(t, shownState{"what", "?", "none"}, stateOf("what"))
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/connections/c1":       "/ui/connections/c1",
		"/ui/?q=a":                 "/ui/?q=a",
		"https://evil.example/ui/": "/ui/",
		"//evil.example/ui/":       "/ui/",
		"/ui/signin?next=/x":       "/ui/",
		"/ui/\\evil":               "/ui/",
		"":                         "/ui/",
	} {
		assert.Equal(t, want, safeNext(in), in)
	}
}

func TestSessionCookies(t *testing.T) {
	s := newSessions([]byte("0123456789abcdef0123456789abcdef"), time.Hour)
	now := time.Now()
	ss := s.start("keyid", now)
	v := s.cookieValue(ss)
	got, err := s.parse(v, now)
	require.NoError(t, err)
	assert.Equal(t, ss.keyID, got.keyID)
	assert.Equal(t, ss.id, got.id)
	_, err = s.parse(v, now.Add(2*time.Hour))
	assert.ErrorIs(t, err, errNoSession, "expired")
	forged := strings.Replace(v, ".keyid.", ".other.", 1)
	_, err = s.parse(forged, now)
	assert.ErrorIs(t, err, errNoSession, "another key id breaks the MAC")
	other := newSessions([]byte("another key of thirty-two bytes!"), time.Hour)
	_, err = other.parse(v, now)
	assert.ErrorIs(t, err, errNoSession, "a node with another key refuses it")
	assert.True(t, s.validCSRF(got, s.csrf(ss)))
	assert.False(t, s.validCSRF(got, ""))
	assert.False(t, other.validCSRF(got, s.csrf(ss)))
	s.signOut(ss.id, ss.until)
	_, err = s.parse(v, now)
	assert.ErrorIs(t, err, errNoSession, "signed out")
	assert.Equal(t, DeriveKey([]byte("k")), DeriveKey([]byte("k")))
	assert.NotEqual(t, DeriveKey([]byte("k")), DeriveKey([]byte("l")))
}
