package providertest

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// cloudHosts is where each provider's fake stands in the cloud, and the
// base URL a product would save for it.
var cloudHosts = map[string]struct{ host, base string }{
	"github":       {"api.github.com", "https://github.com"},
	"gitlab":       {"gitlab.com", "https://gitlab.com"},
	"jira":         {"acme.atlassian.net", "https://acme.atlassian.net"},
	"bitbucket":    {"api.bitbucket.org", "https://bitbucket.org"},
	"trello":       {"api.trello.com", "https://api.trello.com"},
	"linear":       {"api.linear.app", "https://api.linear.app"},
	"azure-devops": {"dev.azure.com", "https://dev.azure.com/acme"},
	"youtrack":     {"acme.youtrack.cloud", "https://acme.youtrack.cloud"},
	"asana":        {"app.asana.com", "https://app.asana.com"},
	"clickup":      {"api.clickup.com", "https://api.clickup.com"},
	"webhook":      {"hooks.example.com", "https://hooks.example.com/postern"},
}

// CloudBaseURL is the base URL of provider's fake in the cloud.
func CloudBaseURL(provider string) string { return cloudHosts[provider].base }

// Public is the address every cloud name resolves to: a documentation
// address (TEST-NET-3) that is never dialed; Cloud.DialAddr goes to the
// fakes on loopback instead.
var Public = netip.MustParseAddr("203.0.113.7")

// Cloud is one TLS server on loopback that stands at every provider's
// cloud host, picking the fake by the Host header.
type Cloud struct {
	srv *httptest.Server
	CA  *CA
}

// StartCloud starts the cloud fakes; now is their clock.
func StartCloud(t testing.TB, now func() time.Time) *Cloud {
	t.Helper()
	names := make([]string, 0, len(cloudHosts))
	byHost := map[string]http.Handler{}
	for key, h := range cloudHosts {
		names = append(names, h.host)
		byHost[h.host] = Handler(key, now)
	}
	ca := NewCA(t, names...)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if h, ok := byHost[host]; ok {
			h.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &Cloud{srv: srv, CA: ca}
}

// Resolve is a resolver for the checker: every name is Public, except
// names under "private.example" (10.0.0.5, a private address) and under
// ".invalid" (no such host).
func (c *Cloud) Resolve(_ context.Context, host string) ([]netip.Addr, error) {
	switch {
	case strings.HasSuffix(host, ".invalid"):
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	case strings.HasSuffix(host, "private.example"):
		return []netip.Addr{netip.MustParseAddr("10.0.0.5")}, nil
	}
	return []netip.Addr{Public}, nil
}

// DialAddr dials the fakes whatever checked address it is given; any
// other port is refused, like a host that does not listen there.
func (c *Cloud) DialAddr(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	if addr.Port() != 443 {
		return nil, errors.New("connect: connection refused")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", c.srv.Listener.Addr().String())
}

// Server is one provider's fake on loopback, for the self-hosted path.
type Server struct {
	srv *httptest.Server
	CA  *CA
}

// StartServer starts provider's fake with TLS, its certificate issued by
// ca (see NewCA: list the names the fake will be reached at).
func StartServer(t testing.TB, provider string, now func() time.Time, ca *CA) *Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(Handler(provider, now))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &Server{srv: srv, CA: ca}
}

// Port is the port the fake listens on.
func (s *Server) Port() int { return s.srv.Listener.Addr().(*net.TCPAddr).Port }
