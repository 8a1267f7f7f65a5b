package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// Headers of a signed webhook delivery: the relay's status events, and the
// test delivery of the product's webhook provider check alike.
const (
	HeaderWebhookEventID   = "Postern-Event-Id"
	HeaderWebhookSignature = "Postern-Signature"
)

// SignWebhook returns the Postern-Signature value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>". This is
// the one place the scheme is written; receivers verify it with
// relay/webhook.Verify.
func SignWebhook(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(WebhookMAC(secret, ts, body))
}

// WebhookMAC is the v1 signature of body sent at the unix time ts.
func WebhookMAC(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}
