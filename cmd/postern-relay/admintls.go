package main

import (
	"crypto/tls"
	"net/http"

	"github.com/postern/postern/relay/client"
)

// httpClient is the HTTP client the admin commands call the relay with:
// with --ca-file, one that trusts that PEM bundle besides the system
// roots (a relay whose certificate a private CA signed, as the agent's
// ca_file allows); else the environment's, which is nil outside tests
// (the client package's default).
func (e adminEnv) httpClientFor(f *adminFlags) (*http.Client, error) {
	if f.caFile == "" {
		return e.httpClient, nil
	}
	pool, err := rootsWith(f.caFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{
		Transport: tr,
		Timeout:   client.DefaultTimeout,
		// As the client package's own: an API answer is never a redirect.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}
