package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// connHistoryCmd prints GET /v1/connections/{id}/history: the connection's
// transitions, how long each state lasted, and its uptime.
func (e adminEnv) connHistoryCmd(f *adminFlags) *cobra.Command {
	var (
		since string
		limit int
	)
	cmd := apiCall[api.History]{
		call: func(ctx context.Context, c *client.Client, args []string) (api.History, error) {
			from, err := parseSince(since, time.Now())
			if err != nil {
				return api.History{}, err
			}
			return c.History(ctx, args[0], from, limit)
		},
		text: printHistory,
	}.command(e, f, &cobra.Command{
		Use:   "history ID [--since TIME|DURATION] [--limit N]",
		Short: "Show a connection's transitions (tunnel, auth, allowlist) with their time, node, reason and duration, and its uptime",
		Args:  cobra.ExactArgs(1),
	})
	cmd.Flags().StringVar(&since, "since", "", "only transitions at or after this RFC 3339 time, or this long ago (24h, 30m)")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many, the newest (default 100, at most 1000)")
	return cmd
}

// parseSince reads --since: an RFC 3339 time, or a duration back from now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2025-03-14T15:09:26Z) or a duration (24h)", v)
	}
	return now.Add(-d), nil
}

func printHistory(w io.Writer, h api.History) error {
	fmt.Fprintf(w, "connection: %s\nuptime:     %s over 24 h, %s over 7 d\n\n", clean(h.ConnectionID),
		ratio(h.Uptime.Day), ratio(h.Uptime.Week))
	rows := make([][]string, len(h.Transitions))
	for i, e := range h.Transitions {
		lasted := (time.Duration(e.DurationSeconds * float64(time.Second))).Round(time.Second).String()
		var note []string
		if e.Ongoing {
			note = append(note, "ongoing")
		}
		if e.Suppressed {
			note = append(note, "while flapping, not announced")
		}
		rows[i] = []string{formatTime(e.Time), clean(e.Type), clean(e.From), clean(e.To),
			orDash(string(e.Reason)), orDash(clean(e.Node)), lasted, strings.Join(note, ", ")}
	}
	err := printTable(w, "No transition recorded.", "TIME\tKIND\tFROM\tTO\tREASON\tNODE\tLASTED\tNOTE", rows)
	if err != nil || len(rows) == 0 || !h.Truncated {
		return err
	}
	_, err = fmt.Fprintln(w, "\nOlder transitions were left out: raise --limit or narrow --since.")
	return err
}

func ratio(r float64) string { return fmt.Sprintf("%.1f%%", float64(int(r*1000))/10) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
