package provider

import (
	"strconv"
	"time"

	"github.com/postern/postern/protocol"
)

// Provider error codes: the page's table. The four a Postern reason can
// map to are protocol's; the other four only the product can tell, since
// TLS to the provider is end to end.
const (
	CodeConnectivityBlocked = protocol.ProviderConnectivityBlocked
	CodeBaseURLBlocked      = protocol.ProviderBaseURLBlocked
	CodeBaseURLUnreachable  = protocol.ProviderBaseURLUnreachable
	CodeRateLimited         = protocol.ProviderRateLimited
	CodeAuthFailed          = "PROVIDER_AUTH_FAILED"
	CodeTokenRevoked        = "PROVIDER_TOKEN_REVOKED"
	CodePermissionMissing   = "PROVIDER_PERMISSION_MISSING"
	CodeScopeMissing        = "PROVIDER_SCOPE_MISSING"
)

// Codes lists every provider_error_code a State can carry, in the page's
// order.
func Codes() []string {
	return []string{CodeConnectivityBlocked, CodeBaseURLUnreachable, CodeBaseURLBlocked, CodeAuthFailed,
		CodeTokenRevoked, CodePermissionMissing, CodeScopeMissing, CodeRateLimited}
}

// Mode is a provider connection's deployment mode.
type Mode string

// Deployment modes.
const (
	ModeCloud      Mode = "cloud"
	ModeSelfHosted Mode = "self-hosted"
)

// AuthStatus is what the provider said of the credential. The zero value
// is AuthUnknown: the check did not get that far, or the provider did not
// say.
type AuthStatus uint8

// Auth statuses.
const (
	AuthUnknown AuthStatus = iota
	// AuthActive: the provider accepted the credential.
	AuthActive
	// AuthFailed: the provider refused it without saying it was revoked
	// or expired (a wrong or deleted credential looks the same).
	AuthFailed
	// AuthRevoked: the provider said it was revoked.
	AuthRevoked
	// AuthExpired: the provider said it expired, or its expiry passed.
	AuthExpired
)

var authNames = [...]string{AuthUnknown: "unknown", AuthActive: "active", AuthFailed: "failed", AuthRevoked: "revoked", AuthExpired: "expired"}

// String returns the status's stable name.
func (a AuthStatus) String() string {
	if int(a) < len(authNames) {
		return authNames[a]
	}
	return "auth(" + strconv.Itoa(int(a)) + ")"
}

// MarshalText encodes the status as its String form.
func (a AuthStatus) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText reads a status written by MarshalText.
func (a *AuthStatus) UnmarshalText(b []byte) error {
	for i, n := range authNames {
		if n == string(b) {
			*a = AuthStatus(i)
			return nil
		}
	}
	*a = AuthUnknown
	return nil
}

// State is the outcome of one provider check: the page's state object.
// Every field is always present in its JSON; absent values are null, empty
// lists or zero.
type State struct {
	ProviderKey    string `json:"provider_key"`
	DeploymentMode Mode   `json:"deployment_mode"`
	BaseURL        string `json:"base_url"`
	// Ready: base URL safe, mode matches, auth active, required scopes
	// granted, permission present, no rate-limit cooldown.
	Ready bool `json:"ready"`
	// ProviderErrorCode is the first failing step's code; empty when
	// ready.
	ProviderErrorCode string     `json:"provider_error_code"`
	AuthStatus        AuthStatus `json:"auth_status"`
	RequiredScopes    []string   `json:"required_scopes"`
	// GrantedScopes is null where the provider does not list a
	// credential's scopes; the permission probe stands in then.
	GrantedScopes []string `json:"granted_scopes"`
	MissingScopes []string `json:"missing_scopes"`
	// TokenExpiresAt is null where the provider does not say.
	TokenExpiresAt *time.Time `json:"token_expires_at"`
	// RetryAfter is in seconds, with PROVIDER_RATE_LIMITED.
	RetryAfter int `json:"retry_after"`
	// Connectivity is the Postern path of a self-hosted provider; null
	// for cloud.
	Connectivity *Connectivity `json:"connectivity"`
	Steps        []Step        `json:"steps"`
	// Message says what is wrong and what to do, for people.
	Message string `json:"message"`
}

// Connectivity is what Postern said of the path to a self-hosted provider.
type Connectivity struct {
	// Reason is the Postern reason code that blocked the path; empty when
	// the path works.
	Reason protocol.Reason `json:"reason"`
	// TunnelStatus and AllowlistStatus are the connection's status for
	// the base URL, as the relay reports them; "unknown" when the status
	// could not be read.
	TunnelStatus    string `json:"tunnel_status"`
	AllowlistStatus string `json:"allowlist_status"`
}

// Step is one check that ran, in order, up to the first that failed.
type Step struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Step names, in the page's order.
const (
	StepBaseURL      = "base_url"
	StepConnectivity = "connectivity"
	StepIdentity     = "identity"
	StepScopes       = "scopes"
	StepPermission   = "permission"
	StepDelivery     = "delivery"
)

// advice is the message's second half: what to do about each code.
var advice = map[string]string{
	CodeConnectivityBlocked: "fix the Postern connection (agent, tunnel, allowlist) first; credential changes do not matter until the path works",
	CodeBaseURLBlocked:      "use the provider's own https address, or a self-hosted connection for private hosts",
	CodeBaseURLUnreachable:  "check the base URL's host, port and path, and that the provider is up",
	CodeAuthFailed:          "enter a valid credential",
	CodeTokenRevoked:        "the saved credential cannot be used any more: create a new one",
	CodePermissionMissing:   "grant the credential's user access to what the workflow reads",
	CodeScopeMissing:        "create a credential with the missing scopes",
	CodeRateLimited:         "wait for retry_after seconds before the next call",
}
