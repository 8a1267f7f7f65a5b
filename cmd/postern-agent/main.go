// Command postern-agent runs the customer side of Postern: it keeps
// outbound tunnels to the relay and serves the streams the allowlist
// permits. Flag parsing and wiring only; the behaviour lives in package
// agent.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Stamped by the build (see Makefile).
var (
	version = "dev"
	commit  = "none"
	date    = "unknown"
)

func main() {
	root := &cobra.Command{
		Use:           "postern-agent",
		Short:         "Postern agent: lets a cloud product reach allowlisted services in this network",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newValidateCmd(), newStatusCmd(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "postern-agent %s (commit %s, built %s)\n", version, commit, date)
		},
	})
	root.AddCommand(newServiceCmds()...)
	root.AddCommand(newDoctorCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(exitCode(err))
	}
}

// exitCoder lets a command choose its exit status.
type exitCoder interface{ ExitCode() int }

func exitCode(err error) int {
	if ec, ok := err.(exitCoder); ok {
		return ec.ExitCode()
	}
	return 1
}
