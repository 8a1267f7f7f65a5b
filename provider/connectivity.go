package provider

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/client"
)

// checkConnectivity is the self-hosted path through Postern: the
// connection's status for the base URL (for the summary), then a real
// CONNECT through the relay and, for https, the provider's TLS handshake
// inside it. Any refusal is its reason code; nothing about the credential
// is judged before the path works.
func (r *run) checkConnectivity(ctx context.Context) bool {
	if r.c.cfg.Relay == nil {
		return r.fail(StepConnectivity, CodeConnectivityBlocked, "no relay proxy configured for self-hosted providers")
	}
	cfg := *r.c.cfg.Relay
	cfg.ConnectionID = r.req.Connection
	d, err := client.NewDialer(cfg)
	if err != nil {
		return r.fail(StepConnectivity, CodeConnectivityBlocked, "relay proxy: "+err.Error())
	}
	if !r.readStatus(ctx) {
		return false
	}
	detail, ok := r.dialThrough(ctx, d)
	if !ok {
		return false
	}
	r.useTransport(client.NewTransport(d, r.tlsConfig()))
	return r.pass(StepConnectivity, detail)
}

// readStatus fills the connectivity summary from the relay's status API.
// A status the relay cannot give (no API configured, a network error) is
// left unknown: the CONNECT that follows is the verdict. A connection the
// relay does not know, or a refused API key, fails here.
func (r *run) readStatus(ctx context.Context) bool {
	if r.c.cfg.API == nil {
		return true
	}
	ctx, cancel := r.stepContext(ctx)
	defer cancel()
	st, err := r.c.cfg.API.Status(ctx, r.req.Connection, r.base.Scheme+"://"+r.hostPort())
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return r.refused("status of connection "+r.req.Connection, pe)
	case err != nil:
		return true
	}
	r.st.Connectivity.TunnelStatus = st.TunnelStatus
	r.st.Connectivity.AllowlistStatus = st.AllowlistStatus
	return true
}

// dialThrough opens one CONNECT to the provider and, for https, completes
// the provider's TLS handshake inside it.
func (r *run) dialThrough(ctx context.Context, d *client.Dialer) (string, bool) {
	ctx, cancel := r.stepContext(ctx)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", r.hostPort())
	if err != nil {
		var pe *protocol.Error
		if errors.As(err, &pe) {
			return "", r.refused("CONNECT "+r.hostPort()+" through the relay", pe)
		}
		return "", r.fail(StepConnectivity, CodeConnectivityBlocked, err.Error())
	}
	defer conn.Close()
	detail := "CONNECT " + r.hostPort() + " through the relay: established"
	if r.base.Scheme != "https" {
		return detail + "; plain http: the credential crosses the customer network unencrypted", true
	}
	cfg := r.tlsConfig()
	cfg.ServerName = r.host
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		r.st.Connectivity.Reason = protocol.TLSFailed
		return "", r.fail(StepConnectivity, CodeBaseURLUnreachable, "TLS with "+r.hostPort()+" through the relay: "+err.Error())
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		detail += "; TLS " + certs[0].Subject.String() + ", expires " + certs[0].NotAfter.UTC().Format(time.DateOnly)
	}
	return detail, true
}

// refused records a Postern refusal: its reason, and its provider code
// from the reason table (a reason without one, such as a wrong API key or
// an unknown connection, blocks the path all the same).
func (r *run) refused(what string, pe *protocol.Error) bool {
	r.st.Connectivity.Reason = pe.Reason
	code := pe.Reason.Info().ProviderErrorCode
	if code == "" {
		code = CodeConnectivityBlocked
	}
	if code == CodeRateLimited {
		r.st.RetryAfter = max(1, pe.RetryAfter)
	}
	detail := what + ": " + pe.Error()
	if pe.RequestID != "" {
		detail += " (request " + pe.RequestID + ")"
	}
	return r.fail(StepConnectivity, code, detail)
}
