package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/cmd/internal/debugserve"
	"github.com/postern/postern/cmd/internal/logring"
	"github.com/postern/postern/cmd/internal/stopsignal"
	"github.com/postern/postern/installer"
)

func newRunCmd() *cobra.Command {
	var cfgPath string
	cmd := command("run --config FILE", "Run the agent in the foreground", func(cmd *cobra.Command) error {
		return run(cmd.Context(), cfgPath)
	})
	configFlag(cmd, &cfgPath, "agent config file")
	return cmd
}

func run(ctx context.Context, cfgPath string) error {
	// SIGHUP, or a change to the file, reloads the allowlist: validate
	// first, then swap; a bad file keeps the rules in force. The signal is
	// caught from the start, so a reload sent while the agent starts up
	// (systemctl reload right after start) is not the default action,
	// which would end the agent.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := config.Load(cfgPath, os.LookupEnv)
	if err != nil {
		return err
	}
	token, err := cfg.LoadToken(os.LookupEnv)
	if err != nil {
		return err
	}
	recent := logring.New(recentLines)
	log := slog.New(logring.Tee(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}), recent, nil, ""))
	res, err := resolve.New(resolve.Config{Servers: cfg.DNSServers, Timeout: cfg.DNSTimeout, Logger: log})
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	opts := agent.DefaultOptions()
	opts.Config = cfg
	opts.Token = token
	opts.Version = version
	opts.Logger = log
	opts.Resolver = res
	opts.RecentLogs = recent.Lines
	if cfg.AuditLog != "" {
		al, err := audit.Open(cfg.AuditLog, audit.DefaultMaxBytes, audit.DefaultKeep)
		if err != nil {
			return err
		}
		defer al.Close()
		opts.Audit = al
	}
	a, err := agent.New(opts)
	if err != nil {
		return err
	}
	statusLn, err := listenStatus(cfg.StatusListen)
	if err != nil {
		return err
	}
	log.Info("agent starting", "version", version, "config", cfgPath, "rules", cfg.Rules.Len(), "mode", cfg.Mode.String())

	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_ = a.WatchConfig(watchCtx, cfgPath, func() (*config.Config, error) { return config.Load(cfgPath, os.LookupEnv) }, hup, 2*time.Second)
	}()
	defer func() { stopWatch(); <-watchDone }()

	stopStatus := serveStatus(statusLn, a, log)
	defer stopStatus()
	stopDebug, err := debugserve.Start(log)
	if err != nil {
		return err
	}
	defer stopDebug()
	ctx, stop := stopsignal.Notify(ctx, log, a.Force)
	defer stop()
	return installer.RunService(ctx, a.Run)
}

// listenStatus binds status_listen. A taken address is an error at start:
// most often another postern-agent runs with the same config, and an agent
// whose status nobody can read is hard to run.
func listenStatus(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("status_listen %s: %w (is another postern-agent running with this config? set status_listen to another address, or \"\" for none)", addr, err)
	}
	return ln, nil
}

// serveStatus serves the local status endpoint on ln, when there is one.
func serveStatus(ln net.Listener, a *agent.Agent, log *slog.Logger) (stop func()) {
	if ln == nil {
		return func() {}
	}
	srv := &http.Server{Handler: a.StatusHandler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	log.Info("status server listening", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}
}
