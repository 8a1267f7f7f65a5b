// Command postern-relay runs the cloud side of Postern (serve) and
// administers a running relay through its API (connections, api-keys).
// Flag parsing and wiring only; the behaviour lives in package relay.
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
		Use:           "postern-relay",
		Short:         "Postern relay: accepts agent tunnels and proxies the product's requests into customer networks",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newEventsCmd())
	root.AddCommand(newProviderCmd())
	root.AddCommand(newServeCmd(), newConnectionsCmd(), newAPIKeysCmd(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "postern-relay %s (commit %s, built %s)\n", version, commit, date)
		},
	})
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
