package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/doctor"
	"github.com/postern/postern/cmd/internal/bundle"
)

// recentLines is how many log and audit lines a support bundle carries.
const recentLines = 1000

func newDiagCmd() *cobra.Command {
	var cfgPath, out string
	cmd := command("diag --config FILE --out FILE.zip",
		"Collect a support bundle (secrets replaced) to attach to a support request",
		func(cmd *cobra.Command) error {
			if out == "" {
				return errors.New("--out FILE.zip is required")
			}
			b := bundle.New("postern-agent", version)
			collectAgent(cmd.Context(), b, cfgPath)
			m, err := b.Write(out)
			if err != nil {
				return err
			}
			return m.Print(cmd.OutOrStdout(), out)
		})
	cmd.Long = "diag collects, into one zip: the version, the config file and the environment with every secret\n" +
		"replaced, the running agent's status, its newest log lines and goroutine and heap profiles (from\n" +
		"its status listener, on this machine only), doctor's checks, and the last 1,000 audit log lines,\n" +
		"with a manifest. The token, the egress proxy's password and anything shaped like a Postern\n" +
		"credential are replaced by " + bundle.Redacted + " in every file."
	configFlag(cmd, &cfgPath, "agent config file")
	cmd.Flags().StringVar(&out, "out", "", "write the bundle to this zip file (mode 0600)")
	return cmd
}

// collectAgent fills the bundle; what fails to come is listed as missing.
func collectAgent(ctx context.Context, b *bundle.Bundle, cfgPath string) {
	b.Add("version.txt", fmt.Appendf(nil, "postern-agent %s (commit %s, built %s)\ncollected: %s\n",
		version, commit, date, time.Now().UTC().Format(time.RFC3339)))
	learnAgentSecrets(b)
	addAgentEnv(b)
	statusAddr := config.DefaultStatusListen
	cfg, err := config.Load(cfgPath, os.LookupEnv)
	if err != nil {
		b.Missing("config.txt", err)
	} else {
		statusAddr = cfg.StatusListen
		if tok, err := cfg.LoadToken(os.LookupEnv); err == nil {
			b.Secret(tok)
		}
		if cfg.EgressProxy != nil {
			b.Secret(bundle.URLPassword(cfg.EgressProxy.String()))
		}
		b.Add("config.txt", []byte(cfg.String()+"\n"))
		if cfg.AuditLog != "" {
			addFile(b, "audit.jsonl", func() ([]byte, error) { return bundle.TailLines(cfg.AuditLog, recentLines) })
		}
	}
	addFile(b, "agent.yaml", func() ([]byte, error) {
		data, err := os.ReadFile(cfgPath)
		if err != nil {
			return nil, err
		}
		return bundle.RedactYAML(data)
	})
	addRunning(ctx, b, statusAddr)
	addDoctor(ctx, b, cfgPath)
}

// learnAgentSecrets tells the bundle the secrets of the environment.
func learnAgentSecrets(b *bundle.Bundle) {
	b.Secret(os.Getenv(config.EnvAgentToken))
	for _, name := range []string{config.EnvEgressProxy, "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		b.Secret(bundle.URLPassword(os.Getenv(name)))
	}
}

// addAgentEnv lists the agent's variables; the token's value never.
func addAgentEnv(b *bundle.Bundle) {
	var lines []string
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		if !strings.HasPrefix(upper, "POSTERN_") && !strings.HasSuffix(upper, "_PROXY") {
			continue
		}
		if name == config.EnvAgentToken || strings.Contains(upper, "TOKEN") || strings.Contains(upper, "KEY") {
			value = bundle.Redacted
		}
		lines = append(lines, name+"="+bundle.RedactURL(value))
	}
	sort.Strings(lines)
	b.Add("environment.txt", []byte(strings.Join(lines, "\n")+"\n"))
}

// addRunning takes from the running agent, over its status listener on
// this machine: status, newest log lines, and goroutine and heap
// profiles of its own process.
func addRunning(ctx context.Context, b *bundle.Bundle, addr string) {
	hc := &http.Client{Timeout: 10 * time.Second}
	for name, path := range map[string]string{
		"status.json": "/status", "agent.log": "/debug/logs",
		"goroutine.txt": "/debug/pprof/goroutine?debug=2", "heap.pprof": "/debug/pprof/heap",
	} {
		addFile(b, name, func() ([]byte, error) { return getLocal(ctx, hc, "http://"+addr+path) })
	}
}

func getLocal(ctx context.Context, hc *http.Client, u string) ([]byte, error) {
	data, err := bundle.Fetch(ctx, hc, u)
	var ue *url.Error
	if errors.As(err, &ue) {
		return nil, fmt.Errorf("the running agent's status listener: %w (is postern-agent running?)", err)
	}
	return data, err
}

// addDoctor runs doctor's checks here and adds both its outputs.
func addDoctor(ctx context.Context, b *bundle.Bundle, cfgPath string) {
	rep := doctor.Run(ctx, doctor.Options{ConfigPath: cfgPath, Getenv: os.LookupEnv, Version: version})
	var text, js bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		b.Missing("doctor.txt", err)
	} else {
		b.Add("doctor.txt", text.Bytes())
	}
	if err := rep.WriteJSON(&js); err != nil {
		b.Missing("doctor.json", err)
	} else {
		b.Add("doctor.json", js.Bytes())
	}
}

// addFile adds what get returns, or records why it could not.
func addFile(b *bundle.Bundle, name string, get func() ([]byte, error)) {
	data, err := get()
	if err != nil {
		b.Missing(name, err)
		return
	}
	b.Add(name, data)
}
