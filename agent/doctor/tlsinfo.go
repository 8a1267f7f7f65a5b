package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
)

// trust is what the agent trusts for TLS: the system roots plus ca_file.
type trust struct {
	system *x509.CertPool // the system roots alone
	all    *x509.CertPool // the system roots and ca_file
	caFile string
	err    error // ca_file could not be used; all is then the system roots
}

func newTrust(caFile string) *trust {
	sys, err := x509.SystemCertPool()
	if err != nil || sys == nil {
		sys = x509.NewCertPool()
	}
	t := &trust{system: sys, all: sys, caFile: caFile}
	if caFile == "" {
		return t
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.err = fmt.Errorf("ca_file: %w", err)
		return t
	}
	all := sys.Clone()
	if !all.AppendCertsFromPEM(pem) {
		t.err = fmt.Errorf("ca_file %s: no PEM certificate found", caFile)
		return t
	}
	t.all = all
	return t
}

// certResult is a TLS handshake's certificate judged the way the agent
// judges it, with what an admin needs to recognise an interception.
type certResult struct {
	state     tls.ConnectionState
	leaf      *x509.Certificate
	err       error // nil when the chain verified
	viaCAFile bool  // verified only thanks to ca_file
}

// handshake runs a TLS client handshake on conn and verifies the peer's
// chain for name against the system roots and ca_file. Verification is done
// here rather than by crypto/tls so that a rejected certificate can still be
// described (subject, issuer): that is how a TLS-inspecting proxy shows up.
// The returned conn is nil unless the handshake succeeded and the chain
// verified.
func (t *trust) handshake(ctx context.Context, conn net.Conn, name string) (*tls.Conn, certResult, error) {
	tc := tls.Client(conn, &tls.Config{
		ServerName: name,
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		// Verified below, against the same roots, so that a failure can
		// still show whose certificate it was.
		InsecureSkipVerify: true, //nolint:gosec // verified in verify()
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, certResult{}, err
	}
	res := t.verify(tc.ConnectionState(), name)
	if res.err != nil {
		return nil, res, res.err
	}
	return tc, res, nil
}

func (t *trust) verify(st tls.ConnectionState, name string) certResult {
	res := certResult{state: st}
	if len(st.PeerCertificates) == 0 {
		res.err = errors.New("the server sent no certificate")
		return res
	}
	res.leaf = st.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{DNSName: name, Intermediates: inter, Roots: t.system}
	_, err := res.leaf.Verify(opts)
	if err != nil && t.all != t.system {
		opts.Roots = t.all
		if _, err2 := res.leaf.Verify(opts); err2 == nil {
			err, res.viaCAFile = nil, true
		}
	}
	res.err = err
	return res
}

// summary describes the certificate: "TLS 1.3, subject relay.example.com,
// issuer R11, expires 2026-03-01".
func (c certResult) summary() string {
	var parts []string
	if v := tls.VersionName(c.state.Version); v != "" && c.state.Version != 0 {
		parts = append(parts, v)
	}
	if c.leaf != nil {
		parts = append(parts,
			"subject "+certName(c.leaf.Subject.CommonName, c.leaf.Subject.Organization, c.leaf.Subject.String()),
			"issuer "+issuerName(c.leaf),
			"expires "+c.leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	return strings.Join(parts, ", ")
}

func issuerName(c *x509.Certificate) string {
	return certName(c.Issuer.CommonName, c.Issuer.Organization, c.Issuer.String())
}

func certName(cn string, org []string, full string) string {
	switch {
	case cn != "":
		return cn
	case len(org) > 0 && org[0] != "":
		return org[0]
	case full != "":
		return full
	}
	return "(empty)"
}

// tlsFailure turns a handshake or verification failure into a check.
// forRelay selects the advice: for the relay the agent's own trust decides;
// for a target it is the cloud product that must trust the certificate.
func tlsFailure(res certResult, err error, name string, forRelay bool) Check {
	desc := res.summary()
	with := func(s string) string {
		if desc == "" {
			return s
		}
		return s + "; " + desc
	}
	var (
		unknown  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalid  x509.CertificateInvalidError
		issuerCN string
	)
	if res.leaf != nil {
		issuerCN = issuerName(res.leaf)
	}
	switch {
	case errors.As(err, &unknown) && forRelay:
		return fail(protocol.TLSFailed,
			with("certificate signed by an unknown authority")+" — issuer: "+issuerCN+
				"; if this is your proxy's CA, add it with ca_file",
			"if "+issuerCN+" is your proxy's or company's CA, add its PEM with ca_file; otherwise relay_url does not reach the real relay")
	case errors.As(err, &unknown):
		return fail(protocol.TLSFailed,
			with("certificate signed by an unknown authority")+" — issuer: "+issuerCN,
			"the cloud product verifies TLS end to end: give the target a certificate from a public CA, or give the product the CA of "+issuerCN)
	case errors.As(err, &hostErr):
		names := "no names"
		if res.leaf != nil && len(res.leaf.DNSNames)+len(res.leaf.IPAddresses) > 0 {
			var ns []string
			ns = append(ns, res.leaf.DNSNames...)
			for _, ip := range res.leaf.IPAddresses {
				ns = append(ns, ip.String())
			}
			names = strings.Join(ns, ", ")
		}
		advice := "the certificate does not name " + name + " (it names " + names + "); fix the target's certificate or the allow rule's name"
		if forRelay {
			advice = "the certificate does not name " + name + " (it names " + names + "); check relay_url, or whether a proxy intercepts TLS"
		}
		return fail(protocol.TLSFailed, with("certificate is not valid for "+name), advice)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fail(protocol.TLSFailed, with("certificate expired or not yet valid"),
			"check this machine's clock; if it is right, the certificate must be renewed")
	case res.leaf != nil:
		return fail(protocol.TLSFailed, with(err.Error()), "the certificate chain is not acceptable; see the detail")
	}
	advice := "the TLS handshake with " + name + " failed; is this port serving TLS?"
	if forRelay {
		advice = "the TLS handshake with the relay failed; check relay_url's port, or whether something in between blocks TLS"
	}
	return fail(protocol.TLSFailed, "TLS handshake: "+err.Error(), advice)
}

// sniNote says what the handshake sent as SNI.
func sniNote(name string) string {
	if _, err := netip.ParseAddr(name); err == nil {
		return "no SNI (IP address)"
	}
	return "SNI " + name
}
