package provider

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/postern/postern/relay/api"
)

// MinWebhookSecret is the shortest signing secret a webhook check
// accepts, the same floor the relay sets for its own webhooks.
const MinWebhookSecret = 16

// webhookReceiver: a receiver of the product's signed deliveries. The
// credential is the signing secret; it never goes on the wire. The check
// is one test delivery, signed exactly like the relay's own webhooks
// (api.SignWebhook: Postern-Signature "t=...,v1=HMAC-SHA256"), so one
// verifier (relay/webhook.Verify) serves both.
func webhookReceiver() *spec {
	return &spec{
		key: "webhook", name: "webhook receiver",
		apiRoot:   underBase(""),
		authorize: func(*http.Request, string) {},
		identity:  deliverTest,
	}
}

// webhookTest is the body of a test delivery.
type webhookTest struct {
	ID   string    `json:"id"`
	Type string    `json:"type"`
	Time time.Time `json:"time"`
}

// deliverTest posts one signed test delivery: a 2xx answer accepts the
// signature, 401 and 403 refuse it, 429 is a rate limit, and anything
// else is named.
func deliverTest(ctx context.Context, r *run) bool {
	secret := []byte(r.req.Credential.Reveal())
	if len(secret) < MinWebhookSecret {
		return r.failWith(StepDelivery, verdict{code: CodeAuthFailed, auth: AuthFailed,
			detail: "the signing secret is shorter than " + strconv.Itoa(MinWebhookSecret) + " bytes"})
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	now := r.now().UTC()
	body, _ := json.Marshal(webhookTest{ID: "test_" + hex.EncodeToString(id), Type: "provider.check", Time: now})
	extra := http.Header{}
	extra.Set(api.HeaderWebhookEventID, "test_"+hex.EncodeToString(id))
	extra.Set(api.HeaderWebhookSignature, api.SignWebhook(secret, body, now))
	a, v := r.send(ctx, http.MethodPost, "", body, extra)
	if v == nil {
		v = r.judge(a)
	}
	if v != nil {
		if a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
			v = &verdict{code: CodeAuthFailed, auth: AuthFailed, detail: "the receiver refused the signed test delivery (HTTP " + strconv.Itoa(a.status) + "): " + a.text()}
		}
		return r.failWith(StepDelivery, *v)
	}
	r.st.AuthStatus = AuthActive
	return r.pass(StepDelivery, "the receiver accepted a signed test delivery (HTTP "+strconv.Itoa(a.status)+")")
}
