// Package provider is the product's side of a provider connection: given a
// provider key, a deployment mode, a base URL, a credential and the scopes
// a workflow needs, it runs the checks of the "Provider connection errors"
// page in its order and returns one State with the page's
// provider_error_code:
//
//  1. deployment mode and base URL: cloud needs https, a public address
//     (the agent's unsafe-address rules from package allowlist, plus the
//     private ranges) and, for cloud-only providers, the provider's own
//     API host; self-hosted is offered only where the provider has a
//     self-hosted edition;
//  2. connectivity through Postern, self-hosted only: the connection's
//     status and a real CONNECT through the relay (relay/client); any
//     refusal is its reason code, before any verdict on the credential;
//  3. the provider's own "who am I" call: active, bad, revoked or expired
//     credential where the provider says which, granted scopes where it
//     lists them, token expiry, and its rate-limit headers;
//  4. the permission the workflow needs, probed on the provider's API.
//
// What each provider's check relies on is written in docs/providers.md.
//
// It owns the classification of provider answers and the safe direct path
// to cloud providers (resolve, check every address, dial the address it
// checked). It never logs, and never puts a credential into a State, an
// error or fmt output: every provider text it passes on is scrubbed of the
// credential first. It does not store credentials, retry, or follow
// redirects.
package provider
