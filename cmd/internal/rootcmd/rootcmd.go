// Package rootcmd gives postern-agent and postern-relay the same root
// command: a version subcommand that prints the build's stamp, errors
// printed once as "error: ...", and no usage dump when a command fails. It
// knows nothing of either program's subcommands.
package rootcmd

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// New returns the root command of program, with cmds and a version
// subcommand that prints version, commit and build date (what the build
// did not stamp comes from the toolchain's build info). A word that names
// no subcommand is an error with a suggestion, at every level.
func New(program, short, version, commit, date string, cmds ...*cobra.Command) *cobra.Command {
	version, commit, date = stamp(version, commit, date, readBuildInfo())
	root := &cobra.Command{
		Use:   program,
		Short: short,
		// A failed command is not a usage error, and Run prints the error.
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(cmds...)
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s (commit %s, built %s)\n", program, version, commit, date)
		},
	})
	refuseUnknownSubcommands(root)
	return root
}

// Run executes root and ends the process when it fails: the error goes to
// stderr and the exit status is the error's ExitCode(), when it has one,
// else 1.
func Run(root *cobra.Command) {
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(ExitCode(err))
	}
}

// exitCoder lets a command choose its exit status.
type exitCoder interface{ ExitCode() int }

// ExitCode is the exit status for err: its ExitCode() if it has one, else 1.
func ExitCode(err error) int {
	if ec, ok := err.(exitCoder); ok {
		return ec.ExitCode()
	}
	return 1
}
