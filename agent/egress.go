package agent

import (
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"github.com/postern/postern/agent/config"
)

// relayHTTPClient builds the client that dials the relay: through
// egress_proxy (or HTTPS_PROXY / NO_PROXY) with the extra CA of ca_file,
// and never following redirects, since the token must not travel on.
// Targets never use this client or its proxy.
func relayHTTPClient(cfg *config.Config) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		// The CA bundle also verifies a TLS-inspecting proxy, which
		// presents certificates from the customer's own CA.
		pool, err := config.CertPool(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		tlsCfg.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:           dialer.DialContext,
		Proxy:                 http.ProxyFromEnvironment,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ProxyConnectHeader:    http.Header{"User-Agent": {"postern-agent"}},
		ResponseHeaderTimeout: 15 * time.Second,
	}
	if cfg.EgressProxy != nil {
		tr.Proxy = http.ProxyURL(cfg.EgressProxy)
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}
