package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/cmd/internal/bundle"
	"github.com/postern/postern/relay/admin"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// maxBundleConnections bounds the statuses a bundle carries.
const maxBundleConnections = 1000

func newDiagCmd() *cobra.Command { return adminEnv{getenv: os.Getenv}.diagCmd() }

// diagCmd collects a support bundle from a running relay node through its
// API (an admin key): what runs and how it is set, its checks, every
// connection's status, its newest log and audit lines, and goroutine and
// heap profiles of the node's own process.
func (e adminEnv) diagCmd() *cobra.Command {
	var out, cfgFile string
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "diag --out FILE.zip [--config FILE]",
		Short: "Collect a support bundle from the running relay node (secrets replaced) to attach to a support request",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out FILE.zip is required")
			}
			c, server, key, err := e.diagClient(f)
			if err != nil {
				return err
			}
			var refused *api.Error
			if _, err := c.Diag(cmd.Context(), "info"); errors.As(err, &refused) {
				return fmt.Errorf("the relay refused its diagnostics (they need an admin key): %w", err)
			}
			b := bundle.New("postern-relay", version)
			b.Secret(key)
			e.collectRelay(cmd.Context(), b, c, server, cfgFile)
			m, err := b.Write(out)
			if err != nil {
				return err
			}
			return m.Print(cmd.OutOrStdout(), out)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&out, "out", "", "write the bundle to this zip file (mode 0600)")
	cmd.Flags().StringVar(&cfgFile, "config", "", "also include this relay config file, secrets replaced")
	return cmd
}

func (e adminEnv) diagClient(f *adminFlags) (*client.Client, string, string, error) {
	server, err := resolveServer(f.server, e.getenv)
	if err != nil {
		return nil, "", "", err
	}
	key, err := resolveKey(f.keyFile, e.getenv)
	if err != nil {
		return nil, "", "", err
	}
	hc, err := e.httpClientFor(f)
	if err != nil {
		return nil, "", "", err
	}
	return client.New(server, key, hc), server, key, nil
}

// collectRelay fills the bundle; what fails to come is listed as missing.
func (e adminEnv) collectRelay(ctx context.Context, b *bundle.Bundle, c *client.Client, server, cfgFile string) {
	b.Add("version.txt", fmt.Appendf(nil, "postern-relay %s (commit %s, built %s)\nserver: %s\ncollected: %s\n",
		version, commit, date, server, time.Now().UTC().Format(time.RFC3339)))
	if db := e.getenv(envDatabaseURL); db != "" {
		b.Secret(bundle.URLPassword(db))
	}
	if cfgFile != "" {
		addRelayConfig(b, cfgFile)
	}
	b.Add("doctor.txt", relayChecks(ctx, e.plainClient(), server))
	for _, part := range admin.DiagParts {
		name := map[string]string{"info": "node.json", "logs": "relay.log", "audit": "audit.log",
			"goroutine": "goroutine.txt", "heap": "heap.pprof"}[part]
		data, err := c.Diag(ctx, part)
		if err != nil {
			b.Missing(name, err)
			continue
		}
		b.Add(name, data)
	}
	if data, err := bundle.Fetch(ctx, e.plainClient(), server+"/metrics"); err != nil {
		b.Missing("metrics.txt", err)
	} else {
		b.Add("metrics.txt", data)
	}
	statuses, err := connectionStatuses(ctx, c)
	if err != nil {
		b.Missing("status.json", err)
		return
	}
	b.AddJSON("status.json", statuses)
}

// addRelayConfig adds the config file, with its secrets replaced, and
// learns the secrets its files hold so that they are replaced anywhere.
func addRelayConfig(b *bundle.Bundle, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Missing("relay.yaml", err)
		return
	}
	var cfg serveConfig
	if err := loadServeConfig(path, &cfg); err == nil {
		b.Secret(bundle.URLPassword(cfg.Database))
		for _, w := range cfg.Webhooks {
			if s, err := readSecretFile(w.SecretFile); err == nil {
				b.Secret(string(s))
			}
		}
		if k, err := os.ReadFile(cfg.ClusterKeyFile); err == nil && cfg.ClusterKeyFile != "" {
			b.Secret(strings.TrimSpace(string(k)))
		}
	}
	red, err := bundle.RedactYAML(data)
	if err != nil {
		b.Missing("relay.yaml", err)
		return
	}
	b.Add("relay.yaml", red)
}

// connectionStatus is one connection of status.json.
type connectionStatus struct {
	Connection api.Connection `json:"connection"`
	Status     *api.Status    `json:"status,omitempty"`
	Error      string         `json:"error,omitempty"`
}

func connectionStatuses(ctx context.Context, c *client.Client) ([]connectionStatus, error) {
	list, err := c.ListConnections(ctx)
	if err != nil {
		return nil, err
	}
	out := []connectionStatus{}
	for i, conn := range list.Connections {
		if i == maxBundleConnections {
			break
		}
		cs := connectionStatus{Connection: conn}
		if st, err := c.Status(ctx, conn.ID, ""); err != nil {
			cs.Error = err.Error()
		} else {
			cs.Status = &st
		}
		out = append(out, cs)
	}
	return out, nil
}

// relayChecks stands for a doctor on the relay's side: the node's health,
// readiness (its store) and version, as its load balancer sees them.
func relayChecks(ctx context.Context, hc *http.Client, server string) []byte {
	var b strings.Builder
	for _, path := range []string{"/healthz", "/readyz"} {
		data, err := bundle.Fetch(ctx, hc, server+path)
		verdict := "PASS"
		if err != nil {
			verdict = "FAIL"
			data = []byte(err.Error())
		}
		fmt.Fprintf(&b, "%s %s: %s\n", verdict, path, strings.TrimSpace(string(data)))
	}
	return []byte(b.String())
}

// plainClient is the HTTP client of the unauthenticated endpoints.
func (e adminEnv) plainClient() *http.Client {
	if e.httpClient != nil {
		return e.httpClient
	}
	return &http.Client{Timeout: 10 * time.Second}
}
