// Command postern-agent runs the customer side of Postern: it keeps
// outbound tunnels to the relay and serves the streams the allowlist
// permits. Flag parsing and wiring only; the behaviour lives in package
// agent.
package main

import (
	"github.com/spf13/cobra"

	"github.com/postern/postern/cmd/internal/rootcmd"
)

// Stamped by the build (see Makefile).
var (
	version = "dev"
	commit  = "none"
	date    = "unknown"
)

func main() {
	rootcmd.Run(rootcmd.New("postern-agent",
		"Postern agent: lets a cloud product reach allowlisted services in this network",
		version, commit, date,
		append(newServiceCmds(), newRunCmd(), newValidateCmd(), newStatusCmd(), newDoctorCmd(), newDiagCmd())...))
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
