package provider

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"unicode"
)

// Bounds on a Request.
const (
	MaxCredential  = 8 << 10
	MaxBaseURL     = 2048
	MaxScopes      = 64
	MaxScopeLength = 128
)

// ErrBadRequest wraps every problem Validate finds in a Request.
var ErrBadRequest = errors.New("bad provider check request")

// Credential is a provider secret: a token, "user:password" or
// "email:token" for Basic auth, "key:token" for Trello, a signing secret
// for webhooks. Its value never reaches fmt or slog output.
type Credential struct{ secret string }

// NewCredential wraps s, trimmed of surrounding white space (a trailing
// newline of a credential file is not part of it).
func NewCredential(s string) Credential { return Credential{secret: strings.TrimSpace(s)} }

// Reveal returns the secret, for the one place that sends it.
func (c Credential) Reveal() string { return c.secret }

// String hides the secret.
func (c Credential) String() string { return "[credential]" }

// Format makes every fmt verb print String.
func (c Credential) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// LogValue hides the secret from slog.
func (c Credential) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalText hides the secret from encoders.
func (c Credential) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// Request is one provider connection to check.
type Request struct {
	// Provider is the provider key: jira, github, gitlab, bitbucket,
	// trello, linear, azure-devops, youtrack, asana, clickup or webhook.
	Provider string
	Mode     Mode
	// BaseURL is the provider's address as the product saved it: the
	// site ("https://acme.atlassian.net", "https://gitlab.corp:8443",
	// "https://ghe.corp/api/v3", "https://dev.azure.com/acme") or, for a
	// webhook, the receiver's URL.
	BaseURL    string
	Credential Credential
	// RequiredScopes are the scopes the workflow needs, in the provider's
	// own names ("repo", "read_api", "read:org").
	RequiredScopes []string
	// Connection is the Postern connection of a self-hosted provider.
	Connection string
}

// Validate reports every problem at once; the error never carries the
// credential.
func (r Request) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...))
	}
	if _, ok := lookup(r.Provider); !ok {
		bad("unknown provider %q; known: %s", clip(r.Provider, 40), strings.Join(Keys(), ", "))
	}
	switch r.Mode {
	case ModeCloud:
	case ModeSelfHosted:
		if r.Connection == "" {
			bad("a self-hosted provider needs the Postern connection id")
		}
	default:
		bad("deployment mode %q: want cloud or self-hosted", clip(string(r.Mode), 40))
	}
	if r.BaseURL == "" || len(r.BaseURL) > MaxBaseURL {
		bad("base URL must have 1 to %d characters", MaxBaseURL)
	}
	cred := r.Credential.secret
	switch {
	case cred == "":
		bad("the credential is empty")
	case len(cred) > MaxCredential:
		bad("the credential is longer than %d bytes", MaxCredential)
	case strings.ContainsFunc(cred, unicode.IsControl):
		bad("the credential contains control characters")
	}
	if len(r.RequiredScopes) > MaxScopes {
		bad("more than %d required scopes", MaxScopes)
	}
	for _, s := range r.RequiredScopes {
		if s == "" || len(s) > MaxScopeLength || strings.ContainsFunc(s, func(c rune) bool { return c <= ' ' || c > '~' || c == ',' }) {
			bad("required scope %q: 1 to %d printable characters, no spaces or commas", clip(s, 40), MaxScopeLength)
		}
	}
	return errors.Join(errs...)
}

// clip shortens s for an error message and drops control characters.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
