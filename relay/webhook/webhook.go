// Package webhook posts a relay's status events to receivers: one queue per
// receiver, ordered within each workspace and bounded per workspace by
// count and bytes, the workspaces delivered in turn so that one cannot
// delay or drop another's events; HMAC-SHA256 signatures (Sign, and Verify
// for receivers written in Go), retries of network errors, 5xx and 429
// with jittered backoff, and no redirects. A receiver's secret never reaches a
// log line, an error or fmt output.
//
// It does not decide which events exist; package status publishes them.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/internal/tick"
	"github.com/postern/postern/relay/store"
)

// Webhook delivery limits.
const (
	// MaxAttempts is how often one event is tried before it is given up.
	MaxAttempts = 5
	// QueueSize is how many events of one workspace wait per webhook;
	// when a receiver falls further behind on a workspace's events, new
	// ones of that workspace are dropped and counted. Workspaces are
	// delivered in turn, so one workspace's flood neither delays nor
	// drops another's events.
	QueueSize = 1000
	// QueueBytes bounds one workspace's waiting events per webhook by
	// size (events.Size), MaxQueueBytes all workspaces' together.
	QueueBytes    = 512 << 10
	MaxQueueBytes = 16 << 20
	// MinSecret is the shortest signing secret accepted.
	MinSecret = 16

	webhookTimeout       = 10 * time.Second
	webhookMaxRetryAfter = time.Minute
	webhookDefaultDelay  = time.Second
)

// Webhook signature headers; the scheme is written once, in relay/api.
const (
	HeaderEventID   = api.HeaderWebhookEventID
	HeaderSignature = api.HeaderWebhookSignature
)

// ErrSignature means a Postern-Signature header is malformed, stale or
// does not match the body.
var ErrSignature = errors.New("webhook signature invalid")

// Config names a receiver of status events: every event of its scope is
// POSTed to URL as the JSON of api.Event, signed with Secret.
type Config struct {
	// URL receives the events; http:// or https://. Required.
	URL string
	// Secret keys the HMAC-SHA256 in Postern-Signature; at least
	// MinSecret bytes. Required. Never logged.
	Secret []byte
	// Workspace limits the webhook to one workspace's connections; empty
	// means all.
	Workspace string
	// RetryBackoff is the wait before the first retry; it doubles with
	// each attempt and is jittered. Zero means one second.
	RetryBackoff time.Duration
}

// String names the receiver without its secret, query or user info.
func (w Config) String() string { return "webhook " + redactURL(w.URL) }

// Format makes every fmt verb print String, so the secret cannot reach a
// log line through %v or %+v.
func (w Config) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, w.String()) }

// LogValue hides the secret from slog.
func (w Config) LogValue() slog.Value { return slog.StringValue(w.String()) }

// Validate reports why the receiver cannot be used; the error never
// carries the secret or the URL's user info and query.
func (w Config) Validate() error {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook %q: url must be an absolute http:// or https:// URL", redactURL(w.URL))
	}
	if len(w.Secret) < MinSecret {
		return fmt.Errorf("webhook %s: secret must be at least %d bytes", redactURL(w.URL), MinSecret)
	}
	if w.Workspace != "" && !store.ValidWorkspace(w.Workspace) {
		return fmt.Errorf("webhook %s: workspace %q is not a valid workspace name", redactURL(w.URL), w.Workspace)
	}
	return nil
}

// redactURL keeps scheme, host and path: user info and query strings
// often carry credentials.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparsable url)"
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// Sign returns the Postern-Signature value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>"
// (api.SignWebhook).
func Sign(secret, body []byte, t time.Time) string { return api.SignWebhook(secret, body, t) }

// Verify checks a Postern-Signature header against the
// body a receiver got. A positive tolerance also refuses signatures whose
// time is further than that from now, which bounds replays. Several v1
// values may be present (a secret being rotated); one match suffices.
// Every failure wraps ErrSignature.
func Verify(secret, body []byte, header string, now time.Time, tolerance time.Duration) error {
	ts, sigs, err := parseSignature(header)
	if err != nil {
		return err
	}
	if tolerance > 0 {
		sec, _ := strconv.ParseInt(ts, 10, 64)
		if d := now.Sub(time.Unix(sec, 0)).Abs(); d > tolerance {
			return fmt.Errorf("%w: signed %s away from now, more than %s", ErrSignature, d.Round(time.Second), tolerance)
		}
	}
	want := api.WebhookMAC(secret, ts, body)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: no v1 value matches the body", ErrSignature)
}

// parseSignature splits "t=...,v1=...[,v1=...]" into the time and the
// decoded signatures. Unknown keys are skipped, for future schemes.
func parseSignature(header string) (string, [][]byte, error) {
	const maxSigs = 8
	var (
		ts   string
		sigs [][]byte
	)
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return "", nil, fmt.Errorf("%w: %q is not key=value", ErrSignature, part)
		}
		switch k {
		case "t":
			if ts != "" {
				return "", nil, fmt.Errorf("%w: more than one t", ErrSignature)
			}
			if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 {
				return "", nil, fmt.Errorf("%w: t is not unix seconds", ErrSignature)
			}
			ts = v
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return "", nil, fmt.Errorf("%w: v1 is not a hex HMAC-SHA256", ErrSignature)
			}
			if len(sigs) == maxSigs {
				return "", nil, fmt.Errorf("%w: more than %d v1 values", ErrSignature, maxSigs)
			}
			sigs = append(sigs, sig)
		}
	}
	if ts == "" || len(sigs) == 0 {
		return "", nil, fmt.Errorf("%w: t and v1 are required", ErrSignature)
	}
	return ts, sigs, nil
}

// Receiver delivers events to one receiver, in order, from its own queue.
type Receiver struct {
	cfg       Config
	hc        *http.Client
	log       *slog.Logger
	userAgent string
	queue     *fairQueue

	delivered atomic.Uint64
	failed    atomic.Uint64 // given up after the last attempt, or refused
	dropped   atomic.Uint64 // never tried: the queue was full
}

// NewReceiver returns the delivery of cfg; Run delivers, Offer queues.
func NewReceiver(cfg Config, hc *http.Client, log *slog.Logger, version string) *Receiver {
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = webhookDefaultDelay
	}
	if version == "" {
		version = "dev"
	}
	return &Receiver{
		cfg:       cfg,
		hc:        hc,
		log:       log.With("webhook", redactURL(cfg.URL)),
		userAgent: "postern-relay/" + version,
		queue:     newFairQueue(),
	}
}

// NewClient is the HTTP client of every webhook: the system proxy
// settings apply, redirects are not followed (a redirect would resend the
// signed body elsewhere).
func NewClient() *http.Client {
	return &http.Client{
		Transport: http.DefaultTransport.(*http.Transport).Clone(),
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Config is the receiver's configuration.
func (h *Receiver) Config() Config { return h.cfg }

// Stats counts the events delivered, given up (after the last attempt, or
// refused) and dropped because the queue was full.
func (h *Receiver) Stats() (delivered, failed, dropped uint64) {
	return h.delivered.Load(), h.failed.Load(), h.dropped.Load()
}

// Queued is the number of events waiting.
func (h *Receiver) Queued() int { return h.queue.len() }

// Offer queues an event of the webhook's scope without waiting.
func (h *Receiver) Offer(e api.Event) {
	if h.cfg.Workspace != "" && e.Workspace != h.cfg.Workspace {
		return
	}
	if !h.queue.push(e) {
		// The first drop and every thousandth are logged: a flood must
		// not become a flood of log lines.
		if n := h.dropped.Add(1); n == 1 || n%1000 == 0 {
			h.log.Warn("webhook queue full: event dropped", "event_id", e.ID, "workspace", e.Workspace, "dropped_total", n)
		}
	}
}

// Run delivers queued events, the workspaces in turn, until ctx ends.
func (h *Receiver) Run(ctx context.Context) {
	for {
		e, ok := h.queue.next(ctx)
		if !ok {
			return
		}
		h.deliver(ctx, e)
	}
}

// deliver posts one event, retrying network errors, 5xx and 429 with
// exponential backoff. Any other answer is final.
func (h *Receiver) deliver(ctx context.Context, e api.Event) {
	body, err := json.Marshal(e)
	if err != nil {
		h.failed.Add(1)
		h.log.Error("webhook: encode event", "event_id", e.ID, "err", err)
		return
	}
	for attempt := 1; ; attempt++ {
		wait, done := h.Attempt(ctx, attempt, e.ID, body)
		if done || !tick.Sleep(ctx, wait) {
			return
		}
	}
}

// Attempt makes the attempt-th try to deliver the event id with body. It
// reports done when the event was delivered or given up (a final answer,
// or MaxAttempts reached), and otherwise how long to wait before the next
// try: the receiver's Retry-After, or a jittered backoff doubling from
// RetryBackoff.
func (h *Receiver) Attempt(ctx context.Context, attempt int, id string, body []byte) (time.Duration, bool) {
	retry, wait, err := h.post(ctx, id, body)
	switch {
	case err == nil:
		h.delivered.Add(1)
		return 0, true
	case ctx.Err() != nil:
		return 0, false
	case !retry || attempt >= MaxAttempts:
		h.failed.Add(1)
		h.log.Warn("webhook delivery given up", "event_id", id, "attempts", attempt, "err", err)
		return 0, true
	}
	if wait <= 0 {
		delay := h.cfg.RetryBackoff << (attempt - 1)
		wait = delay/2 + rand.N(delay)
	}
	h.log.Info("webhook delivery failed; retrying", "event_id", id, "attempt", attempt, "in", wait.Round(time.Millisecond), "err", err)
	return wait, false
}

// ID names the receiver the same on every node of a cluster that has it
// configured: a digest of its URL and workspace, never of its secret.
func (w Config) ID() string {
	sum := sha256.Sum256([]byte(w.URL + "\x00" + w.Workspace))
	return hex.EncodeToString(sum[:8])
}

// post makes one attempt. It says whether a failure is worth retrying and
// how long the receiver asked to wait (Retry-After), if it did.
func (h *Receiver) post(ctx context.Context, id string, body []byte) (bool, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, webhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, 0, errors.New("build request: invalid url")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", h.userAgent)
	req.Header.Set(HeaderEventID, id)
	req.Header.Set(HeaderSignature, Sign(h.cfg.Secret, body, time.Now()))
	resp, err := h.hc.Do(req)
	if err != nil {
		// *url.Error repeats the URL, which may hold a credential.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return true, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return false, 0, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		wait, _ := protocol.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return true, min(wait, webhookMaxRetryAfter), fmt.Errorf("receiver answered HTTP %d", resp.StatusCode)
	default:
		return false, 0, fmt.Errorf("receiver answered HTTP %d", resp.StatusCode)
	}
}
