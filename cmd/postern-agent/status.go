package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/installer"
)

func newStatusCmd() *cobra.Command {
	var (
		cfgPath string
		asJSON  bool
	)
	cmd := command("status [--json]",
		"Show the running agent's tunnels and allowlist (from its local status endpoint)",
		func(cmd *cobra.Command) error {
			addr := config.DefaultStatusListen
			// The installed config is readable by root and the service
			// group only; other admins still get the status.
			if cfg, err := config.Load(cfgPath, os.LookupEnv); err == nil {
				addr = cfg.StatusListen
			} else if cmd.Flags().Changed("config") && errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("--config %s: no such file (status reads status_listen from it)", cfgPath)
			} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
				return err
			}
			out := cmd.OutOrStdout()
			service, serr := installer.ServiceState()
			if serr != nil && errors.Is(serr, installer.ErrNoServiceManager) {
				service = "unknown (no service manager here)"
			}
			st, raw, err := fetchStatus(addr)
			if err != nil {
				if !asJSON {
					fmt.Fprintf(out, "service:   %s\n", service)
				}
				return &exitError{code: 2, msg: fmt.Sprintf("agent not reachable at %s: %v (is postern-agent running?)", addr, err)}
			}
			if asJSON {
				if _, err := out.Write(raw); err != nil {
					return err
				}
				if !st.Ready {
					return &exitError{code: 1, msg: "agent is not ready"}
				}
				return nil
			}
			ready := "no: no tunnel to the relay is up"
			if st.Ready {
				ready = "yes"
			}
			fmt.Fprintf(out, "service:   %s\n", service)
			fmt.Fprintf(out, "agent:     %s (%s, version %s, up %s)\n", st.AgentID, st.Hostname, st.Version, time.Duration(st.UptimeSeconds)*time.Second)
			fmt.Fprintf(out, "ready:     %s\n", ready)
			fmt.Fprintf(out, "tunnels:   %d of %d up\n", st.TunnelsUp, st.TunnelsWanted)
			for _, t := range st.Tunnels {
				fmt.Fprintf(out, "  #%d %s node %s since %s\n", t.Slot, t.Relay, t.NodeID, t.ConnectedAt.Format(time.RFC3339))
			}
			printDown(out, st.Down)
			for _, w := range st.Warnings {
				if w.Code == agent.DuplicateCode {
					fmt.Fprintf(out, "duplicate: %s\n", w.Message)
					continue
				}
				fmt.Fprintf(out, "warning:   %s: %s\n", w.Code, w.Message)
			}
			fmt.Fprintf(out, "streams:   %d active, %d bytes in, %d bytes out\n", st.ActiveStreams, st.BytesIn, st.BytesOut)
			fmt.Fprintf(out, "allowlist: %s, %d rules, mode %s, sha256 %s\n", st.Allowlist.Status, st.Allowlist.Count, st.Allowlist.Mode, st.Allowlist.SHA256)
			if len(st.Allowlist.Blocked) > 0 {
				fmt.Fprintf(out, "blocked:   %s (and the built-in always-blocked set)\n", strings.Join(st.Allowlist.Blocked, ", "))
			}
			printRefusals(out, st)
			if !st.Ready {
				return &exitError{code: 1, msg: "agent is not ready"}
			}
			return nil
		})
	configFlag(cmd, &cfgPath, "agent config file (for status_listen)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as one JSON document")
	return cmd
}

func fetchStatus(addr string) (agent.LocalStatus, []byte, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/status")
	if err != nil {
		return agent.LocalStatus{}, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return agent.LocalStatus{}, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return agent.LocalStatus{}, nil, fmt.Errorf("status endpoint answered %s", resp.Status)
	}
	var st agent.LocalStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return agent.LocalStatus{}, nil, err
	}
	return st, raw, nil
}

// printDown prints why tunnels are missing: the relay's reason, since
// when, and when the agent tries again.
func printDown(out io.Writer, d *agent.TunnelsDown) {
	if d == nil {
		return
	}
	why := d.Message
	if d.Reason != "" {
		why = string(d.Reason) + ": " + d.Message
	}
	fmt.Fprintf(out, "down:      %s (since %s", why, d.Since.UTC().Format(time.RFC3339))
	if d.NextTryAt != nil {
		fmt.Fprintf(out, ", next try in %s", time.Until(*d.NextTryAt).Round(time.Second))
	}
	fmt.Fprintln(out, ")")
}

// printRefusals prints the streams refused since the agent started, by
// reason, and the last few of them.
func printRefusals(out io.Writer, st agent.LocalStatus) {
	if len(st.Refusals) == 0 {
		fmt.Fprintln(out, "refused:   none since the agent started")
		return
	}
	reasons := make([]string, 0, len(st.Refusals))
	for r, n := range st.Refusals {
		reasons = append(reasons, fmt.Sprintf("%s x%d", r, n))
	}
	sort.Strings(reasons)
	fmt.Fprintf(out, "refused:   %s\n", strings.Join(reasons, ", "))
	for i, r := range st.LastRefusals {
		if i == 5 {
			break
		}
		fmt.Fprintf(out, "  %s %s %s %s\n", r.Time.UTC().Format(time.RFC3339), r.Target, r.Reason, r.RequestID)
	}
}
