package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// connStatusCmd prints GET /v1/connections/{id}/status: the one place an
// admin sees why a connection does not work.
func (e adminEnv) connStatusCmd(f *adminFlags) *cobra.Command {
	var baseURL string
	cmd := apiCall[api.Status]{
		call: func(ctx context.Context, c *client.Client, args []string) (api.Status, error) {
			return c.Status(ctx, args[0], baseURL)
		},
		text: func(w io.Writer, st api.Status) error { return printFields(w, statusFields(st)...) },
	}.command(e, f, &cobra.Command{
		Use:   "status ID [--base-url URL]",
		Short: "Show tunnel, auth and allowlist state of a connection, and the reason it is not ready",
		Args:  cobra.ExactArgs(1),
	})
	cmd.Flags().StringVar(&baseURL, "base-url", "", "judge this target (https://host[:port]) against the agent's reported allowlist")
	return cmd
}

func statusFields(st api.Status) []field {
	reason := string(st.Reason)
	if reason == "" {
		reason = "-"
	}
	fields := []field{
		{"connection", st.ConnectionID},
		{"ready", strconv.FormatBool(st.Ready)},
		{"tunnel", st.TunnelStatus},
		{"auth", st.AuthStatus},
		{"allowlist", st.AllowlistStatus},
		{"reason", reason},
	}
	if st.ProviderErrorCode != "" {
		fields = append(fields, field{"provider error", st.ProviderErrorCode})
	}
	if st.RetryAfter > 0 {
		fields = append(fields, field{"retry after", strconv.Itoa(st.RetryAfter) + "s"})
	}
	if st.LastSeenAt != nil {
		fields = append(fields, field{"last seen", formatTime(*st.LastSeenAt)})
	}
	if st.LastError != "" {
		fields = append(fields, field{"last error", st.LastError})
	}
	for _, w := range st.Warnings {
		fields = append(fields, field{"warning", w.Code + ": " + w.Message})
	}
	for _, a := range st.Agents {
		fields = append(fields, field{"agent", fmt.Sprintf("%s (%s, %s) via %s: %d tunnel(s), %d active stream(s), %d rule(s) %s, heartbeat %s",
			a.AgentID, a.Hostname, a.Version, a.RelayNode, a.Tunnels, a.ActiveStreams,
			a.Allowlist.Count, a.Allowlist.Mode, formatTime(a.LastHeartbeatAt))})
	}
	return fields
}
