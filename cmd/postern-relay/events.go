package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// maxEventsRetryDelay caps the wait between reconnects of events.
const maxEventsRetryDelay = 30 * time.Second

func newEventsCmd() *cobra.Command { return adminEnv{getenv: os.Getenv}.eventsCmd() }

// eventsCmd follows GET /v1/events until interrupted, reconnecting with
// the last event id when the stream breaks.
func (e adminEnv) eventsCmd() *cobra.Command {
	f := &adminFlags{}
	var (
		asJSON bool
		connID string
		lastID string
	)
	cmd := &cobra.Command{
		Use:   "events [--connection ID] [--json]",
		Short: "Follow tunnel, auth and allowlist status changes as they happen",
		Long: "Follow the relay's status events until interrupted. A broken stream is resumed from the\n" +
			"last event received. With --json, each event is one JSON object on its own line.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client(f)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			emit := printEvent
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				emit = func(_ io.Writer, ev api.Event) error { return enc.Encode(ev) }
			}
			return keyRefused(followEvents(ctx, c, connID, lastID, func(ev api.Event) error {
				return emit(cmd.OutOrStdout(), ev)
			}, cmd.ErrOrStderr()), f)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&connID, "connection", "", "only the events of connection `ID`")
	cmd.Flags().StringVar(&lastID, "last-event-id", "", "resume after event `ID` (replayed while the relay still keeps it)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each event as one line of JSON")
	return cmd
}

// followEvents streams events to fn until ctx ends. Answers that retrying
// cannot fix (a wrong key, an unknown connection, something that is not
// a relay) end it with their error; a broken stream is resumed.
func followEvents(ctx context.Context, c *client.Client, connID, lastID string, fn func(api.Event) error, errOut io.Writer) error {
	var delay time.Duration
	for {
		progressed := false
		handle := func(ev api.Event) error {
			if ev.ID != "" {
				lastID = ev.ID
			}
			progressed = true
			return fn(ev)
		}
		var err error
		if connID != "" {
			err = c.ConnectionEvents(ctx, connID, lastID, handle)
		} else {
			err = c.Events(ctx, lastID, handle)
		}
		if ctx.Err() != nil {
			return nil
		}
		var (
			apiErr *api.Error
			unexp  *client.UnexpectedResponseError
		)
		if errors.As(err, &apiErr) || errors.As(err, &unexp) {
			return err
		}
		switch {
		case errors.Is(err, client.ErrOverflow), progressed:
			delay = 0
		default:
			delay = min(max(2*delay, time.Second), maxEventsRetryDelay)
		}
		fmt.Fprintf(errOut, "event stream: %v; resuming", err)
		if lastID != "" {
			fmt.Fprintf(errOut, " after %s", clean(lastID))
		}
		if delay > 0 {
			fmt.Fprintf(errOut, " in %s", delay)
		}
		fmt.Fprintln(errOut)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// printEvent writes one event as a line for a person.
func printEvent(w io.Writer, ev api.Event) error {
	when := formatTime(ev.Time)
	if ev.Type == api.EventReset {
		_, err := fmt.Fprintf(w, "%s  reset: events were missed; re-read status with 'postern-relay connections status ID'\n", when)
		return err
	}
	line := []string{when, clean(ev.ConnectionID), clean(ev.Workspace), clean(ev.Type) + ":", clean(ev.From), "->", clean(ev.To)}
	if ev.Reason != "" {
		line = append(line, " "+clean(string(ev.Reason)))
		if ev.ProviderErrorCode != "" {
			line = append(line, "("+clean(ev.ProviderErrorCode)+")")
		}
	}
	if ev.ID != "" { // what --last-event-id resumes after
		line = append(line, " [event "+clean(ev.ID)+"]")
	}
	_, err := fmt.Fprintln(w, strings.Join(line, " "))
	return err
}
