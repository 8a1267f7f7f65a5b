// Command postern-relay runs the cloud side of Postern (serve) and
// administers a running relay through its API (connections, api-keys).
// Flag parsing and wiring only; the behaviour lives in package relay.
package main

import "github.com/postern/postern/cmd/internal/rootcmd"

// Stamped by the build (see Makefile).
var (
	version = "dev"
	commit  = "none"
	date    = "unknown"
)

func main() {
	rootcmd.Run(rootcmd.New("postern-relay",
		"Postern relay: accepts agent tunnels and proxies the product's requests into customer networks",
		version, commit, date,
		newEventsCmd(), newProviderCmd(), newServeCmd(), newConnectionsCmd(), newAPIKeysCmd(), newNodesCmd(), newDiagCmd(), newHealthCmd()))
}
