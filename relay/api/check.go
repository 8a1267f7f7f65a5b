package api

import "github.com/postern/postern/protocol"

// CheckRequest is the body of POST /v1/connections/{id}/check.
type CheckRequest struct {
	// BaseURL is the provider's http:// or https:// URL to probe from
	// inside the customer network; the port defaults by scheme.
	BaseURL string `json:"base_url"`
}

// Check is the answer to POST /v1/connections/{id}/check: the outcome of a
// live check the agent ran. A check that ran answers 200 whatever its
// verdict; Ready says whether the path works end to end.
type Check struct {
	Ready bool `json:"ready"`
	// Reason is the failing step's reason code when not ready.
	Reason            protocol.Reason `json:"reason,omitempty"`
	ProviderErrorCode string          `json:"provider_error_code,omitempty"`
	// RetryAfter is in seconds, with UPSTREAM_RATE_LIMITED.
	RetryAfter int `json:"retry_after,omitempty"`
	// Steps are the layers checked, in order, up to the first that failed.
	Steps []CheckStep `json:"steps"`
}

// CheckStep is one layer of a live check: allowlist, dns, tcp, tls (https
// only) or http.
type CheckStep struct {
	Step   string          `json:"step"`
	OK     bool            `json:"ok"`
	MS     int64           `json:"ms"`
	Reason protocol.Reason `json:"reason,omitempty"`
	// Detail is for people: DNS server, rcode and answers; certificate
	// subject, issuer, expiry and verify error; HTTP status.
	Detail string `json:"detail,omitempty"`
}
