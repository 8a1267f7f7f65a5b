package stream

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/protocol"
)

// checkTLS handshakes with SNI host and verifies the chain against the
// system roots and ca_file. The detail names the certificate even when it does not
// verify, which is the point of the step.
func (s *Server) checkTLS(ctx context.Context, conn net.Conn, host string) (*tls.Conn, string, error) {
	roots, err := config.CertPool(s.cfg.CAFile)
	if err != nil {
		return nil, err.Error(), err
	}
	tc := tls.Client(conn, &tls.Config{
		ServerName: host,
		// The chain is verified below, by hand, with the same roots and
		// name: the standard check would end the handshake before the
		// certificate could be shown. Nothing but the probe's GET, which
		// carries no credential, is sent before that verification.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, "handshake with " + host + ": " + err.Error(), err
	}
	cs := tc.ConnectionState()
	if len(cs.PeerCertificates) == 0 {
		err := errors.New("the target sent no certificate")
		return nil, err.Error(), err
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	sni := "SNI " + host
	if _, err := netip.ParseAddr(host); err == nil {
		sni = "no SNI (IP address)" // TLS sends no server name for an address
	}
	detail := fmt.Sprintf("%s, %s, subject %s, issuer %s, not_after %s", tls.VersionName(cs.Version), sni,
		nameOf(leaf.Subject), nameOf(leaf.Issuer), leaf.NotAfter.UTC().Format(time.RFC3339))
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter}); err != nil {
		return nil, detail + ", verify error: " + err.Error(), err
	}
	return tc, detail + ", verified", nil
}

// nameOf shows a certificate name by its CN, else in full.
func nameOf(n pkix.Name) string {
	if n.CommonName != "" {
		return "CN=" + n.CommonName
	}
	if s := n.String(); s != "" {
		return s
	}
	return "(empty)"
}

// checkHTTP sends one GET of the base URL over conn and classifies the
// answer; see the comment at the top of this file.
func checkHTTP(ctx context.Context, conn net.Conn, t checkTarget) (protocol.Reason, int, string) {
	deadline := time.Now().Add(checkHTTPTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url.String(), nil)
	if err != nil {
		return protocol.BadTarget, 0, "build request: " + err.Error()
	}
	req.Header.Set("User-Agent", checkUserAgent)
	req.Header.Set("Accept", "*/*")
	req.Close = true
	if err := req.Write(conn); err != nil {
		return httpFailure("send GET", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return httpFailure("read answer", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, checkBodyCap))
	_ = resp.Body.Close()

	status := "HTTP " + truncate(resp.Status, 80)
	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests:
		ra := resp.Header.Get("Retry-After")
		wait, ok := protocol.ParseRetryAfter(ra, time.Now())
		if !ok {
			return protocol.UpstreamRateLimited, 0, status + ": rate limited, no usable Retry-After"
		}
		secs := int((wait + time.Second - 1) / time.Second)
		return protocol.UpstreamRateLimited, secs, fmt.Sprintf("%s: rate limited, Retry-After %s (%ds)", status, truncate(ra, 64), secs)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return "", 0, status + ": reachable, authentication required"
	case code >= 300 && code < 400:
		if loc := resp.Header.Get("Location"); loc != "" {
			return "", 0, status + ": reachable, redirect not followed, Location: " + truncate(loc, 256)
		}
		return "", 0, status + ": reachable"
	case code >= 500:
		return "", 0, status + ": reachable, the provider answered with a server error"
	}
	return "", 0, status + ": reachable"
}

// httpFailure classifies a probe that got no HTTP answer.
func httpFailure(what string, err error) (protocol.Reason, int, string) {
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return protocol.ConnectTimeout, 0, what + ": the target accepted the connection but did not answer HTTP in time: " + err.Error()
	}
	return protocol.ConnectRefused, 0, what + ": the target accepted the connection but did not answer HTTP: " + err.Error()
}

// cleanDetail keeps a detail printable and bounded: parts of it come from
// the target (certificate names, status lines, Location).
func cleanDetail(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
	return truncate(s, maxDetail)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
