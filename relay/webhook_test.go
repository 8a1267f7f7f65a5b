package relay

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/webhook"
)

const testWebhookSecret = "whsec0123456789abcdefghijklmnop"

// delivery is one POST a receiver got.
type delivery struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is a webhook endpoint on loopback that answers with the
// statuses given, in turn, then 200.
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	answers  []int
	got      []delivery
	received chan delivery
}

func newReceiver(t *testing.T, answers ...int) *receiver {
	t.Helper()
	r := &receiver{answers: answers, received: make(chan delivery, 1024)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		d := delivery{header: req.Header.Clone(), body: body, at: time.Now()}
		r.mu.Lock()
		r.got = append(r.got, d)
		status := http.StatusOK
		if len(r.answers) > 0 {
			status, r.answers = r.answers[0], r.answers[1:]
		}
		r.mu.Unlock()
		w.WriteHeader(status)
		if status == http.StatusOK {
			r.received <- d
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) attempts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// next returns the next delivery answered with 200.
func (r *receiver) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-r.received:
		return d
	case <-time.After(waitFor):
		require.FailNow(t, "no webhook delivery")
		return delivery{}
	}
}

// requireSigned checks the signature by recomputing it here, apart from
// the code under test, and through VerifyWebhookSignature.
func requireSigned(t *testing.T, d delivery, secret string) api.Event {
	t.Helper()
	sig := d.header.Get("Postern-Signature")
	ts, v1, ok := strings.Cut(sig, ",v1=")
	require.True(t, ok, "signature %q", sig)
	ts = strings.TrimPrefix(ts, "t=")
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "." + string(d.body)))
	assert.Equal(t, hex.EncodeToString(m.Sum(nil)), v1)
	assert.NoError(t, webhook.Verify([]byte(secret), d.body, sig, time.Now(), time.Minute))
	assert.ErrorIs(t, webhook.Verify([]byte("another secret, as long"), d.body, sig, time.Now(), time.Minute), webhook.ErrSignature)

	var e api.Event
	require.NoError(t, json.Unmarshal(d.body, &e))
	assert.Equal(t, e.ID, d.header.Get("Postern-Event-Id"))
	assert.Equal(t, "application/json", d.header.Get("Content-Type"))
	assert.True(t, strings.HasPrefix(d.header.Get("User-Agent"), "postern-relay/"))
	return e
}

func TestWebhookDeliversSignedEvents(t *testing.T) {
	t.Parallel()
	all := newReceiver(t)
	teamB := newReceiver(t)
	h := newHarness(t, func(c *Config) {
		c.Webhooks = []Webhook{
			{URL: all.srv.URL + "/hook?token=in-the-url", Secret: []byte(testWebhookSecret)},
			{URL: teamB.srv.URL, Secret: []byte(testWebhookSecret + "b"), Workspace: "team-b"},
		}
	})
	h.remember(testWebhookSecret)
	c := h.createConnection(t, "gitlab", "team-a")
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)

	e := requireSigned(t, all.next(t), testWebhookSecret)
	assert.Equal(t, api.EventTunnel, e.Type)
	assert.Equal(t, c.ID, e.ConnectionID)
	assert.Equal(t, "team-a", e.Workspace)
	assert.Equal(t, "never_connected", e.From)
	assert.Equal(t, "connected", e.To)
	e = requireSigned(t, all.next(t), testWebhookSecret)
	assert.Equal(t, api.EventAllowlist, e.Type)

	a.Close()
	e = requireSigned(t, all.next(t), testWebhookSecret)
	assert.Equal(t, "connected", e.From)
	assert.Equal(t, "disconnected", e.To)
	assert.Equal(t, protocol.AgentOffline, e.Reason)
	assert.Equal(t, protocol.ProviderConnectivityBlocked, e.ProviderErrorCode)

	// The team-b webhook saw none of team-a's: its first event is team-b's.
	cb := h.createConnection(t, "jira", "team-b")
	b := h.connectAgent(t, cb.AgentToken, testHello("agent-2", 1), echo)
	defer b.Close()
	e = requireSigned(t, teamB.next(t), testWebhookSecret+"b")
	assert.Equal(t, cb.ID, e.ConnectionID)
	assert.NotContains(t, h.logs.String(), "in-the-url", "a webhook URL's query is not logged")
}

// runWebhook starts one webhook on its own, as the node would.
func runWebhook(t *testing.T, cfg Webhook) *webhook.Receiver {
	t.Helper()
	hc := webhook.NewClient()
	w := webhook.NewReceiver(cfg, hc, slog.New(slog.DiscardHandler), "test")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		hc.CloseIdleConnections()
	})
	return w
}

func TestWebhookRetries(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		answers   []int
		attempts  int
		delivered bool
	}{
		"first try":                  {attempts: 1, delivered: true},
		"500 twice, then 200":        {answers: []int{500, 500}, attempts: 3, delivered: true},
		"429, then 200":              {answers: []int{429}, attempts: 2, delivered: true},
		"503 on every attempt":       {answers: []int{503, 503, 503, 503, 503, 503}, attempts: webhook.MaxAttempts},
		"400 is final":               {answers: []int{400}, attempts: 1},
		"a redirect is not followed": {answers: []int{307}, attempts: 1},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newReceiver(t, tt.answers...)
			w := runWebhook(t, Webhook{URL: r.srv.URL, Secret: []byte(testWebhookSecret), RetryBackoff: 10 * time.Millisecond})
			w.Offer(api.Event{ID: "42", Type: api.EventTunnel, ConnectionID: "conn_1", From: "connected", To: "disconnected"})
			require.Eventually(t, func() bool { return delivered(w)+failed(w) == 1 }, waitFor, pollEvery)
			assert.Equal(t, tt.attempts, r.attempts())
			assert.Equal(t, tt.delivered, delivered(w) == 1)

			r.mu.Lock()
			defer r.mu.Unlock()
			for i, d := range r.got {
				assert.Equal(t, "42", d.header.Get("Postern-Event-Id"), "attempt %d", i+1)
				assert.NoError(t, webhook.Verify([]byte(testWebhookSecret), d.body, d.header.Get("Postern-Signature"), time.Now(), time.Minute))
				if i > 0 {
					// Backoff doubles from 10 ms with jitter of ±50 %.
					assert.GreaterOrEqual(t, d.at.Sub(r.got[i-1].at), 5*time.Millisecond<<(i-1), "attempt %d", i+1)
				}
			}
		})
	}
}

func TestWebhookRetriesNetworkErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns sync.WaitGroup
	accepted := make(chan int, 16)
	conns.Go(func() {
		n := 0
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n++
			accepted <- n
			_ = c.Close() // hang up before answering
		}
	})
	defer func() { _ = ln.Close(); conns.Wait() }()

	w := runWebhook(t, Webhook{URL: "http://" + ln.Addr().String() + "/", Secret: []byte(testWebhookSecret), RetryBackoff: time.Millisecond})
	w.Offer(api.Event{ID: "7", Type: api.EventAuth})
	require.Eventually(t, func() bool { return failed(w) == 1 }, waitFor, pollEvery)
	assert.Len(t, accepted, webhook.MaxAttempts, "every attempt reached the receiver")
	assert.Zero(t, delivered(w))
}

func TestWebhookQueueOverflowDropsAndCounts(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	// Not running: nothing drains the queue.
	w := webhook.NewReceiver(Webhook{URL: "http://127.0.0.1:1/", Secret: []byte(testWebhookSecret), Workspace: "team-a"},
		http.DefaultClient, slog.New(slog.NewTextHandler(logs, nil)), "test")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range webhook.QueueSize + 5 {
			w.Offer(api.Event{ID: fmt.Sprint(i), Workspace: "team-a"})
		}
		w.Offer(api.Event{ID: "other", Workspace: "team-b"})
	}()
	requireDone(t, done, "offer blocked on a full queue")
	assert.EqualValues(t, 5, dropped(w), "only what did not fit is dropped; other workspaces are not counted")
	assert.Equal(t, webhook.QueueSize, w.Queued())
	assert.Contains(t, logs.String(), "webhook queue full")
	assert.NotContains(t, logs.String(), testWebhookSecret)
}

func TestWebhookConfigIsValidated(t *testing.T) {
	t.Parallel()
	secret := []byte(testWebhookSecret)
	tests := map[string]struct {
		hook Webhook
		want string
	}{
		"relative url":      {Webhook{URL: "/hook", Secret: secret}, "absolute http"},
		"other scheme":      {Webhook{URL: "ftp://example.com/", Secret: secret}, "absolute http"},
		"no secret":         {Webhook{URL: "https://example.com/"}, "secret must be at least"},
		"short secret":      {Webhook{URL: "https://example.com/", Secret: []byte("short")}, "secret must be at least"},
		"bad workspace":     {Webhook{URL: "https://example.com/", Secret: secret, Workspace: "Team A"}, "workspace"},
		"unparsable url":    {Webhook{URL: "https://exa mple.com/%zz", Secret: secret}, "absolute http"},
		"secret not echoed": {Webhook{URL: "https://example.com/?k=v", Secret: []byte("x")}, "https://example.com/:"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Store, cfg.Webhooks = nopStore{}, []Webhook{tt.hook}
			_, err := New(cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "k=v")
		})
	}
}

func TestWebhookNeverPrintsItsSecret(t *testing.T) {
	t.Parallel()
	w := Webhook{URL: "https://user:pass@hooks.example.com/in?token=abc", Secret: []byte(testWebhookSecret)}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "webhook", w)
	for name, out := range map[string]string{
		"%v":   fmt.Sprintf("%v", w),
		"%+v":  fmt.Sprintf("%+v", w),
		"%#v":  fmt.Sprintf("%#v", w),
		"%s":   fmt.Sprintf("%s", w),
		"slog": logs.String(),
	} {
		assert.NotContains(t, out, testWebhookSecret, name)
		assert.NotContains(t, out, "pass", name)
		assert.NotContains(t, out, "token=abc", name)
		assert.Contains(t, out, "https://hooks.example.com/in", name)
	}
}

func TestVerifyWebhookSignature(t *testing.T) {
	t.Parallel()
	secret := []byte(testWebhookSecret)
	body := []byte(`{"id":"1","type":"tunnel"}`)
	at := time.Unix(1_800_000_000, 0)
	good := webhook.Sign(secret, body, at)
	other := webhook.Sign([]byte("the previous secret of this hook"), body, at)
	_, v1, _ := strings.Cut(good, ",v1=")
	tests := map[string]struct {
		header string
		body   []byte
		now    time.Time
		ok     bool
	}{
		"valid":                 {header: good, ok: true},
		"spaces after commas":   {header: strings.ReplaceAll(good, ",", ", "), ok: true},
		"rotation: second v1":   {header: other + ",v1=" + v1, ok: true},
		"unknown scheme beside": {header: good + ",v0=abc", ok: true},
		"body changed":          {header: good, body: []byte(`{"id":"2","type":"tunnel"}`)},
		"time changed":          {header: "t=1800000001,v1=" + v1},
		"too old":               {header: good, now: at.Add(10 * time.Minute)},
		"from the future":       {header: good, now: at.Add(-10 * time.Minute)},
		"no t":                  {header: "v1=" + v1},
		"no v1":                 {header: "t=1800000000"},
		"two t":                 {header: "t=1800000000,t=1800000000,v1=" + v1},
		"v1 not hex":            {header: "t=1800000000,v1=zz"},
		"v1 too short":          {header: "t=1800000000,v1=abcd"},
		"t not a number":        {header: "t=soon,v1=" + v1},
		"empty":                 {header: ""},
		"only commas":           {header: ",,,"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			b, now := tt.body, tt.now
			if b == nil {
				b = body
			}
			if now.IsZero() {
				now = at
			}
			err := webhook.Verify(secret, b, tt.header, now, 5*time.Minute)
			if tt.ok {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, webhook.ErrSignature)
		})
	}
}

func FuzzVerifyWebhookSignature(f *testing.F) {
	secret := []byte(testWebhookSecret)
	body := []byte(`{"id":"1"}`)
	f.Add(webhook.Sign(secret, body, time.Unix(1_800_000_000, 0)), body)
	f.Add("t=1,v1=00", []byte{})
	f.Add("t=-1,v1=", []byte("x"))
	f.Add(",=,==,t=,v1=,", []byte(nil))
	f.Add("t=99999999999999999999,v1="+strings.Repeat("ab", 32), body)
	f.Fuzz(func(t *testing.T, header string, b []byte) {
		now := time.Unix(1_800_000_000, 0)
		err := webhook.Verify(secret, b, header, now, 0)
		if err != nil {
			require.ErrorIs(t, err, webhook.ErrSignature)
		}
		// What we sign for any body always verifies.
		require.NoError(t, webhook.Verify(secret, b, webhook.Sign(secret, b, now), now, time.Minute))
	})
}

func delivered(w *webhook.Receiver) uint64 { d, _, _ := w.Stats(); return d }
func failed(w *webhook.Receiver) uint64    { _, f, _ := w.Stats(); return f }
func dropped(w *webhook.Receiver) uint64   { _, _, d := w.Stats(); return d }
