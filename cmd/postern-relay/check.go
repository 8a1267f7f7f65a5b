package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postern/postern/relay/api"
)

// errNotReady is what a check that ran but found the path broken returns,
// so scripts see a non-zero exit; the output already says why.
var errNotReady = errors.New("not ready")

// connCheckCmd runs POST /v1/connections/{id}/check: a live check from
// the agent inside the customer network, one line per layer.
func (e adminEnv) connCheckCmd(f *adminFlags) *cobra.Command {
	var (
		asJSON  bool
		baseURL string
	)
	cmd := &cobra.Command{
		Use:   "check ID --base-url URL",
		Short: "Check the path to a provider live, from the agent: allowlist, DNS, TCP, TLS, HTTP (exit 1 when not ready)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client(f)
			if err != nil {
				return err
			}
			ck, err := c.Check(cmd.Context(), args[0], baseURL)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				err = printJSON(w, ck)
			} else {
				err = printCheck(w, ck)
			}
			if err != nil {
				return err
			}
			if !ck.Ready {
				if ck.Reason != "" {
					return fmt.Errorf("%w: %s", errNotReady, clean(string(ck.Reason)))
				}
				return errNotReady
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&baseURL, "base-url", "", "the provider's `URL` to probe, http(s)://host[:port][/path]")
	_ = cmd.MarkFlagRequired("base-url")
	addJSONFlag(cmd, &asJSON)
	return cmd
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
