package doctor

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
)

const (
	// The fake relay's tokens have the issued shape (their parts are made
	// up), so that the agent's own shape check lets them through.
	goodToken    = "pat_tokaaaaaaaaaaaab_Z29vZHNlY3JldC1nb29kc2VjcmV0LWdvb2RzZWNyZXQ"
	revokedToken = "pat_tokaaaaaaaaaaaac_cmV2b2tlZHNlY3JldC1yZXZva2Vkc2VjcmV0LXJldm8"
	testNodeID   = "node-test-7"
)

// --- certificates ----------------------------------------------------------

// testPKI is a private CA, like a TLS-inspecting proxy's, and a server
// certificate it issued for 127.0.0.1, localhost and relay.test.
type testPKI struct {
	caFile string // PEM of the CA
	cert   tls.Certificate
}

func newPKI(t *testing.T, caName string) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: caName, Organization: []string{"Postern Tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "relay.test"},
		DNSNames:     []string{"relay.test", "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644))
	return &testPKI{caFile: caFile, cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// --- relay stand-in --------------------------------------------------------

// relayMode selects how the stand-in answers /v1/tunnel.
type relayMode int

const (
	relayNormal        relayMode = iota + 1 // token check, then upgrade and Welcome
	relayRedirect                           // 302 to another URL
	relayNoSubprotocol                      // upgrades without agreeing to postern.v1
)

// fakeRelay answers /v1/tunnel like the relay: 401 with a reason body for
// a wrong or revoked token, else a tunnel where it reads Hello and answers
// Welcome, over TLS when pki is given.
type fakeRelay struct{ *tunneltest.Relay }

func newFakeRelay(t *testing.T, mode relayMode, pki *testPKI) *fakeRelay {
	t.Helper()
	opts := tunneltest.RelayOptions{
		NodeID:        testNodeID,
		Authorize:     authorizeTestToken,
		NoSubprotocol: mode == relayNoSubprotocol,
	}
	if mode == relayRedirect {
		opts.Redirect = "https://elsewhere.example/v1/tunnel"
	}
	if pki != nil {
		opts.TLS = &tls.Config{Certificates: []tls.Certificate{pki.cert}}
	}
	return &fakeRelay{tunneltest.NewRelay(t, opts)}
}

func authorizeTestToken(r *http.Request) *protocol.Error {
	switch tunneltest.BearerToken(r) {
	case goodToken:
		return nil
	case revokedToken:
		return protocol.Errorf(protocol.AgentTokenRevoked, "the connection of this agent token was revoked")
	}
	return protocol.Errorf(protocol.AgentTokenInvalid, "agent token is unknown, wrong or expired")
}

// parseRefusal is what the doctor shows of a refused upgrade answering
// status, header and body: the transport reads the answer, refusalOf
// cleans it for printing.
func parseRefusal(status int, header http.Header, body []byte) refusal {
	rec := httptest.NewRecorder()
	for k, v := range header {
		rec.Header()[k] = v
	}
	rec.WriteHeader(status)
	_, _ = rec.Write(body)
	return refusalOf(tunnel.ReadRefusal(rec.Result()))
}

// Port is the relay's port.
func (fr *fakeRelay) Port() string {
	_, p, _ := net.SplitHostPort(fr.Addr())
	return p
}

// --- CONNECT proxy ---------------------------------------------------------

// connectProxy is an HTTP CONNECT proxy on loopback. It answers 407 unless
// the request carries user:pass, and routes every CONNECT target to dest
// (it "resolves" names the test machine cannot).
type fakeProxy struct {
	*testkit.Target
	dest string
	auth string // the expected Proxy-Authorization
}

func newFakeProxy(t *testing.T, dest string) *fakeProxy {
	t.Helper()
	p := &fakeProxy{dest: dest, auth: "Basic dXNlcjpwYXNz"} // user:pass
	p.Target = testkit.NewTarget(t, "127.0.0.1:0", p.serve)
	return p
}

func (p *fakeProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		return
	}
	if req.Header.Get("Proxy-Authorization") != p.auth {
		_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", p.dest)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, br)
		_ = up.Close()
		close(done)
	}()
	_, _ = io.Copy(c, up)
	_ = c.Close()
	<-done
}

// --- TLS target ------------------------------------------------------------

// newTLSTarget serves TLS with the PKI's certificate and returns its port.
func newTLSTarget(t *testing.T, pki *testPKI) int {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{pki.cert}}
	return testkit.NewTarget(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, cfg)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		_ = tc.Handshake()
		_, _ = io.Copy(io.Discard, tc)
	}).Port()
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string { return strconv.Itoa(testkit.RefusedPort(t)) }

// --- running the doctor ----------------------------------------------------

// setup is one agent installation in a temp directory.
type setup struct {
	dir     string
	cfgPath string
	env     map[string]string
}

// newSetup writes the config (and a private token file holding token, if
// token is not empty) into a temp directory.
func newSetup(t *testing.T, yaml, token string) *setup {
	t.Helper()
	dir := t.TempDir()
	s := &setup{dir: dir, cfgPath: filepath.Join(dir, "agent.yaml"), env: map[string]string{}}
	require.NoError(t, os.WriteFile(s.cfgPath, []byte(yaml), 0o600))
	if token != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "agent.token"), []byte(token+"\n"), 0o600))
	}
	return s
}

func (s *setup) run(t *testing.T) Report {
	t.Helper()
	return s.runWith(t, nil)
}

func (s *setup) runWith(t *testing.T, tweak func(*Options)) Report {
	t.Helper()
	opts := Options{
		ConfigPath:  s.cfgPath,
		Getenv:      func(k string) (string, bool) { v, ok := s.env[k]; return v, ok },
		Version:     "1.2.3-test",
		StepTimeout: 3 * time.Second,
		Timeout:     20 * time.Second,
		Hostname:    func() (string, error) { return "doctor-host", nil },
	}
	if tweak != nil {
		tweak(&opts)
	}
	return Run(context.Background(), opts)
}

// find returns the only check of layer whose target contains target.
func find(t *testing.T, rep Report, layer, target string) Check {
	t.Helper()
	var hits []Check
	for _, c := range rep.Checks {
		if c.Layer == layer && strings.Contains(c.Target, target) {
			hits = append(hits, c)
		}
	}
	require.Len(t, hits, 1, "checks of layer %q target %q in:\n%s", layer, target, text(t, rep))
	return hits[0]
}

func text(t *testing.T, rep Report) string {
	t.Helper()
	var b strings.Builder
	require.NoError(t, rep.WriteText(&b))
	return b.String()
}
