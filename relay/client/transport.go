package client

import (
	"crypto/tls"
	"net/http"
	"time"
)

// NewTransport returns an *http.Transport whose every connection is a
// CONNECT through d, for http:// and https:// URLs alike. TLS to the
// provider stays end to end: the transport speaks it inside the tunnel with
// tlsConfig (nil: the system roots), and relay and agent see only
// ciphertext. Environment proxy settings are ignored, since the relay is
// the proxy.
//
// Bound each request with its context or an http.Client Timeout; the
// transport bounds the TLS handshake, the wait for response headers (30 s)
// and their size. Call CloseIdleConnections when done with it.
func NewTransport(d *Dialer, tlsConfig *tls.Config) *http.Transport {
	if tlsConfig != nil {
		tlsConfig = tlsConfig.Clone()
	}
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		TLSClientConfig:        tlsConfig,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConnsPerHost:    4,
		MaxResponseHeaderBytes: 64 << 10,
	}
}
