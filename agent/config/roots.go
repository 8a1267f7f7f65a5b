package config

import (
	"crypto/x509"
	"fmt"
	"os"
)

// CertPool returns what the agent trusts for TLS: the system roots plus
// the PEM certificates of caFile (ca_file), read now so a renewed bundle
// counts without a restart. An empty caFile gives the system roots alone.
// The same pool verifies the relay, a TLS-inspecting egress proxy and,
// in live checks, the targets.
func CertPool(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s: no PEM certificate found", caFile)
	}
	return pool, nil
}
