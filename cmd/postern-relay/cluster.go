package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"

	"github.com/postern/postern/relay"
	"github.com/postern/postern/relay/cluster"
	"github.com/postern/postern/relay/store"
)

// envDatabaseURL names the store URL in the environment, so a password in
// it never sits in argv.
const envDatabaseURL = "POSTERN_DATABASE_URL"

// clusterConfig reads the cluster settings. None of them means a single
// node; any of them means a cluster, which needs all three and a store
// the nodes share.
func (cfg serveConfig) clusterConfig(st store.Store) (*relay.ClusterConfig, error) {
	if cfg.PeerListen == "" && cfg.PeerAdvertise == "" && cfg.ClusterKeyFile == "" {
		return nil, nil
	}
	if _, shared := st.(store.Cluster); !shared {
		return nil, errors.New("--peer-listen, --peer-advertise and --cluster-key-file make a cluster, whose nodes share one PostgreSQL database: " +
			"give --database postgres://… (or POSTERN_DATABASE_URL); SQLite serves a single node")
	}
	if cfg.PeerListen == "" || cfg.PeerAdvertise == "" || cfg.ClusterKeyFile == "" {
		return nil, errors.New("a cluster node needs --peer-listen, --peer-advertise and --cluster-key-file together")
	}
	key, err := readSecretFile(cfg.ClusterKeyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	if len(key) < cluster.MinKeyLen {
		return nil, fmt.Errorf("cluster key %s: at least %d bytes required (e.g. openssl rand -hex 32)", cfg.ClusterKeyFile, cluster.MinKeyLen)
	}
	u, err := url.Parse(cfg.PeerAdvertise)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, fmt.Errorf("--peer-advertise %q: want ws://host:port, or wss://host:port when the relay has --tls-cert", cfg.PeerAdvertise)
	}
	if (u.Scheme == "wss") != (cfg.TLSCert != "") {
		return nil, errors.New("--peer-advertise is wss:// exactly when the relay serves TLS (--tls-cert)")
	}
	lease := cfg.ClusterLease
	if lease <= 0 {
		lease = 3 * cfg.relayConfig().HeartbeatInterval
	}
	peerTLS, err := cfg.peerTLS()
	if err != nil {
		return nil, err
	}
	return &relay.ClusterConfig{PeerAdvertise: cfg.PeerAdvertise, Key: key, Lease: lease, PeerTLS: peerTLS}, nil
}

// peerTLS verifies the other nodes with the system roots plus the
// certificates of this node's own --tls-cert, so a cluster whose nodes
// share a private CA (or one self-signed certificate) needs nothing more.
func (cfg serveConfig) peerTLS() (*tls.Config, error) {
	if cfg.TLSCert == "" {
		return nil, nil
	}
	pool, err := rootsWith(cfg.TLSCert)
	if err != nil {
		return nil, fmt.Errorf("tls_cert as the peers' root: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}
