// Package client is the Go SDK of the relay for the cloud product and the
// postern-relay CLI. It owns two ways in:
//
//   - the data path: Dialer opens `CONNECT host:port` through the relay's
//     proxy listener for one connection and API key, and NewTransport puts
//     an *http.Transport on top of it (TLS to the provider stays end to
//     end, inside the tunnel);
//   - the API: Client manages connections and API keys, and reads a
//     connection's Status, runs a live Check from inside the customer
//     network, and follows status Events.
//
// Every refusal carries the relay's reason code as a *protocol.Error
// (api.Error is the same type), matched with errors.As: a refused CONNECT
// is a *ProxyError wrapping it, an API error is the *api.Error itself. An
// answer that is not the relay's (a load balancer or another proxy in the
// way) is an *UnexpectedResponseError. No error, log value or fmt output
// carries the API key.
//
// It speaks the JSON bodies of relay/api and nothing else: it holds no state
// beyond addresses and the API key, and never retries on its own; the
// caller decides what a Retry-After means for it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/postern/postern/relay/api"
)

// MaxResponseSize bounds how much of an answer the client reads.
const MaxResponseSize = 1 << 20

// DefaultTimeout bounds a whole request when New builds the HTTP client.
const DefaultTimeout = 30 * time.Second

// ErrResponseTooLarge means the relay's answer exceeded MaxResponseSize.
var ErrResponseTooLarge = errors.New("response too large")

// UnexpectedResponseError is an answer that is neither a success nor a
// relay error body: typically a proxy or load balancer in the way, or a
// wrong --server address.
type UnexpectedResponseError struct {
	StatusCode int
	Status     string
	// ContentType is the answer's Content-Type, a hint at what answered.
	ContentType string
}

func (e *UnexpectedResponseError) Error() string {
	msg := "unexpected answer from relay: HTTP " + e.Status
	if ct := printable(e.ContentType); ct != "" {
		msg += " (" + ct + ")"
	}
	return msg
}

// Client calls one relay with one API key. It is safe for concurrent use.
type Client struct {
	base   string
	apiKey string
	hc     *http.Client
}

// New returns a client for the relay at baseURL (for example
// "https://relay.example.com") authenticating with apiKey. A nil httpClient
// gets one with DefaultTimeout that does not follow redirects: the API
// never redirects, and following one would resend a POST elsewhere.
func New(baseURL, apiKey string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = &http.Client{
			Timeout: DefaultTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), apiKey: apiKey, hc: httpClient}
}

// String names the server and hides the key.
func (c *Client) String() string { return "relay client for " + c.base }

// Format makes every fmt verb print String, so the key never leaks into
// a log line or an error message by accident.
func (c *Client) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// LogValue hides the key from slog.
func (c *Client) LogValue() slog.Value { return slog.StringValue(c.String()) }

// CreateConnection creates a connection; the answer carries the agent token,
// shown only this once. An empty workspace lets the relay pick its default.
func (c *Client) CreateConnection(ctx context.Context, name, workspace string) (api.Connection, error) {
	var out api.Connection
	err := c.do(ctx, http.MethodPost, "/v1/connections", nil,
		api.CreateConnectionRequest{Name: name, Workspace: workspace}, &out)
	return out, err
}

// ListConnections lists the connections the key may see.
func (c *Client) ListConnections(ctx context.Context) (api.ConnectionList, error) {
	var out api.ConnectionList
	err := c.do(ctx, http.MethodGet, "/v1/connections", nil, nil, &out)
	return out, err
}

// GetConnection returns one connection.
func (c *Client) GetConnection(ctx context.Context, id string) (api.Connection, error) {
	var out api.Connection
	err := c.do(ctx, http.MethodGet, "/v1/connections/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// RevokeConnection revokes a connection; revoking twice is not an error.
func (c *Client) RevokeConnection(ctx context.Context, id string) (api.Connection, error) {
	var out api.Connection
	err := c.do(ctx, http.MethodPost, "/v1/connections/"+url.PathEscape(id)+"/revoke", nil, nil, &out)
	return out, err
}

// DeleteConnection deletes a revoked connection (an admin key's call);
// afterwards every call about it answers CONNECTION_NOT_FOUND. One still
// in use is refused with CONNECTION_NOT_REVOKED: revoke it first.
func (c *Client) DeleteConnection(ctx context.Context, id string) error {
	_, _, err := c.send(ctx, http.MethodDelete, "/v1/connections/"+url.PathEscape(id), nil, nil)
	return err
}

// RotateToken issues a new agent token; the old ones stay valid until the
// answer's PreviousValidUntil: the relay's overlap, or now with
// req.ExpirePrevious, which also closes the tunnels they opened.
func (c *Client) RotateToken(ctx context.Context, id string, req api.RotateTokenRequest) (api.TokenResponse, error) {
	var out api.TokenResponse
	err := c.do(ctx, http.MethodPost, "/v1/connections/"+url.PathEscape(id)+"/tokens", nil, req, &out)
	return out, err
}

// CreateAPIKey creates an API key (admin keys only); the answer carries the
// key, shown only this once.
func (c *Client) CreateAPIKey(ctx context.Context, req api.CreateAPIKeyRequest) (api.APIKey, error) {
	var out api.APIKey
	err := c.do(ctx, http.MethodPost, "/v1/api-keys", nil, req, &out)
	return out, err
}

// ListAPIKeys lists every API key, revoked and expired ones too (an admin
// key's call); the answer never carries a key or its hash.
func (c *Client) ListAPIKeys(ctx context.Context) (api.APIKeyList, error) {
	var out api.APIKeyList
	err := c.do(ctx, http.MethodGet, "/v1/api-keys", nil, nil, &out)
	return out, err
}

// RevokeAPIKey revokes an API key by id (an admin key's call): it is
// refused from then on, and its open proxy and event streams end.
// Revoking twice is not an error.
func (c *Client) RevokeAPIKey(ctx context.Context, id string) (api.APIKey, error) {
	var out api.APIKey
	err := c.do(ctx, http.MethodPost, "/v1/api-keys/"+url.PathEscape(id)+"/revoke", nil, nil, &out)
	return out, err
}

// Nodes lists the relay nodes sharing the answering node's store (an
// admin key's call).
func (c *Client) Nodes(ctx context.Context) (api.NodeList, error) {
	var out api.NodeList
	err := c.do(ctx, http.MethodGet, "/v1/nodes", nil, nil, &out)
	return out, err
}

// Status returns the connection's status. A non-empty baseURL (for example
// "https://gitlab.corp:443") asks for the allowlist verdict on that target.
func (c *Client) Status(ctx context.Context, id, baseURL string) (api.Status, error) {
	var q url.Values
	if baseURL != "" {
		q = url.Values{"base_url": {baseURL}}
	}
	var out api.Status
	err := c.do(ctx, http.MethodGet, "/v1/connections/"+url.PathEscape(id)+"/status", q, nil, &out)
	return out, err
}

// Check asks the connection's agent to run a live check of baseURL (for
// example "https://gitlab.corp:8443/api/v4") from inside the customer
// network. A check that ran returns its outcome whatever the verdict, so
// a not-ready path is a Check with Ready false, not an error; a check that
// could not run (no tunnel, a revoked connection, a malformed baseURL)
// returns *api.Error. The relay waits up to 12 s for the agent.
func (c *Client) Check(ctx context.Context, id, baseURL string) (api.Check, error) {
	var out api.Check
	err := c.do(ctx, http.MethodPost, "/v1/connections/"+url.PathEscape(id)+"/check", nil,
		api.CheckRequest{BaseURL: baseURL}, &out)
	return out, err
}

// do sends one request and decodes a 2xx answer into out. Any other
// answer becomes *api.Error when the body is one, else
// *UnexpectedResponseError.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	data, status, err := c.send(ctx, method, path, query, in)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode answer (HTTP %s): %w", method, path, status, err)
	}
	return nil
}

// send sends one request and returns a 2xx answer's body and status.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, in any) ([]byte, string, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, "", fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)

	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, "", err // *url.Error already names the method and URL
	}
	defer resp.Body.Close()

	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if len(data) > MaxResponseSize {
		return nil, "", fmt.Errorf("%s %s: %w (over %d bytes)", method, path, ErrResponseTooLarge, MaxResponseSize)
	}

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, "", decodeError(resp, data)
	}
	return data, resp.Status, nil
}

// decodeError turns an error answer into *api.Error when it carries one.
// The error is returned unwrapped so it prints as "REASON: message".
func decodeError(resp *http.Response, data []byte) error {
	var apiErr api.Error
	if err := json.Unmarshal(data, &apiErr); err == nil && apiErr.Reason != "" {
		if apiErr.RequestID == "" {
			apiErr.RequestID = resp.Header.Get("Postern-Request-Id")
		}
		return &apiErr
	}
	return &UnexpectedResponseError{
		StatusCode:  resp.StatusCode,
		Status:      resp.Status,
		ContentType: resp.Header.Get("Content-Type"),
	}
}

// printable drops anything but printable ASCII, so a hostile answer cannot
// put control sequences on the user's terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
}
