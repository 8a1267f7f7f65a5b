package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// errNotReady is what a check that ran but found the path broken returns,
// so scripts see a non-zero exit; the output already says why.
var errNotReady = errors.New("not ready")

// connCheckCmd runs POST /v1/connections/{id}/check: a live check from
// the agent inside the customer network, one line per layer.
func (e adminEnv) connCheckCmd(f *adminFlags) *cobra.Command {
	var baseURL string
	cmd := apiCall[api.Check]{
		call: func(ctx context.Context, c *client.Client, args []string) (api.Check, error) {
			return c.Check(ctx, args[0], baseURL)
		},
		text:    printCheck,
		verdict: checkVerdict,
	}.command(e, f, &cobra.Command{
		Use:   "check ID --base-url URL",
		Short: "Check the path to a provider live, from the agent: allowlist, DNS, TCP, TLS, HTTP (exit 1 when not ready)",
		Args:  cobra.ExactArgs(1),
	})
	cmd.Flags().StringVar(&baseURL, "base-url", "", "the provider's `URL` to probe, http(s)://host[:port][/path]")
	_ = cmd.MarkFlagRequired("base-url")
	return cmd
}

// checkVerdict fails a check that found the path broken.
func checkVerdict(ck api.Check) error {
	if ck.Ready {
		return nil
	}
	if ck.Reason != "" {
		return fmt.Errorf("%w: %s", errNotReady, clean(string(ck.Reason)))
	}
	return errNotReady
}

// printCheck prints one line per step, then the verdict:
//
//	PASS dns 3ms 10.0.0.7 (server 10.0.0.2:53, NOERROR)
//	FAIL tcp 1ms CONNECT_REFUSED: dial 10.0.0.7:443: connection refused
//	ready: no (CONNECT_REFUSED)
func printCheck(w io.Writer, ck api.Check) error {
	for _, s := range ck.Steps {
		mark := "PASS"
		if !s.OK {
			mark = "FAIL"
		}
		line := mark + " " + clean(s.Step) + " " + strconv.FormatInt(s.MS, 10) + "ms"
		if s.Reason != "" {
			line += " " + clean(string(s.Reason))
			if s.Detail != "" {
				line += ":"
			}
		}
		if s.Detail != "" {
			line += " " + clean(s.Detail)
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	verdict := "ready: yes"
	if !ck.Ready {
		verdict = "ready: no"
		var why []string
		if ck.Reason != "" {
			why = append(why, clean(string(ck.Reason)))
		}
		if ck.RetryAfter > 0 {
			why = append(why, "retry after "+strconv.Itoa(ck.RetryAfter)+"s")
		}
		if len(why) > 0 {
			verdict += " (" + strings.Join(why, ", ") + ")"
		}
	}
	_, err := fmt.Fprintln(w, verdict)
	return err
}
