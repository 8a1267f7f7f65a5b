package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/protocol/coalesce"
)

type batchKey struct{}

// batchSlot receives the socket the transport dialled for one tunnel.
type batchSlot struct {
	mu sync.Mutex
	b  *coalesce.Batch
}

func (s *batchSlot) set(b *coalesce.Batch) {
	s.mu.Lock()
	s.b = b
	s.mu.Unlock()
}

func (s *batchSlot) get() *coalesce.Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b
}

// relayHTTPClient builds the client that dials the relay: through
// egress_proxy (or HTTPS_PROXY / NO_PROXY) with the extra CA of ca_file,
// and never following redirects, since the token must not travel on.
// Targets never use this client or its proxy.
func relayHTTPClient(cfg *config.Config) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate found", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		// The socket under the tunnel's WebSocket is wrapped so the
		// tunnel can batch the client's masked writes (see
		// coalesce.Batch); runTunnel finds it through the context.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if slot, ok := ctx.Value(batchKey{}).(*batchSlot); ok {
				b := coalesce.NewBatch(c)
				slot.set(b)
				return b, nil
			}
			return c, nil
		},
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 10 * time.Second,
		// The CA bundle also verifies a TLS-inspecting proxy, which
		// presents certificates from the customer's own CA.
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
