package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// healthTimeout bounds one probe: a container runtime's health check
// must answer before its own timeout.
const healthTimeout = 3 * time.Second

// newHealthCmd is a probe for a container's HEALTHCHECK or a script: the
// image has no shell and no curl, so the relay asks itself.
func newHealthCmd() *cobra.Command {
	var target string
	cmd := &cobra.Command{
		Use:   "health [--url URL]",
		Short: "Exit 0 if the relay at URL answers 200 (for container health checks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return probeHealth(cmd.Context(), cmd.OutOrStdout(), target)
		},
	}
	cmd.Flags().StringVar(&target, "url", "http://127.0.0.1:8080/readyz",
		"`URL` to probe: the relay's /readyz (ready for traffic) or /healthz (alive)")
	return cmd
}

func probeHealth(ctx context.Context, w io.Writer, target string) error {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q: want an http:// or https:// URL", target)
	}
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s", target, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(w, "%s: %s\n", target, resp.Status)
	return nil
}
