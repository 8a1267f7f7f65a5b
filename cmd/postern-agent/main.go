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

// defaultConfig is where install puts the agent's config, so the commands
// that read it find it without --config on an installed machine.
const defaultConfig = "/etc/postern/agent.yaml"

// command is the shape of every postern-agent subcommand: flags only, no
// arguments, and run does the work.
func command(use, short string, run func(cmd *cobra.Command) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return run(cmd) },
	}
}

// configFlag adds --config, the agent config file, to cmd.
func configFlag(cmd *cobra.Command, path *string, usage string) {
	cmd.Flags().StringVar(path, "config", defaultConfig, usage)
}

// exitCoder lets a command choose its exit status.
type exitCoder interface{ ExitCode() int }

func exitCode(err error) int {
	if ec, ok := err.(exitCoder); ok {
		return ec.ExitCode()
	}
	return 1
}
